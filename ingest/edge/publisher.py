"""The edge's confirmed, coalescing publisher of task requests."""

from __future__ import annotations

import asyncio
import collections
import logging
from dataclasses import dataclass

import aio_pika
import aiormq
from aio_pika.abc import AbstractChannel, AbstractExchange, DeliveryMode

from ingest.broker import Topology
from ingest.edge.metrics import EdgeMetrics
from ingest.errors import Backlogged, PublishFailed
from ingest.messages import CONTENT_TYPE, TASKS_MESSAGE_TYPE, Operation, TaskBatch, TaskRequest
from ingest.settings import Settings

log = logging.getLogger(__name__)


@dataclass(slots=True)
class _Pending:
    request: TaskRequest
    size: int
    confirmed: asyncio.Future[None]


def _fail(batch: list[_Pending], failure: PublishFailed) -> None:
    for pending in batch:
        if not pending.confirmed.done():
            pending.confirmed.set_exception(failure)


def _alone(pending: _Pending) -> bool:
    return pending.request.operation is Operation.BATCH


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
        # A batch import travels alone: one message per batch, and a worker of an older version,
        # which cannot read one, dead-letters that message without taking other requests along.
        while (
            len(batch) < limit
            and size < byte_limit
            and backlog
            and not _alone(batch[0])
            and not _alone(backlog[0])
        ):
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
