"""Prometheus metrics. Each process builds its own registry and passes the metrics down.

The edge serves them on `/metrics`; a worker on its own small port (INGEST_WORKER_METRICS_PORT).
Names follow Prometheus conventions: `ingest_` prefix, base units, `_total` for counters.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

log = logging.getLogger(__name__)

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096)
CONTENT_TYPE = CONTENT_TYPE_LATEST
#: Methods counted under their own name; any other is `other`.
_METHODS = frozenset(
    ["GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"]
)


def _pool_gauges(registry: CollectorRegistry) -> tuple[Gauge, Gauge]:
    """Database pool usage, the same pair in every process kind."""
    size = Gauge("ingest_db_pool_connections", "Database pool size.", registry=registry)
    idle = Gauge("ingest_db_pool_idle_connections", "Idle pool connections.", registry=registry)
    return size, idle


class EdgeMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "ingest_http_requests_total",
            "HTTP requests answered.",
            ["route", "method", "status"],
            registry=r,
        )
        self.latency = Histogram(
            "ingest_http_request_duration_seconds",
            "Time to answer an HTTP request.",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.accept = Histogram(
            "ingest_accept_duration_seconds",
            "Time from a task request's arrival to its confirm.",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.sync_wait = Histogram(
            "ingest_sync_wait_seconds",
            "Time a synchronous request waited for its worker.",
            ["result"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.sync_replied = self.sync_wait.labels("replied")
        self.sync_timed_out = self.sync_wait.labels("timeout")
        self.confirms = Counter(
            "ingest_publish_confirms_total", "Broker messages confirmed.", registry=r
        )
        self.publish_failures = Counter(
            "ingest_publish_failures_total",
            "Broker messages not confirmed (nack, return, timeout).",
            ["reason"],
            registry=r,
        )
        self.publish_batch = Histogram(
            "ingest_publish_batch_requests",
            "Task requests carried per broker message.",
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        self.backlog = Gauge(
            "ingest_publish_backlog_requests", "Task requests waiting to be published.", registry=r
        )
        self.pool_size, self.pool_idle = _pool_gauges(r)
        # Labelled children, bound once: `labels()` checks and joins its arguments on every call.
        self._answered: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}

    def answered(self, route: str, method: str, status: int, seconds: float) -> None:
        """Count and time one HTTP request by its route pattern, method and status."""
        # Methods are the client's to choose: any other than HTTP's own counts as one, so that
        # made-up methods cannot grow the series (or this cache) without bound.
        key = (route, method if method in _METHODS else "other", status)
        children = self._answered.get(key)
        if children is None:
            children = self._answered[key] = (
                self.requests.labels(*key[:2], str(status)),
                self.latency.labels(route),
            )
        count, latency = children
        count.inc()
        latency.observe(seconds)


class WorkerMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.batch = Histogram(
            "ingest_worker_batch_requests",
            "Task requests applied per transaction.",
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        self.batch_seconds = Histogram(
            "ingest_worker_batch_duration_seconds",
            "Time to apply and commit one batch.",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.outcomes = Counter(
            "ingest_task_outcomes_total",
            "Task requests finished, by outcome.",
            ["outcome"],
            registry=r,
        )
        self.end_to_end = Histogram(
            "ingest_end_to_end_seconds",
            "Time from a request's arrival at the edge to its commit.",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.retries = Counter(
            "ingest_worker_retries_total",
            "Batches retried, by kind (transient, race, isolate).",
            ["kind"],
            registry=r,
        )
        self.dead_letters = Counter(
            "ingest_dead_letters_total",
            "Requests of messages the broker dead-lettered, recorded (a worker's own verdicts"
            " count as outcome dead).",
            registry=r,
        )
        self.queue_depth = Gauge(
            "ingest_queue_depth_messages", "Messages ready in the task queue.", registry=r
        )
        self.consuming = Gauge(
            "ingest_worker_consuming", "1 while the consumer is attached to the queue.", registry=r
        )
        self.pool_size, self.pool_idle = _pool_gauges(r)


def exposition(registry: CollectorRegistry) -> bytes:
    return generate_latest(registry)


@contextlib.asynccontextmanager
async def serve_metrics(
    host: str, port: int, registry: CollectorRegistry, healthy: Callable[[], bool]
) -> AsyncIterator[None]:
    """A tiny HTTP server: `/metrics` and `/healthz` (200 while `healthy()`), nothing else.

    Workers do not load aiohttp, so this speaks just enough HTTP/1.0 for Prometheus and probes.
    """

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await asyncio.wait_for(reader.readline(), 5)
            path = line.split()[1].decode() if len(line.split()) > 1 else "/"
            if path.startswith("/metrics"):
                status, body, kind = "200 OK", exposition(registry), CONTENT_TYPE
            elif path.startswith("/healthz"):
                ok = healthy()
                status = "200 OK" if ok else "503 Service Unavailable"
                body, kind = (
                    (b'{"status":"ok"}' if ok else b'{"status":"down"}'),
                    "application/json",
                )
            else:
                status, body, kind = "404 Not Found", b'{"error":"not_found"}', "application/json"
            head = (
                f"HTTP/1.0 {status}\r\nContent-Type: {kind}\r\nContent-Length: {len(body)}\r\n\r\n"
            )
            writer.write(head.encode() + body)
            await asyncio.wait_for(writer.drain(), 5)
        except (TimeoutError, OSError, UnicodeDecodeError):
            pass
        finally:
            writer.close()

    if port == 0:
        yield
        return
    server = await asyncio.start_server(handle, host, port, reuse_address=True)
    try:
        yield
    finally:
        server.close()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(server.wait_closed(), 5)
