"""Settling deliveries: every request of a micro-batch gets its final result, committed.

`Settler.settle` returns `Ack` with the results, or raises `Retry` (worker.decisions):
- failures that are no request's fault (database or connection trouble, races lost again and
  again) are retried here, in place, with backoff: an outage never spends the queue's delivery
  limit and never becomes a 4xx;
- anything else raised while applying is some request's fault: the requests that fail alone are
  found by bisection over dry runs (worker.culprits) and each gets its own final result (a 422
  for a value Postgres refuses; otherwise it is dead-lettered alone with its own 500); the rest
  of the batch commits on the next try;
- a redelivered message (a worker may have died on it) is committed in ever smaller parts, a lone
  request marked as attempted first, so a request that kills the worker is caught;
- a batch import counts as its items: a micro-batch holding batch imports is committed in parts
  of at most `worker_batch_max` task bodies (`within_items`; a batch import is never cut);
- stopping, or a lost channel, between two parts or two retries → `Retry`, as is a batch of which
  not even a culprit's own verdict could be stored (the queue's delivery limit decides then).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import uuid
from collections.abc import Awaitable, Callable, Mapping
from typing import TypeVar

import asyncpg

from ingest.errors import ValueRefused
from ingest.messages import TaskRequest
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
    request_key,
    verdict,
)
from worker.decisions import Ack, Retry
from worker.deliveries import Delivery, is_live
from worker.faults import FaultPoints
from worker.metrics import WorkerMetrics
from worker.upsert import BatchApplier, RetryBatch, WorkflowCache

log = logging.getLogger(__name__)
T = TypeVar("T")

_RACES = (RetryBatch, asyncpg.TransactionRollbackError)
#: Failures that are no request's fault: retried in place, batch and all.
_RETRIED = (*DATABASE_UNAVAILABLE, *_RACES)
_RETRIES_IN_PLACE = 5
_MAX_BACKOFF = 5.0


class _RolledBack(Exception):
    """Raised to roll a dry run back."""


class _Abandoned(Exception):
    """Raised when the worker stops, or loses its channel, between two parts of a batch."""


class _Batch:
    """The requests of the deliveries being settled, and what is known about them."""

    def __init__(self, deliveries: list[Delivery], delivery_limit: int, most_items: int) -> None:
        self.requests = [request for d in deliveries for request in d.batch.requests]
        #: Only a redelivery or an Idempotency-Key retry can find a result already stored (None:
        #: any request can, once a part or a request alone may have committed).
        self.suspects: set[uuid.UUID] | None = {
            request.id
            for d in deliveries
            for request in d.batch.requests
            if d.message.redelivered or request.idempotent
        }
        #: Requests an operator replayed from the dead letters.
        self.replayed = {
            request.id
            for d in deliveries
            if d.message.headers and d.message.headers.get("x-replayed")
            for request in d.batch.requests
        }
        deaths = [(len(d.batch.requests), d.earlier) for d in deliveries]
        items = [request.items for request in self.requests]
        self.parts = within_items(commit_parts(deaths, delivery_limit), items, most_items)
        self.redelivered = any(earlier for _, earlier in deaths)


def within_items(parts: list[list[int]], items: list[int], most: int) -> list[list[int]]:
    """`parts` (positions of requests, in order) cut so that each holds at most `most` task
    bodies, the request at position i counting as `items[i]`; a request is never cut, so one
    holding more is a part of its own. Only parts holding a batch import are cut: gathering
    already bounds the requests of the others (worker.deliveries)."""
    cut: list[list[int]] = []
    for part in parts:
        if all(items[i] == 1 for i in part):
            cut.append(part)
            continue
        current: list[int] = []
        weight = 0
        for position in part:
            if current and weight + items[position] > most:
                cut.append(current)
                current, weight = [], 0
            current.append(position)
            weight += items[position]
        cut.append(current)
    return cut


class Settler:
    """Applies deliveries until every request has a final result (see the module docstring)."""

    def __init__(
        self,
        settings: Settings,
        pool: asyncpg.Pool,
        metrics: WorkerMetrics,
        faults: FaultPoints,
        stopping: asyncio.Event,
    ) -> None:
        self._settings = settings
        self._pool = pool
        self._metrics = metrics
        self._faults = faults
        self._stopping = stopping
        #: The workflows this process knows; change notices drop them (worker.consumer).
        self.workflows = WorkflowCache()
        self._applier = BatchApplier(settings.base_url, self.workflows)
        #: This process, in the attempt marks it leaves (see worker.culprits).
        self._owner = uuid.uuid4()

    async def settle(self, deliveries: list[Delivery]) -> Ack:
        """The committed final results of the deliveries' requests, in order; raises Retry when
        the deliveries must go back to the broker."""
        try:
            return Ack(await self._until_done(deliveries))
        except Retry:
            raise
        except Exception as exc:
            log.exception("a batch of %d messages could not be settled", len(deliveries))
            raise Retry("not even a culprit's verdict could be stored") from exc

    async def mark(self, key: str) -> None:
        """Mark a message as attempted by this process (see worker.culprits)."""
        await self.optional_marks(lambda conn: mark_attempt(conn, key, self._owner), 0)

    async def optional_marks(self, work: Callable[[Connection], Awaitable[T]], default: T) -> T:
        """Read or write message marks, which only order redeliveries: when the database cannot
        take them, settling goes on without (and retries its own work); `default` stands in."""
        try:
            async with self._pool.acquire(timeout=self._settings.database_timeout) as conn:
                return await work(conn)
        except Exception as exc:
            log.warning("message attempt marks are unavailable (%r)", exc)
            return default

    async def _until_done(self, deliveries: list[Delivery]) -> list[Result]:
        settings = self._settings
        batch = _Batch(deliveries, settings.delivery_limit, settings.worker_batch_max)

        def abandoned() -> bool:
            return self._stopping.is_set() or not is_live(deliveries[0].message)

        backoff = 0.1
        while True:
            try:
                return await self._in_parts(batch, abandoned)
            except _Abandoned:
                raise Retry("the worker stops, or lost its channel") from None
            except _RETRIED as exc:
                if abandoned():
                    raise Retry("the worker stops, or lost its channel") from exc
                log.warning("transient failure (%r); retrying in %.1fs", exc, backoff)
                self._metrics.retries.labels("transient").inc()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), backoff)
                backoff = min(backoff * 2, _MAX_BACKOFF)
                batch.suspects = None  # a part or a request alone may have committed

    async def _in_parts(self, batch: _Batch, abandoned: Callable[[], bool]) -> list[Result]:
        """Results of the batch, each part (positions in its requests) committed on its own; a
        lone request of a redelivered message is marked as attempted first. Between parts,
        stopping or a lost channel abandons the rest (the broker redelivers it)."""
        requests = batch.requests
        if len(batch.parts) == 1 and not batch.redelivered:
            return await self._isolating(requests, batch.suspects, batch.replayed)
        by_position: dict[int, Result] = {}
        for index, part in enumerate(batch.parts):
            if index and abandoned():
                raise _Abandoned
            chosen = [requests[i] for i in part]
            if len(chosen) == 1 and batch.redelivered:
                results = [await self._lone(chosen[0], batch.replayed)]
            else:
                results = await self._isolating(chosen, batch.suspects, batch.replayed)
            by_position.update(zip(part, results, strict=True))
        return [by_position[i] for i in range(len(requests))]

    async def _lone(self, request: TaskRequest, replayed: set[uuid.UUID]) -> Result:
        """A request of a redelivered message, alone: convicted without running when workers
        died applying it alone before (see worker.culprits)."""
        async with self._pool.acquire(timeout=self._settings.database_timeout) as conn:
            deaths = await mark_attempt(conn, request_key(request.id), self._owner)
        if deaths >= DEATHS_TO_CONVICT:
            killed = WorkerKilled(f"a worker died {deaths} times applying this request alone")
            log.error("request %s: %s; it is dead-lettered", request.id.hex, killed)
            judged = {0: verdict(request, killed)}
            results = await self._commit([request], judged, None, replayed, attempted=True)
        else:
            results = await self._isolating([request], None, replayed, attempted=True)
        return results[0]

    async def _isolating(
        self,
        requests: list[TaskRequest],
        suspects: set[uuid.UUID] | None,
        replayed: set[uuid.UUID],
        attempted: bool = False,
    ) -> list[Result]:
        """Results of the requests, committed; requests that make them fail get verdicts of their
        own and the others commit on the next try."""
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
            self._metrics.retries.labels("isolate").inc()
            found = await self._culprits(requests, settled, replayed, failure)
            if not found:
                return await self._one_by_one(requests, settled, replayed)
            for position, culprit_failure in found.items():
                settled[position] = verdict(requests[position], culprit_failure)
                log.error(
                    "request %s fails on its own (%r); it gets its own %d",
                    requests[position].id.hex,
                    culprit_failure,
                    settled[position].result.http_status,
                )

    async def _culprits(
        self,
        requests: list[TaskRequest],
        settled: Mapping[int, Verdict],
        replayed: set[uuid.UUID],
        failure: BaseException,
    ) -> dict[int, BaseException]:
        """The positions of the unsettled requests that fail alone, with what they raise."""
        unsettled = [i for i in range(len(requests)) if i not in settled]
        dry_run = functools.partial(self._dry_run, requests, replayed)
        if len(unsettled) == 1:  # failing alone once could be chance: confirm it
            alone = await dry_run(unsettled)
            return {} if alone is None else {unsettled[0]: alone}
        return await find_culprits(dry_run, unsettled, failure) if unsettled else {}

    async def _commit(
        self,
        requests: list[TaskRequest],
        settled: Mapping[int, Verdict],
        suspects: set[uuid.UUID] | None,
        replayed: set[uuid.UUID],
        attempted: bool = False,
    ) -> list[Result]:
        """Apply the requests in one transaction, the `settled` ones by their verdicts; races
        with other workers are retried here. `attempted`: the requests were marked as attempted,
        and the marks go with this commit."""

        async def before_commit(conn: Connection) -> None:
            if attempted:
                await forget_attempts(conn, [request_key(r.id) for r in requests])
            self._faults.maybe_exit("exit-before-commit")

        for attempt in range(_RETRIES_IN_PLACE):
            try:
                async with self._pool.acquire(timeout=self._settings.database_timeout) as conn:
                    with self._metrics.batch_seconds.time():
                        return await self._apply(
                            conn,
                            requests,
                            settled=settled,
                            replayed=replayed,
                            before_commit=before_commit,
                            may_be_done=None if attempt else suspects,
                        )
            except _RACES:
                self._metrics.retries.labels("race").inc()
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

    async def _one_by_one(
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
