"""A worker process: owns its pool, its broker connection and its consumer; stops on SIGTERM."""

from __future__ import annotations

import asyncio
import logging
import os
import signal

from ingest.settings import Settings
from ingest.store import open_pool
from worker.consumer import Consumer

log = logging.getLogger(__name__)


async def work(settings: Settings) -> None:
    """Consume until SIGTERM or SIGINT, then finish the batch in hand and return."""
    async with open_pool(settings) as pool:
        consumer = Consumer(settings, pool)
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, consumer.stop)
        try:
            await consumer.run()
        finally:
            for signum in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(signum)
    log.info("worker %d stopped after %d batches", os.getpid(), consumer.batches)


def run(settings: Settings) -> None:
    from ingest.logs import configure_logging, run_async

    configure_logging(settings)
    run_async(work(settings))
