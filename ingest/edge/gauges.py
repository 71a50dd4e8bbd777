"""What an operator watches that no request counts: the task queue's depth and consumers (from the
broker), the dead letters kept (from Postgres), and this edge's pool, read every few seconds.

Every edge reads the same broker and database, so under `ingest run` these gauges keep the newest
reading of any live edge (`multiprocess_mode="livemostrecent"`), never a sum. A reading that
fails is NaN, not the last value: a stale number would hide that the edge cannot see.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import AsyncIterator

import asyncpg
from aio_pika.abc import AbstractChannel, AbstractConnection

from ingest.edge.metrics import EdgeMetrics
from ingest.settings import Settings

log = logging.getLogger(__name__)

#: Seconds between two readings; a Prometheus scrape is typically every 10 to 60 seconds.
INTERVAL = 5.0
#: Seconds one reading may take before it counts as failed.
READ_TIMEOUT = 2.0
#: Dead letters counted at most: a count over a huge table is a long scan, and past this many
#: the number no longer changes what an operator does.
DEAD_LETTERS_COUNTED = 100_000

_COUNT_DEAD_LETTERS = (
    f"SELECT count(*) FROM (SELECT 1 FROM dead_letters LIMIT {DEAD_LETTERS_COUNTED}) AS kept"
)


class OperatorGauges:
    """Reads the gauges every `interval` seconds while `polling`; the broker through a channel
    of its own on the edge's connection (`attach` on every new connection, `detach` when lost)."""

    def __init__(
        self, settings: Settings, metrics: EdgeMetrics, interval: float = INTERVAL
    ) -> None:
        self._queue = settings.queue
        self._metrics = metrics
        self._interval = interval
        self._connection: AbstractConnection | None = None
        self._channel: AbstractChannel | None = None

    def attach(self, connection: AbstractConnection) -> None:
        self._connection = connection

    def detach(self) -> None:
        self._connection = self._channel = None

    @contextlib.asynccontextmanager
    async def polling(self, pool: asyncpg.Pool) -> AsyncIterator[None]:
        task = asyncio.create_task(self._poll(pool), name="operator-gauges")
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await self._close_channel()

    async def _poll(self, pool: asyncpg.Pool) -> None:
        while True:
            await self.read(pool)
            await asyncio.sleep(self._interval)

    async def read(self, pool: asyncpg.Pool) -> None:
        """Take one reading of every gauge."""
        self._metrics.pool_size.set(pool.get_size())
        self._metrics.pool_idle.set(pool.get_idle_size())
        ready, consumers = await self._read_queue()
        self._metrics.queue_ready.set(ready)
        self._metrics.queue_consumers.set(consumers)
        self._metrics.dead_letters.set(await self._read_dead_letters(pool))

    async def _read_queue(self) -> tuple[float, float]:
        """Ready messages and consumers of the task queue (NaN each when the broker cannot say)."""
        try:
            async with asyncio.timeout(READ_TIMEOUT):
                channel = await self._open_channel()
                queue = await channel.declare_queue(self._queue, passive=True)
        except Exception as exc:
            log.debug("queue gauges unread: %r", exc)
            # A failed passive declare closes the channel on the broker's side: start over.
            await self._close_channel()
            return math.nan, math.nan
        declared = queue.declaration_result
        return float(declared.message_count or 0), float(declared.consumer_count or 0)

    async def _open_channel(self) -> AbstractChannel:
        if self._channel is None or self._channel.is_closed:
            if self._connection is None or self._connection.is_closed:
                raise ConnectionError("no broker connection")
            # Not tied to the connection (unlike the publisher's): a failed passive declare
            # closes this channel alone, and the edge keeps publishing.
            self._channel = await self._connection.channel(publisher_confirms=False)
        return self._channel

    async def _close_channel(self) -> None:
        channel, self._channel = self._channel, None
        if channel is not None and not channel.is_closed:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(channel.close()), READ_TIMEOUT)

    @staticmethod
    async def _read_dead_letters(pool: asyncpg.Pool) -> float:
        try:
            async with asyncio.timeout(READ_TIMEOUT):
                count = await pool.fetchval(_COUNT_DEAD_LETTERS, timeout=READ_TIMEOUT)
        except Exception as exc:
            log.debug("dead letter gauge unread: %r", exc)
            return math.nan
        return float(count)
