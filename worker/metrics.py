"""A worker's metrics, and the small HTTP server that shows them and its health."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from ingest.metrics import BATCH_BUCKETS, CONTENT_TYPE, LATENCY_BUCKETS, exposition, pool_gauges


class InHand:
    """When the oldest request this worker holds arrived at the edge: from taking a batch off the
    queue until it is concluded (committed and acked, or sent back)."""

    def __init__(self) -> None:
        self._oldest: float | None = None

    def hold(self, arrivals: Iterable[float]) -> None:
        # An arrival of 0 is a request that did not say (older edges): it tells nothing.
        self._oldest = min((at for at in arrivals if at > 0), default=None)

    def release(self) -> None:
        self._oldest = None

    def age(self, now: float) -> float:
        """Seconds the oldest request in hand has waited since its arrival; 0 holding none."""
        return 0.0 if self._oldest is None else max(0.0, now - self._oldest)


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
        self.purged = Counter(
            "ingest_purged_rows_total",
            "Rows this worker's background purge removed, by table (ingest.retention).",
            ["table"],
            registry=r,
        )
        self.pool_size, self.pool_idle = pool_gauges(r)
        self.in_hand = InHand()
        # Read at each scrape, so the age grows while a batch is stuck (database down, retries).
        Gauge(
            "ingest_oldest_pending_request_age_seconds",
            "Age (since its arrival at the edge) of the oldest task request this worker has taken"
            " from the queue and not yet concluded; 0 while it holds none.",
            registry=r,
        ).set_function(lambda: self.in_hand.age(time.time()))


def _answer(
    path: str, registry: CollectorRegistry, healthy: Callable[[], bool]
) -> tuple[str, bytes, str]:
    """Status line, body and content type of the answer to GET `path`."""
    if path.startswith("/metrics"):
        return "200 OK", exposition(registry), CONTENT_TYPE
    if path.startswith("/healthz"):
        if healthy():
            return "200 OK", b'{"status":"ok"}', "application/json"
        return "503 Service Unavailable", b'{"status":"down"}', "application/json"
    return "404 Not Found", b'{"error":"not_found"}', "application/json"


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
            status, body, kind = _answer(path, registry, healthy)
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
