"""The worker's consume loop: gather a micro-batch, apply it in one transaction, reply, ack.

Acknowledgement policy (the only place messages are acked, nacked or rejected):
- applied and committed → replies sent → ack (`multiple=True` for the whole batch);
- undecodable message → reject without requeue → dead-lettered (it can never succeed);
- database or connection trouble (transient) → wait with backoff → nack with requeue;
- anything else raised while applying → retry the batch one message at a time, so one poison
  message cannot take its neighbours down; the poison one is nacked and stops at the queue's
  delivery limit, where it is dead-lettered.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import aio_pika
import asyncpg
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage, AbstractRobustConnection

from ingest.broker import declare
from ingest.errors import DecodeError
from ingest.messages import (
    CONTENT_TYPE,
    REPLIES_MESSAGE_TYPE,
    Reply,
    TaskBatch,
    encode_replies,
)
from ingest.results import Result
from ingest.settings import Settings
from worker.upsert import BatchApplier, RetryBatch

log = logging.getLogger(__name__)

TRANSIENT_ERRORS = (
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.CannotConnectNowError,
    asyncpg.TooManyConnectionsError,
    asyncpg.QueryCanceledError,
    asyncpg.DeadlockDetectedError,
    asyncpg.SerializationError,
    asyncpg.AdminShutdownError,
    OSError,
    TimeoutError,
)
_RETRIES_IN_PLACE = 5


@dataclass(slots=True)
class _Delivery:
    message: AbstractIncomingMessage
    batch: TaskBatch


class Consumer:
    """Consumes task batches from the queue until `stop()` is called."""

    def __init__(
        self, settings: Settings, pool: asyncpg.Pool, connection: AbstractRobustConnection
    ) -> None:
        self._settings = settings
        self._pool = pool
        self._connection = connection
        self._applier = BatchApplier(settings.base_url)
        self._inbox: asyncio.Queue[AbstractIncomingMessage] = asyncio.Queue()
        self._stopping = asyncio.Event()
        self._backoff = 0.1
        self.batches = 0
        self.channel: AbstractChannel | None = None
        #: Set once the consumer is attached to the queue.
        self.consuming = asyncio.Event()

    def stop(self) -> None:
        """Finish the batch in hand, then return from `run`."""
        self._stopping.set()

    async def run(self) -> None:
        channel = await self._connection.channel()
        self.channel = channel
        try:
            await channel.set_qos(prefetch_count=self._settings.worker_prefetch)
            _, queue = await declare(channel, self._settings)
            tag = await queue.consume(self._receive)
            log.info("worker %d consuming %s", os.getpid(), queue.name)
            self.consuming.set()
            try:
                while not self._stopping.is_set():
                    self._beat()
                    messages = await self._gather()
                    if messages:
                        await self._handle(messages)
            finally:
                self.consuming.clear()
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(queue.cancel(tag), 5)
        finally:
            # Closing the channel requeues whatever was prefetched and not acked.
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(channel.close()), 5)

    def _beat(self) -> None:
        """Touch the health file: its age tells a healthcheck whether this consumer is alive."""
        if self._settings.health_file and self.channel is not None and not self.channel.is_closed:
            with contextlib.suppress(OSError):
                Path(self._settings.health_file).touch()

    async def _receive(self, message: AbstractIncomingMessage) -> None:
        self._inbox.put_nowait(message)

    async def _gather(self) -> list[AbstractIncomingMessage]:
        """The next micro-batch: wait for one message, then linger briefly for more."""
        stop = asyncio.ensure_future(self._stopping.wait())
        first = asyncio.ensure_future(self._inbox.get())
        try:
            await asyncio.wait({stop, first}, timeout=1.0, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
            if not first.done():
                first.cancel()
        if not first.done() or first.cancelled():
            return []
        messages = [first.result()]
        requests = _request_count(messages[0])
        deadline = asyncio.get_running_loop().time() + self._settings.worker_batch_linger
        while requests < self._settings.worker_batch_max:
            if self._inbox.empty():
                remaining = deadline - asyncio.get_running_loop().time()
                if remaining <= 0:
                    break
                try:
                    messages.append(await asyncio.wait_for(self._inbox.get(), remaining))
                except TimeoutError:
                    break
            else:
                messages.append(self._inbox.get_nowait())
            requests += _request_count(messages[-1])
        return messages

    async def _handle(self, messages: list[AbstractIncomingMessage]) -> None:
        deliveries: list[_Delivery] = []
        for message in messages:
            try:
                deliveries.append(_Delivery(message, TaskBatch.decode(message.body)))
            except DecodeError as exc:
                log.error("rejecting undecodable message %s: %s", message.message_id, exc)
                await message.reject(requeue=False)
        if not deliveries:
            return
        try:
            results = await self._apply_with_retries(deliveries)
        except TRANSIENT_ERRORS as exc:
            await self._requeue_later(deliveries, exc)
            return
        except Exception:
            if len(deliveries) == 1:
                log.exception(
                    "task batch %s failed; it will be redelivered", messages[0].message_id
                )
                await deliveries[0].message.nack(requeue=True)
                return
            log.exception(
                "a batch of %d messages failed; retrying them one by one", len(deliveries)
            )
            for delivery in deliveries:
                await self._handle([delivery.message])
            return
        self._backoff = 0.1
        self.batches += 1
        await self._reply(deliveries, results)
        await deliveries[-1].message.ack(multiple=True)

    async def _apply_with_retries(self, deliveries: list[_Delivery]) -> list[Result]:
        requests = [request for d in deliveries for request in d.batch.requests]
        for attempt in range(_RETRIES_IN_PLACE):
            try:
                async with self._pool.acquire(timeout=self._settings.database_timeout) as conn:
                    return await self._applier.apply(conn, requests)
            except (RetryBatch, asyncpg.DeadlockDetectedError, asyncpg.SerializationError):
                if attempt == _RETRIES_IN_PLACE - 1:
                    raise
                await asyncio.sleep(0.005 * (attempt + 1))
        raise AssertionError("unreachable")

    async def _requeue_later(self, deliveries: list[_Delivery], exc: BaseException) -> None:
        log.warning(
            "transient failure (%r); requeueing %d messages in %.1fs",
            exc,
            len(deliveries),
            self._backoff,
        )
        await asyncio.sleep(self._backoff)
        self._backoff = min(self._backoff * 2, 5.0)
        for delivery in deliveries:
            with contextlib.suppress(Exception):
                await delivery.message.nack(requeue=True)

    async def _reply(self, deliveries: list[_Delivery], results: list[Result]) -> None:
        """Wake the waiting edges; best effort, since every result is already committed."""
        by_edge: dict[str, list[Reply]] = defaultdict(list)
        position = 0
        for delivery in deliveries:
            count = len(delivery.batch.requests)
            if delivery.batch.reply_to:
                by_edge[delivery.batch.reply_to].extend(
                    Reply(r.request_id, r.http_status, r.body)
                    for r in results[position : position + count]
                )
            position += count
        assert self.channel is not None
        for reply_to, replies in by_edge.items():
            message = aio_pika.Message(
                encode_replies(replies), content_type=CONTENT_TYPE, type=REPLIES_MESSAGE_TYPE
            )
            try:
                await self.channel.default_exchange.publish(message, reply_to, mandatory=False)
            except Exception as exc:
                log.info("could not reply to %s: %r", reply_to, exc)


def _request_count(message: AbstractIncomingMessage) -> int:
    # The batch is decoded in `_handle`; for sizing, the publisher's header saves decoding twice.
    count = message.headers.get("x-requests") if message.headers else None
    return count if isinstance(count, int) and count > 0 else 1
