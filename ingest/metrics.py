"""Prometheus metrics: what every process kind shares. Each process builds its own registry
and passes its metrics down (the edge's are `ingest.edge.metrics`, a worker's `worker.metrics`).

The edge serves them on `/metrics`; a worker on its own small port (INGEST_WORKER_METRICS_PORT).
Names follow Prometheus conventions: `ingest_` prefix, base units, `_total` for counters.

Several edges share one port (`ingest run`, INGEST_EDGES), so a scrape reaches any one of them.
For one scrape to report them all, `ingest run` gives its edges one directory in
`PROMETHEUS_MULTIPROC_DIR` (prometheus-client's multiprocess mode): every edge writes its values
there, and `/metrics` shows them merged, counters and histograms summed, each gauge as its
`multiprocess_mode` says. A process started without that variable keeps its own registry.
"""

from __future__ import annotations

import logging
import os

from prometheus_client import CollectorRegistry, Gauge, generate_latest, multiprocess, values
from prometheus_client.exposition import CONTENT_TYPE_LATEST

log = logging.getLogger(__name__)

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096)
CONTENT_TYPE = CONTENT_TYPE_LATEST


#: Environment variable naming the directory of multiprocess mode (prometheus-client's own name).
MULTIPROCESS_DIR = "PROMETHEUS_MULTIPROC_DIR"


def pool_gauges(registry: CollectorRegistry) -> tuple[Gauge, Gauge]:
    """Database pool usage, the same pair in every process kind (summed over live edges)."""
    size = Gauge(
        "ingest_db_pool_connections",
        "Database pool size.",
        registry=registry,
        multiprocess_mode="livesum",
    )
    idle = Gauge(
        "ingest_db_pool_idle_connections",
        "Idle pool connections.",
        registry=registry,
        multiprocess_mode="livesum",
    )
    return size, idle


def multiprocess_directory() -> str | None:
    """The directory this process's metric values live in, or None for an own registry.

    prometheus-client chose where values live when it was imported, from the environment, and
    every metric made since keeps them there: ask it, so that what is served agrees with that.
    """
    if not getattr(values.ValueClass, "_multiprocess", False):
        return None
    return os.environ.get(MULTIPROCESS_DIR) or None


def served_registry(own: CollectorRegistry) -> CollectorRegistry:
    """What `/metrics` shows: `own`, or in multiprocess mode every process's values merged."""
    directory = multiprocess_directory()
    if directory is None:
        return own
    merged = CollectorRegistry()
    multiprocess.MultiProcessCollector(merged, directory)  # type: ignore[no-untyped-call]
    return merged


def forget_process(pid: int, directory: str) -> None:
    """Drop the live gauges of an exited process (its counters stay: sums must not go back)."""
    multiprocess.mark_process_dead(pid, directory)  # type: ignore[no-untyped-call]


def exposition(registry: CollectorRegistry) -> bytes:
    return generate_latest(registry)
