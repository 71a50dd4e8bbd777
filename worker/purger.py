"""The worker's background purge: every `INGEST_PURGE_INTERVAL` (jittered, so the workers of a
deployment do not all purge at once), remove what retention no longer keeps (ingest.retention).
A purge that fails (the database is away) is logged and tried again at the next interval; the
consumer never waits for one."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import AsyncIterator

from ingest import retention
from ingest.settings import Settings
from ingest.store import Pool
from worker.metrics import WorkerMetrics

log = logging.getLogger(__name__)

#: Each wait is the interval times a factor drawn from here: on average the interval, and two
#: workers started together drift apart at once.
_JITTER = (0.75, 1.25)


@contextlib.asynccontextmanager
async def purging(settings: Settings, pool: Pool, metrics: WorkerMetrics) -> AsyncIterator[None]:
    """Purge in the background while the context is open; stop (mid-batch if need be: a
    cancelled batch rolls back) when it closes."""
    task = asyncio.create_task(_purge_periodically(settings, pool, metrics), name="purge")
    try:
        yield
    finally:
        task.cancel()
        # Awaited for its cleanup (the batch's connection goes back to the pool), within bounds.
        await asyncio.wait([task], timeout=settings.database_timeout)


async def _purge_periodically(settings: Settings, pool: Pool, metrics: WorkerMetrics) -> None:
    policy = retention.Retention.from_settings(settings)
    while True:
        await asyncio.sleep(settings.purge_interval * random.uniform(*_JITTER))
        try:
            purged = await asyncio.wait_for(retention.purge(pool, policy), _purge_timeout(settings))
        except Exception as exc:
            log.warning("purge failed: %r; trying again in %s", exc, settings.purge_interval)
            continue
        for table, rows in purged.by_table().items():
            metrics.purged.labels(table).inc(rows)
        if purged.total:
            log.info("%s", purged.summary())


def _purge_timeout(settings: Settings) -> float:
    """A purge may take a while (a million rows is a minute); it must not run forever if the
    database stalls (each statement also has `INGEST_DATABASE_TIMEOUT`)."""
    return max(settings.purge_interval, 600.0)
