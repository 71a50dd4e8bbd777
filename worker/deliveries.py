"""A worker's deliveries, from the broker's push to their conclusion.

The broker pushes messages (up to the prefetch) into a buffer; the consume loop gathers
micro-batches from it. Every message is counted from its arrival until the consumer concludes it
(ack, nack or reject, `worker.decisions`) or drops it with its channel, and a message it rejects
until its dead letter comes back to it, so `idle` tells when this worker holds nothing and
expects nothing (`Consumer.drain` waits on it).
"""

from __future__ import annotations

import asyncio
import hashlib
from collections import Counter
from dataclasses import dataclass

from aio_pika.abc import AbstractIncomingMessage

from ingest.messages import TaskBatch
from worker.culprits import message_key

#: Seconds a worker waits for more messages once it received a redelivered one.
_REDELIVERY_LINGER = 0.1


@dataclass(slots=True)
class Delivery:
    """A decoded message."""

    message: AbstractIncomingMessage
    batch: TaskBatch

    @property
    def earlier(self) -> int:
        """How often the broker delivered this message before."""
        return earlier_deliveries(self.message)

    @property
    def attempt_key(self) -> str:
        """Its attempt mark while a worker applies it (see worker.culprits)."""
        return message_key(self.message.message_id or self.batch.requests[0].id.hex)


def earlier_deliveries(message: AbstractIncomingMessage) -> int:
    """How often the broker delivered this message before (quorum queues count it)."""
    count = message.headers.get("x-delivery-count") if message.headers else None
    if isinstance(count, int) and count >= 0:
        return count
    return 1 if message.redelivered else 0


def is_live(message: AbstractIncomingMessage) -> bool:
    """A delivery from a channel that has since closed can no longer be acked: it is redelivered."""
    try:
        return not message.channel.is_closed
    except Exception:
        return False


def _digest(message: AbstractIncomingMessage) -> bytes:
    return hashlib.blake2b(message.body, digest_size=16).digest()


def _request_count(message: AbstractIncomingMessage) -> int:
    # The batch is decoded later; for sizing, the publisher's header saves decoding twice.
    count = message.headers.get("x-requests") if message.headers else None
    return count if isinstance(count, int) and count > 0 else 1


class Deliveries:
    """The messages this worker holds: buffered, gathered, or being settled."""

    def __init__(self, batch_max: int, linger: float) -> None:
        self._batch_max = batch_max
        self._linger = linger
        self._buffer: asyncio.Queue[AbstractIncomingMessage] = asyncio.Queue()
        self._held = 0
        #: Messages this worker rejected whose dead letters have not come back yet, by digest.
        self._dead_letters_due: Counter[bytes] = Counter()
        #: Set while this worker holds no message and expects no dead letter.
        self.idle = asyncio.Event()
        self.idle.set()

    async def receive(self, message: AbstractIncomingMessage) -> None:
        """The consume callback of the task queue."""
        self.hold()
        self._buffer.put_nowait(message)

    def hold(self, count: int = 1) -> None:
        """Count messages the worker took (the buffer's, and dead letters handled on arrival)."""
        self._held += count
        self._update_idle()

    def release(self, count: int) -> None:
        """Messages concluded (acked, nacked, rejected) or dropped with their channel."""
        self._held = max(0, self._held - count)
        self._update_idle()

    def expect_dead_letter(self, message: AbstractIncomingMessage) -> None:
        """`message` is being rejected: the broker dead-letters it, and it comes back to this
        worker's dead-letter consumer."""
        self._dead_letters_due[_digest(message)] += 1
        self._update_idle()

    def stop_expecting_dead_letter(self, message: AbstractIncomingMessage) -> None:
        """The dead letter of `message` came back (or its reject was lost: it is redelivered)."""
        digest = _digest(message)
        if self._dead_letters_due[digest] > 1:
            self._dead_letters_due[digest] -= 1
        else:
            self._dead_letters_due.pop(digest, None)
        self._update_idle()

    def _update_idle(self) -> None:
        if self._held or self._dead_letters_due:
            self.idle.clear()
        else:
            self.idle.set()

    def drop_buffered(self) -> None:
        """Forget what is buffered: its channel is lost, and the broker redelivers it."""
        dropped = 0
        while not self._buffer.empty():
            self._buffer.get_nowait()
            dropped += 1
        self.release(dropped)

    async def gather(self, stopping: asyncio.Event) -> list[AbstractIncomingMessage]:
        """The next micro-batch: wait (a second at most) for one message, then linger briefly
        for more, up to `batch_max` requests."""
        first = await self._first(stopping)
        if first is None:
            return []
        messages = [first]
        requests = _request_count(first)
        linger = self._linger
        if first.redelivered:
            # After a worker died, gather the burst the broker sends back, so that the messages
            # beside the one it may have died on are settled first (see `Consumer._handle`).
            linger = max(linger, _REDELIVERY_LINGER)
        deadline = asyncio.get_running_loop().time() + linger
        while requests < self._batch_max:
            message = await self._next_before(deadline)
            if message is None:
                break
            messages.append(message)
            requests += _request_count(message)
        return messages

    async def _first(self, stopping: asyncio.Event) -> AbstractIncomingMessage | None:
        stop = asyncio.ensure_future(stopping.wait())
        first = asyncio.ensure_future(self._buffer.get())
        try:
            await asyncio.wait({stop, first}, timeout=1.0, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
            if not first.done():
                first.cancel()
        if not first.done() or first.cancelled():
            return None
        return first.result()

    async def _next_before(self, deadline: float) -> AbstractIncomingMessage | None:
        if not self._buffer.empty():
            return self._buffer.get_nowait()
        remaining = deadline - asyncio.get_running_loop().time()
        if remaining <= 0:
            return None
        try:
            return await asyncio.wait_for(self._buffer.get(), remaining)
        except TimeoutError:
            return None
