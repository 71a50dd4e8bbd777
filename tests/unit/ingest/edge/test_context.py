"""The edge's caches (`Expiring`): kept for their TTL, dropped at once by a change notice, and never
refilled by a read that began before the notice. Pure: no Postgres."""

from __future__ import annotations

import asyncio
from functools import partial
from typing import TypeVar

from ingest.edge.context import Expiring

T = TypeVar("T")


async def _value(value: T) -> T:
    return value


async def test_a_value_is_kept_until_forgotten() -> None:
    cache: Expiring[str, str] = Expiring(ttl=60)
    assert await cache.get("a", lambda: _value("one")) == "one"
    assert await cache.get("a", lambda: _value("two")) == "one"
    cache.forget(lambda value: value == "one")
    assert await cache.get("a", lambda: _value("two")) == "two"


async def test_forget_drops_only_what_the_change_touched() -> None:
    cache: Expiring[str, int] = Expiring(ttl=60)
    for key, value in (("a", 1), ("b", 2)):
        await cache.get(key, partial(_value, value))
    cache.forget(lambda value: value == 1)
    assert await cache.get("a", lambda: _value(10)) == 10
    assert await cache.get("b", lambda: _value(20)) == 2


async def test_misses_are_never_kept_and_a_zero_ttl_keeps_nothing() -> None:
    cache: Expiring[str, str] = Expiring(ttl=60)
    assert await cache.get("a", lambda: _value(None)) is None
    assert await cache.get("a", lambda: _value("new")) == "new"
    uncached: Expiring[str, str] = Expiring(ttl=0)
    assert await uncached.get("a", lambda: _value("one")) == "one"
    assert await uncached.get("a", lambda: _value("two")) == "two"


async def test_a_read_that_began_before_a_change_is_answered_but_not_kept() -> None:
    cache: Expiring[str, str] = Expiring(ttl=60)
    reading = asyncio.Event()
    release = asyncio.Event()

    async def slow_old_read() -> str:
        reading.set()
        await release.wait()
        return "old"

    pending = asyncio.create_task(cache.get("a", slow_old_read))
    await asyncio.wait_for(reading.wait(), 5)
    cache.clear()  # the change was committed and announced while the read was under way
    release.set()
    assert await asyncio.wait_for(pending, 5) == "old"
    assert await cache.get("a", lambda: _value("new")) == "new"


async def test_a_full_cache_starts_over_rather_than_growing() -> None:
    cache: Expiring[int, int] = Expiring(ttl=60, size=2)
    for key in range(3):
        await cache.get(key, partial(_value, key))
    assert await cache.get(0, lambda: _value(100)) == 100
