"""Rate limits (ingest.edge.ratelimit): a token bucket per workflow, a burst at once, then the
steady rate; a refused request learns how many whole seconds to wait."""

from __future__ import annotations

import pytest

from ingest.edge.ratelimit import RateLimiter, TokenBucket


def _bucket(rate: float = 2.0, capacity: float = 3.0) -> TokenBucket:
    return TokenBucket(rate=rate, capacity=capacity, tokens=capacity, updated=100.0)


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


def test_no_rate_means_no_limit():
    limiter = RateLimiter(rate=0, burst=0)
    assert {limiter.retry_after(1) for _ in range(10_000)} == {0}


def test_a_workflow_past_its_burst_waits_whole_seconds():
    limiter = RateLimiter(rate=0.001, burst=2)  # one request every 1000 s after the burst
    assert [limiter.retry_after(1) for _ in range(2)] == [0, 0]
    assert limiter.retry_after(1) == 1000


def test_a_wait_under_a_second_is_rounded_up_to_one():
    limiter = RateLimiter(rate=1000, burst=1)
    assert limiter.retry_after(1) == 0
    assert limiter.retry_after(1) == 1


def test_without_a_burst_a_workflow_gets_one_seconds_worth():
    limiter = RateLimiter(rate=3, burst=0)
    assert [limiter.retry_after(1) for _ in range(4)] == [0, 0, 0, 1]
    slow = RateLimiter(rate=0.5, burst=0)  # at least one request
    assert [slow.retry_after(1) for _ in range(2)] == [0, 2]


def test_each_workflow_has_its_own_bucket():
    limiter = RateLimiter(rate=0.001, burst=1)
    assert limiter.retry_after(1) == 0
    assert limiter.retry_after(1) > 0
    assert limiter.retry_after(2) == 0


def test_past_the_most_buckets_all_are_forgotten_rather_than_memory_growing():
    limiter = RateLimiter(rate=0.001, burst=1, max_buckets=2)
    assert [limiter.retry_after(w) for w in (1, 2)] == [0, 0]
    assert limiter.retry_after(1) > 0
    assert limiter.retry_after(3) == 0  # the third bucket clears the others
    assert limiter.retry_after(1) == 0


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


def test_the_limiter_counts_a_batch_by_its_tasks():
    limiter = RateLimiter(rate=0.001, burst=100)
    assert limiter.retry_after(1, 60) == 0
    assert limiter.retry_after(1, 60) > 0  # 40 tokens left: 60 more must wait
    assert limiter.retry_after(1, 40) == 0
