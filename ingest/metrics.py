"""Prometheus metrics: what every process kind shares. Each process builds its own registry
and passes its metrics down (the edge's are `ingest.edge.metrics`, a worker's `worker.metrics`).

The edge serves them on `/metrics`; a worker on its own small port (INGEST_WORKER_METRICS_PORT).
Names follow Prometheus conventions: `ingest_` prefix, base units, `_total` for counters.
"""

from __future__ import annotations

import logging

from prometheus_client import CollectorRegistry, Gauge, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

log = logging.getLogger(__name__)

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096)
CONTENT_TYPE = CONTENT_TYPE_LATEST


def pool_gauges(registry: CollectorRegistry) -> tuple[Gauge, Gauge]:
    """Database pool usage, the same pair in every process kind."""
    size = Gauge("ingest_db_pool_connections", "Database pool size.", registry=registry)
    idle = Gauge("ingest_db_pool_idle_connections", "Idle pool connections.", registry=registry)
    return size, idle


def exposition(registry: CollectorRegistry) -> bytes:
    return generate_latest(registry)
