"""The edge's metrics, served on its `/metrics`.

Under `ingest run` the edges' values are merged (see `ingest.metrics`): what each edge counts is
summed; a gauge of its own (its backlog, its pool) is summed over the live edges; a gauge every
edge reads alike from the broker or the database (`ingest.edge.gauges`) is the newest reading,
never a sum.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from ingest.metrics import BATCH_BUCKETS, LATENCY_BUCKETS, pool_gauges, served_registry

#: Methods counted under their own name; any other is `other`.
_METHODS = frozenset(
    ["GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"]
)


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
            "ingest_publish_backlog_requests",
            "Task requests waiting to be published.",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.pool_size, self.pool_idle = pool_gauges(r)
        self.queue_ready = Gauge(
            "ingest_queue_depth_messages",
            "Messages ready in the task queue, as the broker last told (NaN: it could not say).",
            registry=r,
            multiprocess_mode="livemostrecent",
        )
        self.queue_consumers = Gauge(
            "ingest_queue_consumers",
            "Consumers (workers) attached to the task queue, as the broker last told.",
            registry=r,
            multiprocess_mode="livemostrecent",
        )
        self.dead_letters = Gauge(
            "ingest_dead_letters_stored",
            "Dead letters kept in Postgres, not yet replayed or purged (counted up to 100,000).",
            registry=r,
            multiprocess_mode="livemostrecent",
        )
        self.rate_limit_local = Gauge(
            "ingest_rate_limit_local_share",
            "1 while this edge cannot reach the shared rate limit in Postgres and takes its share "
            "(1/INGEST_EDGES) locally; summed over the edges.",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.rejections = Counter(
            "ingest_rejections_total",
            "Rejected task and hook requests (4xx), by status and error: every one, whether the"
            " ledger recorded it or not.",
            ["status", "error"],
            registry=r,
        )
        self.rejections_dropped = Counter(
            "ingest_rejections_dropped_total",
            "Rejections not recorded (the database was unreachable or the ledger's queue full).",
            registry=r,
        )
        self.rejections_unrecorded = Counter(
            "ingest_rejections_unrecorded_total",
            "Rejections the ledger left out by design: over their workflow's or source's budget"
            " (a flood is kept as a sample), or a 429 soon after one recorded.",
            registry=r,
        )
        # Labelled children, bound once: `labels()` checks and joins its arguments on every call.
        self._answered: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}
        #: What `/metrics` shows: this registry, or every edge's values under `ingest run`.
        self.exposed = served_registry(r)

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
