"""RabbitMQ: the topology, connections, and the edge's confirmed, coalescing publisher.

Task requests go to a direct exchange bound to one durable quorum queue. The queue has a delivery
limit (poison stops there and is dead-lettered, at-least-once) and a max length that rejects
publishes when full, which the edge turns into 503 with Retry-After.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aio_pika
import aiormq
from aio_pika.abc import (
    AbstractChannel,
    AbstractConnection,
    AbstractExchange,
    DeliveryMode,
)

from ingest.errors import Backlogged, PublishFailed
from ingest.messages import CONTENT_TYPE, TASKS_MESSAGE_TYPE, TaskBatch, TaskRequest
from ingest.metrics import EdgeMetrics
from ingest.settings import Settings

log = logging.getLogger(__name__)

_INITIAL_BACKOFF = 0.2
_MAX_BACKOFF = 5.0


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


def task_queue_arguments(settings: Settings) -> dict[str, Any]:
    names = Topology.from_settings(settings)
    return {
        "x-queue-type": "quorum",
        "x-delivery-limit": settings.delivery_limit,
        "x-dead-letter-exchange": names.dead_exchange,
        "x-dead-letter-strategy": "at-least-once",
        "x-overflow": "reject-publish",
        "x-max-length": settings.queue_max_length,
    }


async def ensure_topology(connection: AbstractConnection, settings: Settings) -> None:
    """Declare the task exchange and queue and the dead-letter pair; idempotent.

    Queue arguments cannot change once a queue exists. When the existing queue was declared with
    other ones (a changed INGEST_DELIVERY_LIMIT, say) it is used as it is, with a warning: better
    a running service than one that refuses to start; a policy or a new queue name changes them.
    """
    names = Topology.from_settings(settings)
    channel = await connection.channel(publisher_confirms=False)
    try:
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
        try:
            queue = await channel.declare_queue(
                names.queue, durable=True, arguments=task_queue_arguments(settings)
            )
        except aiormq.exceptions.ChannelPreconditionFailed as exc:
            log.warning(
                "queue %s exists with other arguments; using it as it is: %s", names.queue, exc
            )
            channel = await connection.channel(publisher_confirms=False)
            queue = await channel.get_queue(names.queue, ensure=True)
            exchange = await channel.get_exchange(names.exchange, ensure=True)
        await queue.bind(exchange, routing_key=names.queue)
    finally:
        if not channel.is_closed:
            await channel.close()


Setup = Callable[[AbstractConnection], Awaitable[None]]
Teardown = Callable[[], None]


class BrokerLink:
    """An AMQP connection that comes back after the broker or the network went away.

    aio-pika's robust connection restores channels but is known to come back with no consumers; so
    this link owns the reconnect loop and runs `setup` from scratch on every new connection (open
    channels, declare, consume). `teardown` runs when a connection is lost, before the next one.
    A channel closed by the broker closes the whole connection, so setup always starts clean.
    """

    def __init__(self, settings: Settings, name: str, setup: Setup, teardown: Teardown) -> None:
        self._settings = settings
        self._name = name
        self._setup = setup
        self._teardown = teardown
        self._task: asyncio.Task[None] | None = None
        self._connection: AbstractConnection | None = None
        self.connected = asyncio.Event()
        self.connects = 0

    async def __aenter__(self) -> BrokerLink:
        self._task = asyncio.create_task(self._run(), name=f"broker-link-{self._name}")
        # Start serving even when the broker is down: requests get 503 until it is back.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.connected.wait(), self._settings.publish_timeout)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._close_current()

    async def _run(self) -> None:
        backoff = _INITIAL_BACKOFF
        while True:
            lost = asyncio.Event()
            try:
                await self._connect(lost)
                backoff = _INITIAL_BACKOFF
                await lost.wait()
                log.warning("broker connection %s lost; reconnecting", self._name)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning(
                    "broker connection %s failed: %r; retry in %.1fs", self._name, exc, backoff
                )
            finally:
                self.connected.clear()
                self._teardown()
            await self._close_current()
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, _MAX_BACKOFF)

    async def _connect(self, lost: asyncio.Event) -> None:
        connection = await aio_pika.connect(
            self._settings.amqp_url,
            heartbeat=self._settings.amqp_heartbeat,
            client_properties={"connection_name": self._name},
            timeout=self._settings.publish_timeout,
        )
        self._connection = connection
        connection.close_callbacks.add(lambda *_: lost.set())
        await asyncio.wait_for(self._setup(connection), self._settings.publish_timeout * 2)
        self.connects += 1
        self.connected.set()

    async def _close_current(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None and not connection.is_closed:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(connection.close()), 5)


def close_connection_with(channel: AbstractChannel, connection: AbstractConnection) -> None:
    """When `channel` closes (a broker error, say), close its connection so the link reconnects."""

    def close_connection(*_: object) -> None:
        if not connection.is_closed:
            asyncio.get_running_loop().create_task(connection.close())

    channel.close_callbacks.add(close_connection)


@dataclass(slots=True)
class _Pending:
    request: TaskRequest
    size: int
    confirmed: asyncio.Future[None]


def _fail(batch: list[_Pending], failure: PublishFailed) -> None:
    for pending in batch:
        if not pending.confirmed.done():
            pending.confirmed.set_exception(failure)


class Publisher:
    """Publishes task requests with group commit.

    Requests wait in a backlog and leave together, one broker message carrying all that wait
    (bounded by count and bytes); one publisher confirm acknowledges every request the message
    carries; a nack, return, timeout or closed channel fails exactly those requests.

    A request that finds the publisher idle goes out at once. While messages are in flight, the
    next one waits for company: it leaves when one of them is confirmed, or when enough requests
    wait to fill a quarter of a message (`publish_concurrency` messages at most). So messages
    grow with load, and with them what the broker and the workers pay per message is shared by
    more requests, while a lone request is never held back.
    """

    def __init__(self, settings: Settings, reply_to: str | None, metrics: EdgeMetrics) -> None:
        self._metrics = metrics
        self._channel: AbstractChannel | None = None
        self._exchange: AbstractExchange | None = None
        self._settings = settings
        self._routing_key = Topology.from_settings(settings).queue
        self._reply_to = reply_to
        self._backlog: collections.deque[_Pending] = collections.deque()
        self._backlog_bytes = 0
        self._fill = max(1, settings.publish_batch_max // 4)
        self._fill_bytes = max(1, settings.publish_batch_bytes // 4)
        self._in_flight = 0
        #: Set when the backlog may be worth a message: something waits and nothing is in flight,
        #: or a quarter of a message waits.
        self._sendable = asyncio.Event()
        self._loops: list[asyncio.Task[None]] = []
        self._loop: asyncio.AbstractEventLoop | None = None

    async def __aenter__(self) -> Publisher:
        self._loop = asyncio.get_running_loop()
        self._loops = [
            asyncio.create_task(self._publish_forever(), name=f"publisher-{n}")
            for n in range(self._settings.publish_concurrency)
        ]
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        for loop in self._loops:
            loop.cancel()
        await asyncio.gather(*self._loops, return_exceptions=True)
        _fail(list(self._backlog), PublishFailed("the edge is shutting down"))
        self._backlog.clear()

    def attach(self, channel: AbstractChannel, exchange: AbstractExchange) -> None:
        """Publish on this channel from now on (called on every new broker connection)."""
        self._channel, self._exchange = channel, exchange

    def detach(self) -> None:
        self._channel = self._exchange = None

    @property
    def attached(self) -> bool:
        return self._channel is not None and not self._channel.is_closed

    async def publish(self, request: TaskRequest) -> None:
        """Return once the broker confirmed the request; raise `Unavailable` otherwise."""
        if self._loop is None or not self.attached:
            raise PublishFailed("the broker is unavailable", retry_after=2)
        if len(self._backlog) >= self._settings.publish_backlog:
            raise Backlogged("too many requests are waiting to be published", retry_after=1)
        confirmed: asyncio.Future[None] = self._loop.create_future()
        size = len(request.body)
        self._backlog.append(_Pending(request, size, confirmed))
        self._backlog_bytes += size
        if self._worth_a_message():
            self._sendable.set()
        await confirmed

    def _worth_a_message(self) -> bool:
        if not self._backlog:
            return False
        if not self._in_flight:
            return True
        return len(self._backlog) >= self._fill or self._backlog_bytes >= self._fill_bytes

    async def _publish_forever(self) -> None:
        while True:
            while not self._worth_a_message():
                self._sendable.clear()
                await self._sendable.wait()
            batch = self._next_batch()
            self._in_flight += 1
            try:
                await self._settle(batch)
            finally:
                self._in_flight -= 1
                if self._worth_a_message():  # a confirm: what waits for company may go now
                    self._sendable.set()

    def _next_batch(self) -> list[_Pending]:
        backlog, batch = self._backlog, [self._backlog.popleft()]
        size = batch[0].size
        limit, byte_limit = self._settings.publish_batch_max, self._settings.publish_batch_bytes
        # The byte bound is soft: a message may pass it by one body (itself within the body limit).
        while len(batch) < limit and size < byte_limit and backlog:
            batch.append(backlog.popleft())
            size += batch[-1].size
        self._backlog_bytes -= size
        self._metrics.backlog.set(len(backlog))
        self._metrics.publish_batch.observe(len(batch))
        return batch

    async def _settle(self, batch: list[_Pending]) -> None:
        """Send `batch`, then tell each of its requests how that went."""
        try:
            await self._send(batch)
        except Exception as exc:
            self._metrics.publish_failures.labels(type(exc).__name__).inc()
            log.warning("publish of %d task requests failed: %r", len(batch), exc)
            _fail(
                batch,
                PublishFailed(f"the broker did not confirm the request ({type(exc).__name__})"),
            )
        except BaseException:  # cancelled: the edge is stopping, and no request may wait for ever
            _fail(batch, PublishFailed("the edge is shutting down"))
            raise
        else:
            self._metrics.confirms.inc()
            for pending in batch:
                if not pending.confirmed.done():
                    pending.confirmed.set_result(None)

    async def _send(self, batch: list[_Pending]) -> None:
        exchange = self._exchange
        if exchange is None or not self.attached:
            raise aiormq.exceptions.ChannelInvalidStateError("not connected to the broker")
        payload = TaskBatch(tuple(p.request for p in batch), self._reply_to).encode()
        message = aio_pika.Message(
            payload,
            content_type=CONTENT_TYPE,
            delivery_mode=DeliveryMode.PERSISTENT,
            message_id=batch[0].request.id.hex,
            type=TASKS_MESSAGE_TYPE,
            headers={"x-requests": len(batch)},
        )
        await exchange.publish(
            message,
            routing_key=self._routing_key,
            mandatory=True,
            timeout=self._settings.publish_timeout,
        )
