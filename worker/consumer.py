"""The worker's consume loop: gather a micro-batch, apply it in one transaction, reply, ack.

Acknowledgement policy (the only place messages are acked, nacked or rejected):
- every request of the batch has a final result committed → replies sent → ack
  (`multiple=True` for a batch of fresh messages; one by one where redelivered ones are in it);
- undecodable message → reject without requeue → dead-lettered (it can never succeed);
- database or connection trouble, and races lost again and again (no request's fault) → keep
  the messages and retry with backoff in place, so an outage never spends the queue's delivery
  limit and never becomes a 4xx;
- anything else raised while applying is some request's fault: the requests that fail alone are
  found by bisection over dry runs (worker.culprits) and each gets its own final result (a 422
  for a value Postgres refuses; otherwise it is dead-lettered alone with its own 500); the rest
  of the batch commits on the next try;
- a redelivered message (a worker may have died on it) is settled after the fresh ones, alone,
  in ever smaller parts, so a request that kills the worker is caught (worker.culprits);
- stopping, or a lost channel → nack what is not settled; the broker redelivers it.
A message reaches the queue's delivery limit only when a killer cannot be caught in time (a
delivery limit under 4), or when not even a verdict can be stored; its unfinished requests are
then dead-lettered one letter each.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import aio_pika
import asyncpg
from aio_pika.abc import (
    AbstractChannel,
    AbstractConnection,
    AbstractIncomingMessage,
    AbstractQueue,
)

from ingest import deadletters
from ingest.broker import BrokerLink, Topology, close_connection_with, ensure_topology
from ingest.errors import DecodeError, ValueRefused
from ingest.messages import (
    CONTENT_TYPE,
    REPLIES_MESSAGE_TYPE,
    Reply,
    TaskBatch,
    TaskRequest,
    encode_replies,
)
from ingest.results import Result
from ingest.settings import Settings
from ingest.store import DATABASE_UNAVAILABLE, ENCODING_REFUSED, Connection
from worker.culprits import (
    DEATHS_TO_CONVICT,
    Verdict,
    WorkerKilled,
    commit_parts,
    find_culprits,
    forget_attempts,
    mark_attempt,
    message_key,
    request_key,
    unfinished_attempts,
    verdict,
)
from worker.faults import FaultPoints
from worker.metrics import WorkerMetrics, serve_metrics
from worker.upsert import BatchApplier, RetryBatch

log = logging.getLogger(__name__)
T = TypeVar("T")

_RACES = (RetryBatch, asyncpg.TransactionRollbackError)
#: Failures that are no request's fault: retried in place, batch and all.
_RETRIED = (*DATABASE_UNAVAILABLE, *_RACES)
#: Seconds a worker waits for more messages once it received a redelivered one.
_REDELIVERY_LINGER = 0.1
_RETRIES_IN_PLACE = 5
_MAX_BACKOFF = 5.0


@dataclass(slots=True)
class _Delivery:
    message: AbstractIncomingMessage
    batch: TaskBatch


def _live(message: AbstractIncomingMessage) -> bool:
    """A delivery from a channel that has since closed can no longer be acked: it is redelivered."""
    try:
        return not message.channel.is_closed
    except Exception:
        return False


class _RolledBack(Exception):
    """Raised to roll a dry run back."""


class _Abandoned(Exception):
    """Raised when the worker stops, or loses its channel, between two parts of a batch."""


class Consumer:
    """Consumes task batches (and dead letters) until `stop()` is called."""

    def __init__(
        self, settings: Settings, pool: asyncpg.Pool, metrics: WorkerMetrics | None = None
    ) -> None:
        self._settings = settings
        self.metrics = metrics or WorkerMetrics()
        self._queue: AbstractQueue | None = None
        self._last_sample = 0.0
        self._pool = pool
        self._faults = FaultPoints(settings.fault_points)
        #: This process, in the attempt marks it leaves (see worker.culprits).
        self._owner = uuid.uuid4()
        self._applier = BatchApplier(settings.base_url)
        self._inbox: asyncio.Queue[AbstractIncomingMessage] = asyncio.Queue()
        self._stopping = asyncio.Event()
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
        ):
            while not self._stopping.is_set():
                self._beat()
                await self._sample()
                messages = await self._gather()
                if messages:
                    await self._handle(messages)
        log.info("worker %d stopped consuming", os.getpid())

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
        await queue.consume(self._receive)
        await dead_queue.consume(self._on_dead_letter)
        self.channel, self._queue = channel, queue
        self.consuming.set()
        self.metrics.consuming.set(1)
        log.info("worker %d consuming %s", os.getpid(), queue.name)

    def _detach(self) -> None:
        self.consuming.clear()
        self.metrics.consuming.set(0)
        self.channel = self._queue = None
        # What was prefetched on the lost channel is redelivered by the broker; drop our copies.
        while not self._inbox.empty():
            self._inbox.get_nowait()

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
        linger = self._settings.worker_batch_linger
        if messages[0].redelivered:
            # After a worker died, gather the burst the broker sends back, so that the messages
            # beside the one it may have died on are settled first (see `_handle`).
            linger = max(linger, _REDELIVERY_LINGER)
        deadline = asyncio.get_running_loop().time() + linger
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
        deliveries = await self._decode([m for m in messages if _live(m)])
        if not any(_earlier_deliveries(d.message) for d in deliveries):
            if deliveries:
                await self._settle(deliveries, ack_each=False)
            return
        # A worker may have died holding the redelivered messages. Settle the others first, then
        # each redelivered one alone, marked as attempted while it is applied, those a worker
        # died applying last: the messages beside one that kills the worker are settled and
        # acked before it can strike again, so only it nears the delivery limit.
        fresh = [d for d in deliveries if not _earlier_deliveries(d.message)]
        again = [d for d in deliveries if _earlier_deliveries(d.message)]
        if fresh and not await self._settle(fresh, ack_each=True):
            await self._nack_all(again)
            return
        marked = [(_attempt_key(d), d) for d in again]
        keys = [key for key, _ in marked]
        nothing: dict[str, int] = {}
        died_on = await self._optional_marks(lambda conn: unfinished_attempts(conn, keys), nothing)
        marked.sort(key=lambda pair: died_on.get(pair[0], 0))
        for index, (key, delivery) in enumerate(marked):
            if self._stopping.is_set():
                await self._nack_all([d for _, d in marked[index:]])
                return
            if not await self._settle_marked(delivery, key):  # it went back to the broker
                await self._nack_all([d for _, d in marked[index + 1 :]])
                return

    async def _settle_marked(self, delivery: _Delivery, key: str) -> bool:
        """Settle a redelivered message alone, marked as attempted while it is applied."""
        await self._optional_marks(lambda conn: mark_attempt(conn, key, self._owner), 0)
        if not await self._settle([delivery], ack_each=True):
            return False
        await self._optional_marks(lambda conn: forget_attempts(conn, [key]), None)
        return True

    async def _optional_marks(self, work: Callable[[Connection], Awaitable[T]], default: T) -> T:
        """Read or write message marks, which only order redeliveries: when the database cannot
        take them, settling goes on without (and retries its own work); `default` stands in."""
        try:
            async with self._pool.acquire(timeout=self._settings.database_timeout) as conn:
                return await work(conn)
        except Exception as exc:
            log.warning("message attempt marks are unavailable (%r)", exc)
            return default

    async def _settle(self, deliveries: list[_Delivery], ack_each: bool) -> bool:
        """Apply, reply, ack; False when the deliveries went back to the broker instead."""
        try:
            results = await self._apply_until_done(deliveries)
        except Exception:
            # Not even a culprit's own verdict could be stored: let the delivery limit decide.
            log.exception("a batch of %d messages could not be settled", len(deliveries))
            results = None
        if results is None:  # stopping, or the channel went away: the broker redelivers
            await self._nack_all(deliveries)
            return False
        self.batches += 1
        self._observe(results)
        self._faults.maybe_exit("exit-after-commit")
        await self._reply(deliveries, results)
        with contextlib.suppress(Exception):  # a lost ack means a redelivery, which is harmless
            if ack_each:  # `multiple` would also ack deliveries settled apart from these
                for delivery in deliveries:
                    await delivery.message.ack()
            else:
                await deliveries[-1].message.ack(multiple=True)
        return True

    def _observe(self, results: list[Result]) -> None:
        self.metrics.batch.observe(len(results))
        now = time.time()
        for outcome, count in Counter(result.outcome for result in results).items():
            self.metrics.outcomes.labels(outcome).inc(count)  # one label look-up per outcome
        end_to_end = self.metrics.end_to_end
        for result in results:
            if result.received_at:
                end_to_end.observe(max(0.0, now - result.received_at))

    async def _decode(self, messages: list[AbstractIncomingMessage]) -> list[_Delivery]:
        deliveries: list[_Delivery] = []
        for message in messages:
            try:
                deliveries.append(_Delivery(message, TaskBatch.decode(message.body)))
            except DecodeError as exc:
                log.error("rejecting undecodable message %s: %s", message.message_id, exc)
                with contextlib.suppress(Exception):
                    await message.reject(requeue=False)
        return deliveries

    async def _apply_until_done(self, deliveries: list[_Delivery]) -> list[Result] | None:
        """Final results of the batch (None: stopping, or the channel went away). Failures that
        are no request's fault (database or connection trouble, races lost again and again) are
        retried in place with backoff, so an outage never spends the queue's delivery limit;
        failures a request causes stay that request's own."""
        requests = [request for d in deliveries for request in d.batch.requests]
        # Only a redelivery or an Idempotency-Key retry can find a result already stored.
        suspects: set[uuid.UUID] | None = {
            request.id
            for d in deliveries
            for request in d.batch.requests
            if d.message.redelivered or request.keyed
        }
        replayed = {
            request.id
            for d in deliveries
            if d.message.headers and d.message.headers.get("x-replayed")
            for request in d.batch.requests
        }
        deaths = [(len(d.batch.requests), _earlier_deliveries(d.message)) for d in deliveries]
        parts = commit_parts(deaths, self._settings.delivery_limit)
        redelivered = any(earlier for _, earlier in deaths)

        def abandoned() -> bool:
            return self._stopping.is_set() or not _live(deliveries[0].message)

        backoff = 0.1
        while True:
            try:
                return await self._apply_in_parts(
                    requests, parts, suspects, replayed, redelivered, abandoned
                )
            except _Abandoned:
                return None
            except _RETRIED as exc:
                if abandoned():
                    return None
                log.warning("transient failure (%r); retrying in %.1fs", exc, backoff)
                self.metrics.retries.labels("transient").inc()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), backoff)
                backoff = min(backoff * 2, _MAX_BACKOFF)
                suspects = None  # a part or a request alone may have committed

    async def _apply_in_parts(
        self,
        requests: list[TaskRequest],
        parts: list[list[int]],
        suspects: set[uuid.UUID] | None,
        replayed: set[uuid.UUID],
        redelivered: bool,
        abandoned: Callable[[], bool],
    ) -> list[Result]:
        """Results of the batch, each part (positions in `requests`) committed on its own; a
        lone request of a redelivered message is marked as attempted first. Between parts,
        stopping or a lost channel abandons the rest (the broker redelivers it)."""
        if len(parts) == 1 and not redelivered:
            return await self._apply_isolating(requests, suspects, replayed)
        by_position: dict[int, Result] = {}
        for index, part in enumerate(parts):
            if index and abandoned():
                raise _Abandoned
            batch = [requests[i] for i in part]
            if len(batch) == 1 and redelivered:
                results = [await self._apply_lone(batch[0], replayed)]
            else:
                results = await self._apply_isolating(batch, suspects, replayed)
            by_position.update(zip(part, results, strict=True))
        return [by_position[i] for i in range(len(requests))]

    async def _apply_lone(self, request: TaskRequest, replayed: set[uuid.UUID]) -> Result:
        """A request of a redelivered message, alone: convicted without running when workers
        died applying it alone before (see worker.culprits)."""
        async with self._pool.acquire(timeout=self._settings.database_timeout) as conn:
            deaths = await mark_attempt(conn, request_key(request.id), self._owner)
        if deaths >= DEATHS_TO_CONVICT:
            killed = WorkerKilled(f"a worker died {deaths} times applying this request alone")
            log.error("request %s: %s; it is dead-lettered", request.id.hex, killed)
            results = await self._commit(
                [request], {0: verdict(request, killed)}, None, replayed, attempted=True
            )
        else:
            results = await self._apply_isolating([request], None, replayed, attempted=True)
        return results[0]

    async def _apply_isolating(
        self,
        requests: list[TaskRequest],
        suspects: set[uuid.UUID] | None,
        replayed: set[uuid.UUID],
        attempted: bool = False,
    ) -> list[Result]:
        """Results of the batch, committed; requests that make it fail get verdicts of their own
        and the others commit on the next try."""
        settled: dict[int, Verdict] = {}
        while True:
            try:
                return await self._commit(requests, settled, suspects, replayed, attempted)
            except _RETRIED:
                raise
            except Exception as exc:
                failure: BaseException = exc
            log.warning(
                "a batch of %d requests failed (%r); looking for the requests that cause it",
                len(requests),
                failure,
            )
            self.metrics.retries.labels("isolate").inc()
            unsettled = [i for i in range(len(requests)) if i not in settled]
            dry_run = functools.partial(self._dry_run, requests, replayed)
            if len(unsettled) == 1:  # failing alone once could be chance: confirm it
                alone = await dry_run(unsettled)
                found = {} if alone is None else {unsettled[0]: alone}
            else:
                found = await find_culprits(dry_run, unsettled, failure) if unsettled else {}
            if not found:
                return await self._commit_one_by_one(requests, settled, replayed)
            for position, culprit_failure in found.items():
                settled[position] = verdict(requests[position], culprit_failure)
                log.error(
                    "request %s fails on its own (%r); it gets its own %d",
                    requests[position].id.hex,
                    culprit_failure,
                    settled[position].result.http_status,
                )

    async def _commit(
        self,
        requests: list[TaskRequest],
        settled: dict[int, Verdict],
        suspects: set[uuid.UUID] | None,
        replayed: set[uuid.UUID],
        attempted: bool = False,
    ) -> list[Result]:
        """Apply the batch in one transaction, the `settled` requests by their verdicts; races
        with other workers are retried here. `attempted`: the requests were marked as attempted,
        and the marks go with this commit."""

        async def before_commit(conn: Connection) -> None:
            if attempted:
                await forget_attempts(conn, [request_key(r.id) for r in requests])
            self._faults.maybe_exit("exit-before-commit")

        for attempt in range(_RETRIES_IN_PLACE):
            try:
                async with self._pool.acquire(timeout=self._settings.database_timeout) as conn:
                    with self.metrics.batch_seconds.time():
                        return await self._apply(
                            conn,
                            requests,
                            settled=settled,
                            replayed=replayed,
                            before_commit=before_commit,
                            may_be_done=None if attempt else suspects,
                        )
            except _RACES:
                self.metrics.retries.labels("race").inc()
                if attempt == _RETRIES_IN_PLACE - 1:
                    raise
                await asyncio.sleep(0.005 * (attempt + 1))
        raise AssertionError("unreachable")

    async def _apply(
        self,
        conn: Connection,
        requests: list[TaskRequest],
        *,
        replayed: set[uuid.UUID],
        settled: Mapping[int, Verdict] | None = None,
        before_commit: Callable[[Connection], Awaitable[None]] | None = None,
        may_be_done: set[uuid.UUID] | None = None,
    ) -> list[Result]:
        """The applier's `apply`, behind the poison fault point, with asyncpg's refusal to
        encode a value (an InterfaceError, which would pass for an outage) made the request's."""
        settled = settled or {}
        self._faults.check_poison(r for i, r in enumerate(requests) if i not in settled)
        try:
            return await self._applier.apply(
                conn,
                requests,
                settled=settled,
                replayed=replayed,
                before_commit=before_commit,
                may_be_done=may_be_done,
            )
        except ENCODING_REFUSED as exc:
            raise ValueRefused(str(exc)) from exc

    async def _dry_run(
        self, requests: list[TaskRequest], replayed: set[uuid.UUID], positions: list[int]
    ) -> BaseException | None:
        """What applying these requests raises (None: they apply); nothing is committed."""
        part = [requests[i] for i in positions]
        try:
            async with (
                self._pool.acquire(timeout=self._settings.database_timeout) as conn,
                conn.transaction(),
            ):
                await self._apply(conn, part, replayed=replayed)
                raise _RolledBack
        except _RolledBack:
            return None
        except DATABASE_UNAVAILABLE:
            raise
        except _RACES:
            return None  # losing a race with another worker is no request's fault
        except Exception as exc:
            return exc

    async def _commit_one_by_one(
        self, requests: list[TaskRequest], settled: dict[int, Verdict], replayed: set[uuid.UUID]
    ) -> list[Result]:
        """The last resort, when no request fails alone (only some combination of them does):
        each request in a transaction of its own, in arrival order."""
        results: list[Result] = []
        for position, request in enumerate(requests):
            judged = settled.get(position)
            if judged is None:
                try:
                    results.extend(await self._commit([request], {}, None, replayed))
                    continue
                except _RETRIED:
                    raise
                except Exception as exc:
                    judged = verdict(request, exc)
            results.extend(await self._commit([request], {0: judged}, None, replayed))
        return results

    async def _nack_all(self, deliveries: list[_Delivery]) -> None:
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
                    Reply(r.request_id, r.http_status, r.body, _fingerprint(request, r))
                    for request, r in zip(
                        delivery.batch.requests, results[position : position + count], strict=True
                    )
                    if request.wants_reply
                )
            position += count
        channel = self.channel
        if channel is None:
            return
        for reply_to, replies in by_edge.items():
            if not replies:
                continue
            message = aio_pika.Message(
                encode_replies(replies), content_type=CONTENT_TYPE, type=REPLIES_MESSAGE_TYPE
            )
            try:
                # Bounded: a broker alarm blocks publishers, and replies must never hold up acks.
                await asyncio.wait_for(
                    channel.default_exchange.publish(message, reply_to, mandatory=False), 1.0
                )
            except Exception as exc:
                log.info("could not reply to %s: %r", reply_to, exc)

    async def _on_dead_letter(self, message: AbstractIncomingMessage) -> None:
        """Record the unfinished requests of a dead-lettered message and mark them failed; ack
        after commit."""
        reason = deadletters.death_reason(message.headers)
        try:
            async with self._pool.acquire(timeout=self._settings.database_timeout) as conn:
                letters = await deadletters.record(conn, message.message_id, message.body, reason)
        except Exception as exc:
            log.warning("could not record dead letter %s (%r); retrying", message.message_id, exc)
            await asyncio.sleep(1)
            with contextlib.suppress(Exception):
                await message.nack(requeue=True)
            return
        log.error(
            "message %s was dead-lettered (%s); kept as dead letters %s",
            message.message_id,
            reason,
            letters,
        )
        self.metrics.dead_letters.inc(len(letters))
        keys = _attempt_keys_of(message)
        await self._optional_marks(lambda conn: forget_attempts(conn, keys), None)
        with contextlib.suppress(Exception):
            await message.ack()


def _attempt_key(delivery: _Delivery) -> str:
    return message_key(delivery.message.message_id or delivery.batch.requests[0].id.hex)


def _attempt_keys_of(message: AbstractIncomingMessage) -> list[str]:
    """Every attempt mark a dead-lettered message may have left: its own and its requests'."""
    try:
        batch = TaskBatch.decode(message.body)
    except DecodeError:
        return [message_key(message.message_id)] if message.message_id else []
    return [_attempt_key(_Delivery(message, batch)), *(request_key(r.id) for r in batch.requests)]


def _earlier_deliveries(message: AbstractIncomingMessage) -> int:
    """How often the broker delivered this message before (quorum queues count it)."""
    count = message.headers.get("x-delivery-count") if message.headers else None
    if isinstance(count, int) and count >= 0:
        return count
    return 1 if message.redelivered else 0


def _request_count(message: AbstractIncomingMessage) -> int:
    # The batch is decoded in `_handle`; for sizing, the publisher's header saves decoding twice.
    count = message.headers.get("x-requests") if message.headers else None
    return count if isinstance(count, int) and count > 0 else 1


def _fingerprint(request: TaskRequest, result: Result) -> bytes:
    """What the edge matches a reply against: only a keyed request's id can be shared."""
    if result.fingerprint is not None:
        return result.fingerprint
    return request.fingerprint if request.keyed else b""
