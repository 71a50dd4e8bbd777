"""Per-workflow token buckets: a steady rate with a burst allowance, in each edge process."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass


@dataclass(slots=True)
class TokenBucket:
    rate: float
    capacity: float
    tokens: float
    updated: float

    def take(self, now: float, cost: float = 1.0) -> float:
        """Take `cost` tokens; returns 0 when granted, else the seconds until they may be taken.

        A cost above the burst is granted once the bucket is full, leaving it in debt: a batch
        larger than the burst still passes, and what follows waits until the debt is paid."""
        self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        needed = min(cost, self.capacity)
        if self.tokens >= needed:
            self.tokens -= cost
            return 0.0
        return (needed - self.tokens) / self.rate


class RateLimiter:
    """One bucket per workflow; a rate of 0 means no limit."""

    def __init__(self, rate: float, burst: int, max_buckets: int = 100_000) -> None:
        self._rate = rate
        self._capacity = float(burst or max(1, math.ceil(rate)))
        self._buckets: dict[int, TokenBucket] = {}
        self._max_buckets = max_buckets

    def retry_after(self, workflow_id: int, cost: int = 1) -> int:
        """0 when a request of `cost` tasks may go ahead, else whole seconds to wait (at least
        1). A batch import costs its items: the limit is in tasks, however they arrive."""
        if self._rate <= 0:
            return 0
        now = time.monotonic()
        bucket = self._buckets.get(workflow_id)
        if bucket is None:
            if len(self._buckets) >= self._max_buckets:
                self._buckets.clear()
            bucket = self._buckets[workflow_id] = TokenBucket(
                self._rate, self._capacity, self._capacity, now
            )
        wait = bucket.take(now, cost)
        return 0 if wait == 0 else max(1, math.ceil(wait))
