"""The edge's reply waiters: futures by request id, woken by workers after they commit.

A reply is only a wake-up. Results live in Postgres; a reply that never comes (worker crash,
reconnect, edge restart) costs the client a 202 and a status URL, never a result.
"""

from __future__ import annotations

import asyncio
import logging
import uuid

from aio_pika.abc import AbstractChannel, AbstractIncomingMessage, AbstractQueue

from ingest.errors import DecodeError
from ingest.messages import Reply, decode_replies

log = logging.getLogger(__name__)


class ReplyWaiters:
    """Waits for the replies of requests this edge published."""

    def __init__(self, queue_name: str) -> None:
        self.queue_name = queue_name
        # Several waiters can share an id: retries that carry one Idempotency-Key.
        self._waiting: dict[uuid.UUID, list[tuple[bytes, asyncio.Future[Reply]]]] = {}
        self.queue: AbstractQueue | None = None

    def expect(self, request_id: uuid.UUID, fingerprint: bytes) -> asyncio.Future[Reply]:
        """Register interest before publishing, so a fast reply cannot be missed."""
        future: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(request_id, []).append((fingerprint, future))
        return future

    def forget(self, request_id: uuid.UUID, future: asyncio.Future[Reply]) -> None:
        waiters = [w for w in self._waiting.get(request_id, []) if w[1] is not future]
        if waiters:
            self._waiting[request_id] = waiters
        else:
            self._waiting.pop(request_id, None)
        future.cancel()

    async def wait(
        self, request_id: uuid.UUID, future: asyncio.Future[Reply], budget: float
    ) -> Reply | None:
        """The reply, or None when it did not come within `budget` seconds."""
        try:
            return await asyncio.wait_for(asyncio.shield(future), budget) if budget > 0 else None
        except TimeoutError:
            return None
        except asyncio.CancelledError:
            if future.cancelled():  # the waiters closed (shutdown): the client gets a status URL
                return None
            raise
        finally:
            self.forget(request_id, future)

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        try:
            replies = decode_replies(message.body)
        except DecodeError as exc:
            log.warning("dropped an undecodable reply: %s", exc)
            return
        for reply in replies:
            waiters = self._waiting.get(reply.request_id)
            if not waiters:
                # The client already got its 202; the result is in Postgres.
                log.debug("reply for %s came after its waiter left", reply.request_id)
            for fingerprint, future in waiters or ():
                if not future.done() and _addressed_to(reply, fingerprint):
                    future.set_result(reply)

    async def attach(self, channel: AbstractChannel) -> None:
        """Declare this edge's reply queue on `channel` and consume it (on every new connection)."""
        queue = await channel.declare_queue(
            self.queue_name, exclusive=True, auto_delete=True, durable=False
        )
        await queue.consume(self._on_message, no_ack=True)
        self.queue = queue

    def detach(self) -> None:
        self.queue = None

    def close(self) -> None:
        """Release every waiter (their clients get 202 and a status URL)."""
        for waiters in self._waiting.values():
            for _, future in waiters:
                future.cancel()

    @property
    def attached(self) -> bool:
        return self.queue is not None and not self.queue.channel.is_closed


def _addressed_to(reply: Reply, fingerprint: bytes) -> bool:
    """Whether `reply` is for the waiter of a request with this fingerprint. Routing only: waiters
    that share an id (one Idempotency-Key) but not a body each get the answer to their own request
    (the worker applied `ingest.results.answer_to` before replying); a reply without a fingerprint
    is for every waiter of its id."""
    return not reply.fingerprint or reply.fingerprint == fingerprint
