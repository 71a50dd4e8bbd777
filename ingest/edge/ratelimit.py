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

    def take(self, now: float) -> float:
        """Take one token; returns 0 when granted, else the seconds until one is available."""
        self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens >= 1:
            self.tokens -= 1
            return 0.0
        return (1 - self.tokens) / self.rate


class RateLimiter:
    """One bucket per workflow; a rate of 0 means no limit."""

    def __init__(self, rate: float, burst: int, max_buckets: int = 100_000) -> None:
        self._rate = rate
        self._capacity = float(burst or max(1, math.ceil(rate)))
        self._buckets: dict[int, TokenBucket] = {}
        self._max_buckets = max_buckets

    def retry_after(self, workflow_id: int) -> int:
        """0 when the request may go ahead, else whole seconds to wait (at least 1)."""
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
        wait = bucket.take(now)
        return 0 if wait == 0 else max(1, math.ceil(wait))
