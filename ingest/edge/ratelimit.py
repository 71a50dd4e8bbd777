"""The rate limit (`INGEST_RATE_LIMIT`): one token bucket per workflow, shared by every edge.

The bucket lives in Postgres (`rate_buckets`, `SharedBuckets`). An edge does not read it per
request: it leases a slice (`SLICE_SECONDS` of the rate, at least one task) and spends it locally,
so the database is touched about once per slice, not per request. What an edge holds unspent is at
most one slice, so over any window the edges together accept at most the burst, plus the rate times
the window, plus one slice per edge.

After a refusal the edge knows the least time before the bucket can hold a slice again (others only
take tokens from it; only time adds them), and refuses locally until then: a client hammering a
429 costs no database reads beyond one per slice.

When the shared bucket cannot answer within `LEASE_TIMEOUT` (Postgres slow or down), the edge
falls back to a local bucket with its share of the limit (rate and burst over `INGEST_EDGES`) and
tries the shared one again after `RETRY_SHARED_AFTER`. A rate of 0 is no limit and touches
nothing.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import asyncpg

log = logging.getLogger(__name__)

Connection = asyncpg.Connection | asyncpg.pool.PoolConnectionProxy

#: A slice is this many seconds of the rate (at least one task): the database is touched about as
#: often per edge and workflow while the workflow sends at its limit.
SLICE_SECONDS = 0.1
#: The longest a request waits for the shared bucket before the edge uses its local share.
LEASE_TIMEOUT = 0.25
#: After the shared bucket failed, the local share is used this long before it is tried again.
RETRY_SHARED_AFTER = 1.0


@dataclass(slots=True)
class TokenBucket:
    rate: float
    capacity: float
    tokens: float
    updated: float

    def refill(self, now: float) -> None:
        """Add what the rate gave since `updated`, up to the capacity. A clock read that went
        back (another process's, or a wall clock) adds nothing and never moves `updated` back."""
        if now > self.updated:
            self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
            self.updated = now

    def lease(self, now: float, need: float, want: float) -> float:
        """Take at least `need` (> 0) and up to `want` tokens; returns how many, 0 if refused.

        A need above the burst is granted once the bucket is full, leaving it in debt: a batch
        larger than the burst still passes, and what follows waits until the debt is paid."""
        self.refill(now)
        if self.tokens < min(need, self.capacity):
            return 0.0
        granted = max(need, min(self.tokens, want))
        self.tokens -= granted
        return granted

    def wait(self, need: float) -> float:
        """Seconds from `updated` until `need` tokens can be leased (0: now)."""
        return max(0.0, (min(need, self.capacity) - self.tokens) / self.rate)

    def take(self, now: float, cost: float = 1.0) -> float:
        """Take `cost` tokens; returns 0 when granted, else the seconds until they may be taken."""
        if self.lease(now, cost, cost):
            return 0.0
        return self.wait(cost)


def burst_capacity(rate: float, burst: int) -> float:
    """The bucket's size: the burst, or one second's worth (at least one task) without one."""
    return float(burst or max(1, math.ceil(rate)))


def slice_size(rate: float, capacity: float) -> float:
    """What an edge leases at once: `SLICE_SECONDS` of the rate, at least one task, at most the
    whole bucket."""
    return min(capacity, max(1.0, rate * SLICE_SECONDS))


@dataclass(frozen=True, slots=True)
class Lease:
    """The shared bucket's answer: the tokens granted (0: refused), and the tokens it kept."""

    granted: float
    left: float


class Buckets(Protocol):
    """Where the shared buckets are kept (`SharedBuckets`)."""

    async def lease(
        self, workflow_id: int, rate: float, capacity: float, need: float, want: float
    ) -> Lease: ...


class SharedBuckets:
    """The buckets in Postgres (migration 0010): read with the database's clock, decided here,
    written back only if no one wrote in between (`generation`), else read again."""

    _READ = """
        SELECT extract(epoch FROM clock_timestamp())::float8 AS now, b.tokens,
               extract(epoch FROM b.updated_at)::float8 AS updated, b.generation
        FROM (VALUES (1)) AS one LEFT JOIN rate_buckets AS b ON b.workflow_id = $1"""
    _CREATE = """
        INSERT INTO rate_buckets (workflow_id, tokens, updated_at, generation)
        VALUES ($1, $2, to_timestamp($3), 1) ON CONFLICT (workflow_id) DO NOTHING"""
    _UPDATE = """
        UPDATE rate_buckets SET tokens = $2, updated_at = to_timestamp($3),
               generation = generation + 1
        WHERE workflow_id = $1 AND generation = $4"""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def lease(
        self, workflow_id: int, rate: float, capacity: float, need: float, want: float
    ) -> Lease:
        async with self._pool.acquire() as conn:
            while True:  # the caller's timeout ends a contest that never settles
                row = await conn.fetchrow(self._READ, workflow_id)
                assert row is not None  # the clock's row, with or without a bucket
                bucket = _stored(row, rate, capacity)
                granted = bucket.lease(row["now"], need, want)
                if not granted:
                    return Lease(0.0, bucket.tokens)
                if await self._write(conn, workflow_id, bucket, row["generation"]):
                    return Lease(granted, bucket.tokens)

    async def _write(
        self, conn: Connection, workflow_id: int, bucket: TokenBucket, generation: int | None
    ) -> bool:
        """Store the bucket unless another edge wrote it since it was read."""
        if generation is not None:
            status = await conn.execute(
                self._UPDATE, workflow_id, bucket.tokens, bucket.updated, generation
            )
            return bool(status == "UPDATE 1")
        try:
            status = await conn.execute(self._CREATE, workflow_id, bucket.tokens, bucket.updated)
        except asyncpg.ForeignKeyViolationError:
            return True  # the workflow was deleted: nothing left to limit; the worker refuses it
        return bool(status == "INSERT 0 1")


def _stored(row: asyncpg.Record, rate: float, capacity: float) -> TokenBucket:
    """The bucket a row holds; a workflow's first bucket starts full, as a burst is allowed."""
    if row["generation"] is None:
        return TokenBucket(rate, capacity, capacity, row["now"])
    return TokenBucket(rate, capacity, row["tokens"], row["updated"])


@dataclass(slots=True)
class _Held:
    """One workflow's state in this edge: the leased tokens not spent yet; after a refusal, the
    most the shared bucket can hold (`horizon`, on this process's clock); the local share used
    while the shared bucket is unreachable. `lock`: one lease at a time, so at most one slice is
    held."""

    tokens: float = 0.0
    horizon: TokenBucket | None = None
    fallback: TokenBucket | None = None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class RateLimiter:
    """The rate limit of every workflow in this edge; a rate of 0 means no limit.

    With `shared` (`SharedBuckets`) the limit is shared by every edge; without it, or while it
    fails, this edge takes `1 / edges` of the rate and the burst."""

    def __init__(
        self,
        rate: float,
        burst: int,
        shared: Buckets | None = None,
        edges: int = 1,
        max_buckets: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
        on_local: Callable[[bool], None] = lambda local: None,
    ) -> None:
        self._rate = rate
        self._capacity = burst_capacity(rate, burst)
        self._slice = slice_size(rate, self._capacity)
        self._shared = shared
        self._edges = edges
        self._held: dict[int, _Held] = {}
        self._max_buckets = max_buckets
        self._clock = clock
        self._shared_failed_at: float | None = None
        #: Told True when this edge starts taking its share locally, False when it stops.
        self._on_local = on_local

    @property
    def limited(self) -> bool:
        return self._rate > 0

    async def retry_after(self, workflow_id: int, cost: int = 1) -> int:
        """0 when a request of `cost` tasks may go ahead, else whole seconds to wait (at least
        1). A batch import costs its items: the limit is in tasks, however they arrive."""
        if self._rate <= 0:
            return 0
        held = self._held_for(workflow_id)
        if held.tokens >= cost:
            held.tokens -= cost
            return 0
        async with held.lock:
            wait = await self._take(held, workflow_id, cost)
        return 0 if wait == 0 else max(1, math.ceil(wait))

    def _held_for(self, workflow_id: int) -> _Held:
        held = self._held.get(workflow_id)
        if held is None:
            if len(self._held) >= self._max_buckets:
                self._held.clear()  # forgets at most a slice per workflow: never lets more in
            held = self._held[workflow_id] = _Held()
        return held

    async def _take(self, held: _Held, workflow_id: int, cost: int) -> float:
        """Seconds to wait, 0 once `cost` tokens are taken: from what is held (a lease that
        ended while this request waited for the lock), else from a new lease."""
        if held.tokens >= cost:
            held.tokens -= cost
            return 0.0
        now = self._clock()
        if self._shared is None or not self._shared_usable(now):
            return self._take_locally(held, now, cost)
        need = cost - held.tokens
        want = max(need, self._slice)
        if held.horizon is not None:
            held.horizon.refill(now)
            if wait := held.horizon.wait(want):
                return wait
        # What is held goes into this request: the requests that do not wait for the lock must
        # not spend it while the lease is under way.
        reserved, held.tokens = held.tokens, 0.0
        try:
            async with asyncio.timeout(LEASE_TIMEOUT):
                lease = await self._shared.lease(
                    workflow_id, self._rate, self._capacity, need, want
                )
        except Exception as exc:  # whatever the cause, a request must never fail for it
            self._shared_failed(now, exc)
            return self._take_locally(held, now, cost)
        finally:
            held.tokens += reserved
        self._shared_answered()
        return self._settle(held, lease, now, cost, want)

    def _settle(self, held: _Held, lease: Lease, asked: float, cost: int, want: float) -> float:
        """Spend a granted lease and keep the rest, or note how long the bucket needs. The bucket
        held `lease.left` at some moment after `asked`: dating it `asked` can only make this edge
        ask again early, never late."""
        if lease.granted:
            held.tokens += lease.granted - cost  # never negative: granted >= cost - reserved
            held.horizon = None
            return 0.0
        held.horizon = TokenBucket(self._rate, self._capacity, lease.left, asked)
        # The wait until this edge asks again, at most a slice's time past the request's own.
        return held.horizon.wait(want)

    def _take_locally(self, held: _Held, now: float, cost: int) -> float:
        if held.fallback is None:
            capacity = max(1.0, self._capacity / self._edges)
            held.fallback = TokenBucket(self._rate / self._edges, capacity, capacity, now)
        return held.fallback.take(now, cost)

    def _shared_usable(self, now: float) -> bool:
        return self._shared_failed_at is None or now - self._shared_failed_at >= RETRY_SHARED_AFTER

    def _shared_failed(self, now: float, exc: Exception) -> None:
        if self._shared_failed_at is None:
            log.warning(
                "shared rate limit unreachable (%s: %s); this edge takes 1/%d of it meanwhile",
                type(exc).__name__,
                exc,
                self._edges,
            )
            self._on_local(True)
        self._shared_failed_at = now

    def _shared_answered(self) -> None:
        if self._shared_failed_at is not None:
            log.info("shared rate limit reachable again")
            self._shared_failed_at = None
            self._on_local(False)
