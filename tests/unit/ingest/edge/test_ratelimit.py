"""Rate limits (ingest.edge.ratelimit): a token bucket per workflow, a burst at once, then the
steady rate; a refused request learns how many whole seconds to wait. The bucket is shared by
every edge, which lease slices of it; here the shared buckets are `MemoryBuckets`, a complete
small implementation of what Postgres keeps (tests/test_shared_rate_limit.py uses the real one)."""

from __future__ import annotations

import asyncio
import time

import pytest

from ingest.edge.ratelimit import (
    LEASE_TIMEOUT,
    RETRY_SHARED_AFTER,
    Lease,
    RateLimiter,
    TokenBucket,
    slice_size,
)


class Clock:
    """Time that moves only when a test says so."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class MemoryBuckets:
    """The shared buckets in memory, on a test's clock; counts the leases asked for; `failing`
    makes them raise, `hanging` never answer."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.buckets: dict[int, TokenBucket] = {}
        self.calls = 0
        self.failing = False
        self.hanging = False

    async def lease(
        self, workflow_id: int, rate: float, capacity: float, need: float, want: float
    ) -> Lease:
        self.calls += 1
        await asyncio.sleep(0)  # a round trip: other requests run meanwhile
        if self.failing:
            raise OSError("connection refused")
        if self.hanging:
            await asyncio.Event().wait()
        now = self.clock()
        bucket = self.buckets.setdefault(workflow_id, TokenBucket(rate, capacity, capacity, now))
        return Lease(bucket.lease(now, need, want), bucket.tokens)


def _bucket(rate: float = 2.0, capacity: float = 3.0) -> TokenBucket:
    return TokenBucket(rate=rate, capacity=capacity, tokens=capacity, updated=100.0)


def _edges(count: int, rate: float, burst: int) -> tuple[Clock, MemoryBuckets, list[RateLimiter]]:
    clock = Clock()
    shared = MemoryBuckets(clock)
    return (
        clock,
        shared,
        [RateLimiter(rate, burst, shared, count, clock=clock) for _ in range(count)],
    )


# ------------------------------------------------------------------------------------ the bucket


def test_a_full_bucket_grants_its_capacity_at_once_then_says_how_long_to_wait():
    bucket = _bucket()
    assert [bucket.take(100.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.take(100.0) == pytest.approx(0.5)  # one token at 2 a second


def test_tokens_come_back_at_the_rate_and_never_beyond_the_capacity():
    bucket = _bucket()
    for _ in range(3):
        bucket.take(100.0)
    assert bucket.take(100.25) == pytest.approx(0.25)  # half a token back, half to go
    assert bucket.take(100.5) == 0.0
    assert bucket.take(1000.0) == 0.0  # idle for long: back to a full bucket, not more
    assert bucket.tokens == pytest.approx(2.0)


def test_a_clock_that_goes_back_adds_nothing_and_is_not_followed():
    bucket = _bucket()
    bucket.take(100.0, cost=3)
    bucket.refill(90.0)  # another process's clock, a little behind
    assert (bucket.tokens, bucket.updated) == (0.0, 100.0)
    bucket.refill(100.5)
    assert bucket.tokens == pytest.approx(1.0)


def test_a_lease_takes_up_to_what_is_wanted_and_at_least_what_is_needed():
    bucket = _bucket(rate=10.0, capacity=10.0)
    assert bucket.lease(100.0, need=1, want=4) == 4
    assert bucket.lease(100.0, need=1, want=100) == 6  # all there is
    assert bucket.lease(100.0, need=1, want=4) == 0  # empty: refused, nothing taken
    assert bucket.tokens == 0
    assert bucket.lease(100.05, need=1, want=4) == 0  # half a token is not one
    assert bucket.wait(4) == pytest.approx(0.35)


def test_a_request_of_several_tasks_costs_its_tasks():
    bucket = _bucket(rate=2.0, capacity=10.0)
    assert bucket.take(100.0, cost=4) == 0.0
    assert bucket.take(100.0, cost=6) == 0.0
    assert bucket.take(100.0, cost=1) == pytest.approx(0.5)


def test_a_batch_larger_than_the_burst_passes_on_a_full_bucket_and_leaves_it_in_debt():
    bucket = _bucket(rate=10.0, capacity=10.0)
    assert bucket.take(100.0, cost=25) == 0.0  # a whole burst's wait would never come
    assert bucket.tokens == pytest.approx(-15.0)
    assert bucket.take(100.0) == pytest.approx(1.6)  # the debt, then one token, at 10 a second
    assert bucket.take(101.7) == 0.0


def test_a_slice_is_a_tenth_of_a_second_at_least_one_task_at_most_the_burst():
    assert slice_size(rate=1000, capacity=1000) == 100
    assert slice_size(rate=5, capacity=5) == 1
    assert slice_size(rate=1000, capacity=20) == 20


# ------------------------------------------------------------------------ one edge, no sharing


async def test_no_rate_means_no_limit():
    limiter = RateLimiter(rate=0, burst=0)
    assert not limiter.limited
    assert {await limiter.retry_after(1) for _ in range(10_000)} == {0}


async def test_a_workflow_past_its_burst_waits_whole_seconds():
    limiter = RateLimiter(rate=0.001, burst=2)  # one request every 1000 s after the burst
    assert [await limiter.retry_after(1) for _ in range(2)] == [0, 0]
    assert await limiter.retry_after(1) == 1000


async def test_a_wait_under_a_second_is_rounded_up_to_one():
    limiter = RateLimiter(rate=1000, burst=1)
    assert await limiter.retry_after(1) == 0
    assert await limiter.retry_after(1) == 1


async def test_without_a_burst_a_workflow_gets_one_seconds_worth():
    limiter = RateLimiter(rate=3, burst=0)
    assert [await limiter.retry_after(1) for _ in range(4)] == [0, 0, 0, 1]
    slow = RateLimiter(rate=0.5, burst=0)  # at least one request
    assert [await slow.retry_after(1) for _ in range(2)] == [0, 2]


async def test_each_workflow_has_its_own_bucket():
    limiter = RateLimiter(rate=0.001, burst=1)
    assert await limiter.retry_after(1) == 0
    assert await limiter.retry_after(1) > 0
    assert await limiter.retry_after(2) == 0


async def test_past_the_most_buckets_all_are_forgotten_rather_than_memory_growing():
    limiter = RateLimiter(rate=0.001, burst=1, max_buckets=2)
    assert [await limiter.retry_after(w) for w in (1, 2)] == [0, 0]
    assert await limiter.retry_after(1) > 0
    assert await limiter.retry_after(3) == 0  # the third bucket clears the others
    assert await limiter.retry_after(1) == 0


async def test_the_limiter_counts_a_batch_by_its_tasks():
    limiter = RateLimiter(rate=0.001, burst=100)
    assert await limiter.retry_after(1, 60) == 0
    assert await limiter.retry_after(1, 60) > 0  # 40 tokens left: 60 more must wait
    assert await limiter.retry_after(1, 40) == 0


# --------------------------------------------------------------------------- edges sharing it


async def test_two_edges_together_accept_one_limit_not_two():
    clock, _, edges = _edges(2, rate=100, burst=100)
    accepted = 0
    for _ in range(2000):  # two seconds, every edge asked every millisecond
        clock.now += 0.001
        for edge in edges:
            accepted += await edge.retry_after(1) == 0
    # The burst, two seconds at the rate, and at most one slice (10) unspent per edge.
    assert 100 + 200 - 2 * 10 <= accepted <= 100 + 200


async def test_an_edge_leases_a_slice_and_spends_it_without_the_database():
    _, shared, (edge,) = _edges(1, rate=1000, burst=1000)
    assert [await edge.retry_after(1) for _ in range(1000)] == [0] * 1000
    assert shared.calls == 10  # a slice is 100 tasks
    assert await edge.retry_after(1) == 1
    assert shared.buckets[1].tokens == 0


async def test_what_one_edge_leased_the_others_cannot_take():
    _, shared, (a, b) = _edges(2, rate=100, burst=100)
    assert await a.retry_after(1) == 0  # leases a slice: 10
    assert shared.buckets[1].tokens == 90
    assert await b.retry_after(1, 90) == 0
    assert await b.retry_after(1) == 1  # the bucket is empty; `a` still holds 9
    assert [await a.retry_after(1) for _ in range(10)] == [0] * 9 + [1]


async def test_retry_after_says_when_the_shared_bucket_has_room():
    clock, _, (a, b) = _edges(2, rate=0.5, burst=2)
    assert [await a.retry_after(1) for _ in range(2)] == [0, 0]
    assert await b.retry_after(1) == 2  # one task at half a task a second
    clock.now += 1.5
    assert await b.retry_after(1) == 1
    clock.now += 0.5
    assert await b.retry_after(1) == 0


async def test_a_batch_larger_than_the_burst_leaves_the_shared_bucket_in_debt_for_every_edge():
    clock, shared, (a, b) = _edges(2, rate=10, burst=10)
    assert await a.retry_after(1, 25) == 0
    assert shared.buckets[1].tokens == pytest.approx(-15)
    assert await b.retry_after(1) == 2  # 1.6 s: the debt, then one task
    clock.now += 1.6
    assert await b.retry_after(1) == 0


async def test_a_refused_edge_asks_the_database_again_only_once_a_slice_can_be_there():
    clock, shared, (a, b) = _edges(2, rate=100, burst=100)
    assert await a.retry_after(1, 100) == 0
    assert await b.retry_after(1) == 1
    calls = shared.calls
    for _ in range(1000):  # a client hammering a 429
        assert await b.retry_after(1) == 1
    assert shared.calls == calls
    clock.now += 0.1  # a slice's worth came back
    assert await b.retry_after(1) == 0
    assert shared.calls == calls + 1


async def test_concurrent_requests_of_one_edge_wait_for_one_lease_rather_than_each_taking_one():
    _, shared, (edge,) = _edges(1, rate=100, burst=100)
    waits = await asyncio.gather(*(edge.retry_after(1) for _ in range(30)))
    assert waits == [0] * 30
    assert shared.calls == 3  # three slices of 10, one after another
    assert shared.buckets[1].tokens == 70


async def test_a_request_that_waited_for_the_lock_spends_what_the_lease_left():
    _, shared, (edge,) = _edges(1, rate=100, burst=100)
    waits = await asyncio.gather(edge.retry_after(1, 5), edge.retry_after(1, 3))
    assert waits == [0, 0]
    assert shared.calls == 1  # the second took 3 of the 5 the first left


# ------------------------------------------------------------------- when the database fails


async def test_when_the_shared_bucket_fails_each_edge_takes_its_share_and_retries_it_later():
    clock, shared, (edge, _) = _edges(2, rate=10, burst=10)
    shared.failing = True
    assert [await edge.retry_after(1) for _ in range(6)] == [0] * 5 + [1]  # half of the burst
    assert shared.calls == 1  # not asked again until RETRY_SHARED_AFTER
    clock.now += RETRY_SHARED_AFTER
    shared.failing = False
    assert [await edge.retry_after(1) for _ in range(10)] == [0] * 10  # the shared burst
    assert shared.calls == 2 + 9  # a slice is one task at 10 a second


async def test_a_shared_bucket_that_does_not_answer_is_given_up_after_the_lease_timeout():
    _, shared, (edge, _) = _edges(2, rate=10, burst=10)
    shared.hanging = True
    started = time.monotonic()
    waits = await asyncio.gather(*(edge.retry_after(1) for _ in range(6)))
    assert time.monotonic() - started < LEASE_TIMEOUT + 0.5
    assert sorted(waits) == [0] * 5 + [1]
    assert shared.calls == 1  # the others, waiting for the lock, went to the local share


async def test_no_rate_never_touches_the_shared_buckets():
    _, shared, (edge,) = _edges(1, rate=0, burst=0)
    shared.failing = True
    assert {await edge.retry_after(1, 1000) for _ in range(100)} == {0}
    assert shared.calls == 0
