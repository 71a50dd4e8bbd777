"""RabbitMQ: the topology, connections, and the edge's confirmed, coalescing publisher.

Task requests go to a direct exchange bound to one durable quorum queue. The queue has a delivery
limit (poison stops there and is dead-lettered, at-least-once) and a max length that rejects
publishes when full, which the edge turns into 503 with Retry-After.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aio_pika
import aiormq
from aio_pika.abc import (
    AbstractChannel,
    AbstractExchange,
    AbstractQueue,
    AbstractRobustConnection,
    DeliveryMode,
)

from ingest.errors import Backlogged, PublishFailed
from ingest.messages import CONTENT_TYPE, TASKS_MESSAGE_TYPE, TaskBatch, TaskRequest
from ingest.settings import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Topology:
    """Names of everything declared on the broker for one deployment."""

    exchange: str
    queue: str
    dead_exchange: str
    dead_queue: str

    @classmethod
    def from_settings(cls, settings: Settings) -> Topology:
        return cls(
            exchange=settings.queue,
            queue=settings.queue,
            dead_exchange=f"{settings.queue}.dead",
            dead_queue=settings.dead_letter_queue,
        )


async def declare(
    channel: AbstractChannel, settings: Settings
) -> tuple[AbstractExchange, AbstractQueue]:
    """Declare the task exchange and queue (and the dead-letter pair); idempotent."""
    names = Topology.from_settings(settings)
    dead_exchange = await channel.declare_exchange(
        names.dead_exchange, aio_pika.ExchangeType.FANOUT, durable=True
    )
    dead_queue = await channel.declare_queue(
        names.dead_queue, durable=True, arguments={"x-queue-type": "quorum"}
    )
    await dead_queue.bind(dead_exchange)
    exchange = await channel.declare_exchange(
        names.exchange, aio_pika.ExchangeType.DIRECT, durable=True
    )
    queue = await channel.declare_queue(
        names.queue,
        durable=True,
        arguments={
            "x-queue-type": "quorum",
            "x-delivery-limit": settings.delivery_limit,
            "x-dead-letter-exchange": names.dead_exchange,
            "x-dead-letter-strategy": "at-least-once",
            "x-overflow": "reject-publish",
            "x-max-length": settings.queue_max_length,
        },
    )
    await queue.bind(exchange, routing_key=names.queue)
    return exchange, queue


@contextlib.asynccontextmanager
async def connect(settings: Settings, name: str) -> AsyncIterator[AbstractRobustConnection]:
    """A robust connection owned by the caller's context."""
    connection = await aio_pika.connect_robust(
        settings.amqp_url,
        heartbeat=settings.amqp_heartbeat,
        client_properties={"connection_name": name},
        timeout=settings.publish_timeout,
    )
    try:
        yield connection
    finally:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(asyncio.shield(connection.close()), settings.shutdown_timeout)


@dataclass(slots=True)
class _Pending:
    request: TaskRequest
    size: int
    confirmed: asyncio.Future[None]


class Publisher:
    """Publishes task requests with group commit.

    Requests that arrive while publishes are in flight are coalesced into one broker message
    (bounded by count and bytes); a request that arrives on an idle publisher goes out at once.
    One publisher confirm acknowledges every request the message carries; a nack, return, timeout
    or closed channel fails exactly those requests.
    """

    def __init__(
        self,
        channel: AbstractChannel,
        exchange: AbstractExchange,
        settings: Settings,
        reply_to: str | None,
    ) -> None:
        self._channel = channel
        self._exchange = exchange
        self._settings = settings
        self._routing_key = Topology.from_settings(settings).queue
        self._reply_to = reply_to
        self._backlog: asyncio.Queue[_Pending] = asyncio.Queue(maxsize=settings.publish_backlog)
        self._loops: list[asyncio.Task[None]] = []

    async def __aenter__(self) -> Publisher:
        self._loops = [
            asyncio.create_task(self._publish_forever(), name=f"publisher-{n}")
            for n in range(self._settings.publish_concurrency)
        ]
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        for loop in self._loops:
            loop.cancel()
        await asyncio.gather(*self._loops, return_exceptions=True)
        while not self._backlog.empty():
            pending = self._backlog.get_nowait()
            if not pending.confirmed.done():
                pending.confirmed.set_exception(PublishFailed("the edge is shutting down"))

    async def publish(self, request: TaskRequest) -> None:
        """Return once the broker confirmed the request; raise `Unavailable` otherwise."""
        confirmed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        try:
            self._backlog.put_nowait(_Pending(request, len(request.body), confirmed))
        except asyncio.QueueFull:
            raise Backlogged(
                "too many requests are waiting to be published", retry_after=1
            ) from None
        await confirmed

    async def _publish_forever(self) -> None:
        while True:
            batch = await self._next_batch()
            try:
                await self._send(batch)
            except Exception as exc:
                log.warning("publish of %d task requests failed: %r", len(batch), exc)
                failure = PublishFailed(
                    f"the broker did not confirm the request ({type(exc).__name__})"
                )
                for pending in batch:
                    if not pending.confirmed.done():
                        pending.confirmed.set_exception(failure)
            else:
                for pending in batch:
                    if not pending.confirmed.done():
                        pending.confirmed.set_result(None)

    async def _next_batch(self) -> list[_Pending]:
        batch = [await self._backlog.get()]
        size = batch[0].size
        limit, byte_limit = self._settings.publish_batch_max, self._settings.publish_batch_bytes
        # The byte bound is soft: a message may pass it by one body (itself within the body limit).
        while len(batch) < limit and size < byte_limit and not self._backlog.empty():
            batch.append(self._backlog.get_nowait())
            size += batch[-1].size
        return batch

    async def _send(self, batch: list[_Pending]) -> None:
        if self._channel.is_closed:
            raise aiormq.exceptions.ChannelInvalidStateError("channel is closed")
        payload = TaskBatch(tuple(p.request for p in batch), self._reply_to).encode()
        message = aio_pika.Message(
            payload,
            content_type=CONTENT_TYPE,
            delivery_mode=DeliveryMode.PERSISTENT,
            message_id=batch[0].request.id.hex,
            type=TASKS_MESSAGE_TYPE,
            headers={"x-requests": len(batch)},
        )
        await self._exchange.publish(
            message,
            routing_key=self._routing_key,
            mandatory=True,
            timeout=self._settings.publish_timeout,
        )
