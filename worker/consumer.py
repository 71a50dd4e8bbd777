"""The worker's consume loop: gather a micro-batch, settle it, reply, conclude.

Each micro-batch comes to a decision (worker.decisions): `Ack` once every request has a final
result committed and the waiting edges were replied to, `Retry` when the messages must go back to
the broker, `Reject` for a message that can never be decoded. `Consumer._conclude` is the only
place messages are acked, nacked or rejected:
- `Ack` → ack (`multiple=True` for a batch of fresh messages; one by one where redelivered ones
  are in it);
- `Retry` → nack with requeue: the broker redelivers;
- `Reject` → reject without requeue: dead-lettered.
How a batch is settled (retries in place, culprits, parts) is worker.settling's. A redelivered
message (a worker may have died on it) is settled after the fresh ones, alone, marked as
attempted while it is applied, those a worker died applying last, so a request that kills the
worker is caught (worker.culprits). A message reaches the queue's delivery limit only when a
killer cannot be caught in time (a delivery limit under 4), or when not even a verdict can be
stored; its unfinished requests are then dead-lettered one letter each (`_on_dead_letter`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections import Counter
from collections.abc import Awaitable, Sequence
from pathlib import Path

import asyncpg
from aio_pika.abc import (
    AbstractChannel,
    AbstractConnection,
    AbstractIncomingMessage,
    AbstractQueue,
)

from ingest import deadletters
from ingest.broker import BrokerLink, Topology, close_connection_with, ensure_topology
from ingest.errors import DecodeError
from ingest.messages import TaskBatch
from ingest.notices import ChangeListener, Notice
from ingest.results import Result
from ingest.settings import Settings
from worker.culprits import forget_attempts, message_key, request_key, unfinished_attempts
from worker.decisions import Ack, Decision, Reject, Retry
from worker.deliveries import Deliveries, Delivery, is_live
from worker.faults import FaultPoints
from worker.metrics import WorkerMetrics, serve_metrics
from worker.purger import purging
from worker.replies import send_replies
from worker.settling import Settler

log = logging.getLogger(__name__)

#: Seconds between two looks at the broker's ready count while `drain` waits for it to empty.
_DRAIN_POLL = 0.01


class Consumer:
    """Consumes task batches (and dead letters) until `stop()` is called."""

    def __init__(
        self, settings: Settings, pool: asyncpg.Pool, metrics: WorkerMetrics | None = None
    ) -> None:
        self._settings = settings
        self.metrics = metrics or WorkerMetrics()
        self._queue: AbstractQueue | None = None
        self._dead_queue: AbstractQueue | None = None
        self._last_sample = 0.0
        self._pool = pool
        self._faults = FaultPoints(settings.fault_points)
        self._stopping = asyncio.Event()
        self._settler = Settler(settings, pool, self.metrics, self._faults, self._stopping)
        self._deliveries = Deliveries(settings.worker_batch_max, settings.worker_batch_linger)
        self.batches = 0
        self.channel: AbstractChannel | None = None
        #: Set while the consumer is attached to the queue.
        self.consuming = asyncio.Event()

    def stop(self) -> None:
        """Finish the batch in hand, then return from `run`."""
        self._stopping.set()

    async def run(self) -> None:
        name = f"ingest-worker-{os.getpid()}"
        settings = self._settings
        async with (
            serve_metrics(
                settings.worker_metrics_host,
                settings.worker_metrics_port,
                self.metrics.registry,
                self.consuming.is_set,
            ),
            BrokerLink(settings, name, self._attach, self._detach),
            purging(settings, self._pool, self.metrics),
            ChangeListener(settings, "worker", self._heard, self._settler.workflows.clear),
        ):
            while not self._stopping.is_set():
                self._beat()
                await self._sample()
                messages = await self._deliveries.gather(self._stopping)
                if messages:
                    await self._handle(messages)
                    self.metrics.in_hand.release()
        log.info("worker %d stopped consuming", os.getpid())

    def _heard(self, notice: Notice) -> None:
        """A workflow changed (or was deleted): the next request of it reads it again."""
        if notice.topic == "workflow":
            self._settler.workflows.forget(notice.row_id)

    async def drain(self, timeout: float = 10.0) -> None:  # noqa: ASYNC109 (every wait has one)
        """Return once the task and dead-letter queues have no ready message and this consumer
        holds none: every message delivered so far concluded (a batch's results committed and its
        replies sent before its ack), and every message it rejected back as a recorded dead letter.
        A message the broker dead-letters at the delivery limit is not waited for until it reaches
        the dead-letter queue; a dead letter another worker consumes never comes back here (meant
        for one consumer on its queue, as in tests). Raises TimeoutError after `timeout` seconds.
        For tests and tools, like arq's burst mode, on a consumer that keeps running."""
        async with asyncio.timeout(timeout):
            while True:
                if await self._drained():
                    return
                # Only the broker's ready count is polled: what this consumer holds is an event.
                await asyncio.sleep(_DRAIN_POLL)

    async def _drained(self) -> bool:
        await self.consuming.wait()
        await self._deliveries.idle.wait()
        # Twice: a delivery the broker sent before it answered the first look has reached
        # `Deliveries.receive` by the second answer (the loop ran it while waiting for that).
        for _ in range(2):
            if await self._ready_messages() != 0 or not self._deliveries.idle.is_set():
                return False
        return True

    async def _ready_messages(self) -> int | None:
        """Messages ready in the task and dead-letter queues (None: the broker cannot say now)."""
        queues = (self._queue, self._dead_queue)
        try:
            counts = [(await q.declare(timeout=2)).message_count for q in queues if q is not None]
        except Exception:
            return None
        return sum(count or 0 for count in counts) if len(counts) == len(queues) else None

    async def _attach(self, connection: AbstractConnection) -> None:
        channel = await connection.channel()
        dead_channel = await connection.channel()
        for each in (channel, dead_channel):
            close_connection_with(each, connection)
        await channel.set_qos(prefetch_count=self._settings.worker_prefetch)
        await dead_channel.set_qos(prefetch_count=16)
        await ensure_topology(connection, self._settings)
        names = Topology.from_settings(self._settings)
        queue = await channel.get_queue(names.queue, ensure=True)
        dead_queue = await dead_channel.get_queue(names.dead_queue, ensure=True)
        await queue.consume(self._deliveries.receive)
        await dead_queue.consume(self._on_dead_letter)
        self.channel, self._queue, self._dead_queue = channel, queue, dead_queue
        self.consuming.set()
        self.metrics.consuming.set(1)
        log.info("worker %d consuming %s", os.getpid(), queue.name)

    def _detach(self) -> None:
        self.consuming.clear()
        self.metrics.consuming.set(0)
        self.channel = self._queue = self._dead_queue = None
        # What was prefetched on the lost channel is redelivered by the broker; drop our copies.
        self._deliveries.drop_buffered()

    def _beat(self) -> None:
        """Touch the health file: its age tells a healthcheck whether this consumer is alive."""
        if self._settings.health_file and self.consuming.is_set():
            with contextlib.suppress(OSError):
                Path(self._settings.health_file).touch()

    async def _sample(self) -> None:
        """Refresh the gauges every few seconds (queue depth costs a broker round trip)."""
        now = asyncio.get_running_loop().time()
        if now - self._last_sample < 5:
            return
        self._last_sample = now
        self.metrics.pool_size.set(self._pool.get_size())
        self.metrics.pool_idle.set(self._pool.get_idle_size())
        queue = self._queue
        if queue is not None:
            with contextlib.suppress(Exception):
                declared = await asyncio.wait_for(queue.declare(), 2)
                self.metrics.queue_depth.set(declared.message_count or 0)

    async def _handle(self, messages: list[AbstractIncomingMessage]) -> None:
        live: list[AbstractIncomingMessage] = []
        lost: list[AbstractIncomingMessage] = []
        for message in messages:
            (live if is_live(message) else lost).append(message)
        # A delivery of a closed channel cannot be acked; the broker redelivers it.
        await self._conclude(lost, Retry("its channel closed"))
        deliveries = await self._decode(live)
        self.metrics.in_hand.hold(r.received_at for d in deliveries for r in d.batch.requests)
        fresh = [d for d in deliveries if not d.earlier]
        again = [d for d in deliveries if d.earlier]
        if not again:
            if fresh:
                await self._settle(fresh, one_by_one=False)
            return
        # A worker may have died holding the redelivered messages. Settle the others first, then
        # each redelivered one alone, marked as attempted while it is applied, those a worker
        # died applying last: the messages beside one that kills the worker are settled and
        # acked before it can strike again, so only it nears the delivery limit.
        if fresh and not await self._settle(fresh, one_by_one=True):
            await self._conclude([d.message for d in again], Retry("settled after the others"))
            return
        again = await self._least_deadly_first(again)
        for index, delivery in enumerate(again):
            if self._stopping.is_set():
                unsettled = again[index:]
            elif not await self._settle_marked(delivery):  # it went back to the broker
                unsettled = again[index + 1 :]
            else:
                continue
            await self._conclude([d.message for d in unsettled], Retry("settled after it"))
            return

    async def _least_deadly_first(self, deliveries: list[Delivery]) -> list[Delivery]:
        """Redelivered messages, those that workers died applying last."""
        keys = [d.attempt_key for d in deliveries]
        nothing: dict[str, int] = {}
        died_on = await self._settler.optional_marks(
            lambda conn: unfinished_attempts(conn, keys), nothing
        )
        return sorted(deliveries, key=lambda d: died_on.get(d.attempt_key, 0))

    async def _settle_marked(self, delivery: Delivery) -> bool:
        """Settle a redelivered message alone, marked as attempted while it is applied; False
        when it went back to the broker."""
        key = delivery.attempt_key
        await self._settler.mark(key)
        if not await self._settle([delivery], one_by_one=True):
            return False
        await self._settler.optional_marks(lambda conn: forget_attempts(conn, [key]), None)
        return True

    async def _settle(self, deliveries: list[Delivery], one_by_one: bool) -> bool:
        """Settle, reply, conclude; True when the deliveries were acked."""
        decision: Decision
        try:
            decision = await self._settler.settle(deliveries)
        except Retry as retry:
            decision = retry
        if isinstance(decision, Ack):
            self.batches += 1
            self._observe(decision.results)
            self._faults.maybe_exit("exit-after-commit")
            await send_replies(self.channel, deliveries, decision.results)
        await self._conclude([d.message for d in deliveries], decision, one_by_one)
        return isinstance(decision, Ack)

    async def _conclude(
        self,
        messages: Sequence[AbstractIncomingMessage],
        decision: Decision,
        one_by_one: bool = True,
    ) -> None:
        """The one place messages are acked, nacked or rejected. A lost ack or nack means a
        redelivery, which is harmless; so each is best effort. `one_by_one`: an ack with
        `multiple` would also ack deliveries settled apart from these."""
        try:
            match decision:
                case Ack() if not one_by_one and messages:
                    await _quietly(messages[-1].ack(multiple=True))
                case Ack():
                    for message in messages:
                        await _quietly(message.ack())
                case Retry():
                    for message in messages:
                        await _quietly(message.nack(requeue=True))
                case Reject():
                    for message in messages:
                        # Expected before the reject: its dead letter can come back at once.
                        self._deliveries.expect_dead_letter(message)
                        if not await _quietly(message.reject(requeue=False)):
                            self._deliveries.stop_expecting_dead_letter(message)
        finally:
            self._deliveries.release(len(messages))

    def _observe(self, results: list[Result]) -> None:
        self.metrics.batch.observe(len(results))
        now = time.time()
        for outcome, count in Counter(result.outcome for result in results).items():
            self.metrics.outcomes.labels(outcome.value).inc(count)  # one look-up per outcome
        end_to_end = self.metrics.end_to_end
        for result in results:
            if result.received_at:
                end_to_end.observe(max(0.0, now - result.received_at))

    async def _decode(self, messages: list[AbstractIncomingMessage]) -> list[Delivery]:
        """The messages' batches; a message that cannot be decoded is rejected."""
        deliveries: list[Delivery] = []
        for message in messages:
            try:
                deliveries.append(Delivery(message, TaskBatch.decode(message.body)))
            except DecodeError as exc:
                log.error("rejecting undecodable message %s: %s", message.message_id, exc)
                await self._conclude([message], Reject(str(exc)))
        return deliveries

    async def _on_dead_letter(self, message: AbstractIncomingMessage) -> None:
        """Record the unfinished requests of a dead-lettered message and mark them failed; ack
        after commit."""
        self._deliveries.hold()
        self._deliveries.stop_expecting_dead_letter(message)
        await self._conclude([message], await self._record_dead_letter(message))

    async def _record_dead_letter(self, message: AbstractIncomingMessage) -> Ack | Retry:
        reason = deadletters.death_reason(message.headers)
        try:
            async with self._pool.acquire(timeout=self._settings.database_timeout) as conn:
                letters = await deadletters.record(conn, message.message_id, message.body, reason)
        except Exception as exc:
            log.warning("could not record dead letter %s (%r); retrying", message.message_id, exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), 1.0)
            return Retry("the dead letter could not be recorded")
        log.error(
            "message %s was dead-lettered (%s); kept as dead letters %s",
            message.message_id,
            reason,
            letters,
        )
        self.metrics.dead_letters.inc(len(letters))
        keys = _attempt_keys_of(message)
        await self._settler.optional_marks(lambda conn: forget_attempts(conn, keys), None)
        return Ack()


async def _quietly(settling: Awaitable[None]) -> bool:
    """Tell the broker; False when that failed (the channel is gone: the broker redelivers)."""
    try:
        await settling
    except Exception:
        return False
    return True


def _attempt_keys_of(message: AbstractIncomingMessage) -> list[str]:
    """Every attempt mark a dead-lettered message may have left: its own and its requests'."""
    try:
        batch = TaskBatch.decode(message.body)
    except DecodeError:
        return [message_key(message.message_id)] if message.message_id else []
    delivery = Delivery(message, batch)
    return [delivery.attempt_key, *(request_key(r.id) for r in batch.requests)]
