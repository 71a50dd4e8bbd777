"""The one settings object: read from the environment once, then passed down explicitly."""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AnyUrl, BeforeValidator, Field, PlainSerializer, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86_400}
_DURATION = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([smhd])\s*")


def parse_duration(value: object) -> float:
    """Seconds from a number and a unit (`90s`, `15m`, `12h`, `7d`). Text without a unit is
    refused: `7` meant as a week would purge everything older than seven seconds. (A number
    given in code is seconds.)"""
    if isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    elif isinstance(value, str) and (match := _DURATION.fullmatch(value)):
        seconds = float(match[1]) * _UNITS[match[2]]
    else:
        raise ValueError("must be a number and a unit: 90s, 15m, 12h or 7d")
    if not 0 < seconds < 100 * 365 * 86_400:
        raise ValueError("must be a positive duration under 100 years")
    return seconds


def format_duration(seconds: float) -> str:
    """The shortest exact way to write `seconds` with one unit (`7d`, `36h`, `90s`)."""
    for unit, size in sorted(_UNITS.items(), key=lambda item: -item[1]):
        if seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds}s"


#: Seconds, written in settings and the README as a number and a unit.
Duration = Annotated[
    float, BeforeValidator(parse_duration), PlainSerializer(format_duration, return_type=str)
]


class Settings(BaseSettings):
    """Every knob of ingest. Each field is an `INGEST_<NAME>` environment variable."""

    model_config = SettingsConfigDict(env_prefix="INGEST_", frozen=True, extra="ignore")

    database_url: str = Field(
        "postgresql://postgres@127.0.0.1:5432/ingest", description="Postgres DSN (asyncpg form)."
    )
    amqp_url: str = Field("amqp://guest:guest@127.0.0.1:5672/", description="RabbitMQ URL.")
    host: str = Field("127.0.0.1", description="Address the HTTP edge binds to.")
    port: int = Field(default=8080, ge=0, le=65535, description="Port the HTTP edge binds to.")
    public_url: str = Field(
        "",
        description="Base of every URL the service hands out (Task URL, status URL, import URL).",
    )
    admin_token: str = Field(
        "", description="Bearer token for the admin API; empty keeps the admin API closed."
    )
    sync_timeout: float = Field(
        default=5.0,
        ge=0,
        le=60,
        description="Seconds a task request waits for its worker before answering 202.",
    )
    edges: int = Field(
        default=1,
        ge=1,
        le=64,
        description="Edge processes started by `ingest run` (sharing the port by SO_REUSEPORT); "
        "set it to the number of edges where they are started otherwise: while Postgres cannot "
        "answer the rate limit, each edge takes this share of it.",
    )
    workers: int = Field(
        default=1,
        ge=0,
        le=64,
        description=(
            "Worker processes started by `ingest run`. One keeps pace with an edge (batches grow"
            " with load); add workers with cores, and an edge per core first."
        ),
    )
    queue: str = Field(
        default="ingest.tasks",
        min_length=1,
        max_length=200,
        description="Name of the durable quorum queue (and exchange) that carries task requests.",
    )
    queue_max_length: int = Field(
        default=200_000,
        ge=1,
        description="Messages the task queue holds before publishes are rejected (503).",
    )
    delivery_limit: int = Field(
        default=10,
        ge=1,
        le=1000,
        description="Deliveries of one message before it is dead-lettered.",
    )
    publish_timeout: float = Field(
        default=5.0,
        gt=0,
        le=60,
        description="Seconds the edge waits for a publisher confirm before answering 503.",
    )
    publish_batch_max: int = Field(
        default=256,
        ge=1,
        le=10_000,
        description="Task requests the edge carries in one broker message at most.",
    )
    publish_batch_bytes: int = Field(
        default=1_048_576,
        ge=1024,
        description="Bytes of task bodies the edge carries in one broker message at most.",
    )
    publish_concurrency: int = Field(
        default=8,
        ge=1,
        le=256,
        description="Broker messages the edge has in flight (awaiting confirms) at once.",
    )
    publish_backlog: int = Field(
        default=10_000,
        ge=1,
        description="Task requests waiting to be published before the edge answers 503.",
    )
    max_body_bytes: int = Field(
        default=1_048_576, ge=1024, description="Largest request body the edge reads, in bytes."
    )
    batch_max_items: int = Field(
        default=1000,
        ge=1,
        le=10_000,
        description="Task bodies one batch import (`POST .../tasks/batch`) holds at most; more is "
        "a 413.",
    )
    worker_prefetch: int = Field(
        default=64,
        ge=1,
        le=65_535,
        description="Unacknowledged messages a worker holds (AMQP prefetch).",
    )
    worker_batch_max: int = Field(
        default=500,
        ge=1,
        le=10_000,
        description="Task requests a worker applies in one transaction at most.",
    )
    worker_batch_linger: float = Field(
        default=0.0,
        ge=0,
        le=1,
        description="Seconds a worker waits to fill a batch once it has one message.",
    )
    database_timeout: float = Field(
        default=10.0, gt=0, le=300, description="Seconds any single database statement may take."
    )
    database_pool_size: int = Field(
        default=10, ge=1, le=200, description="Connections in each process's database pool."
    )
    amqp_heartbeat: int = Field(
        default=30,
        ge=0,
        le=600,
        description="AMQP heartbeat in seconds (short values notice dead connections sooner).",
    )
    workflow_cache_ttl: float = Field(
        default=2.0,
        ge=0,
        le=3600,
        description="Seconds an edge keeps a workflow (by token) or a source cached at most; a "
        "change is heard within a second (Postgres NOTIFY), this bounds it when one is missed.",
    )
    shutdown_timeout: float = Field(
        default=15.0, gt=0, le=600, description="Seconds SIGTERM gives in-flight work to finish."
    )
    secret_key: str = Field(
        "",
        description="Secret signing request ids in status URLs; empty: one kept in the database.",
    )
    rate_limit: float = Field(
        default=0.0,
        ge=0,
        le=1_000_000,
        description="Tasks per second a workflow may send, shared by every edge process; 0: no "
        "limit.",
    )
    rate_burst: int = Field(
        default=0,
        ge=0,
        le=1_000_000_000,
        description="Tasks a workflow may send at once, shared by every edge process; 0: one "
        "second's worth.",
    )
    body_read_timeout: float = Field(
        default=30.0, gt=0, le=600, description="Seconds a client has to send its request body."
    )
    header_read_timeout: float = Field(
        default=10.0,
        gt=0,
        le=600,
        description="Seconds a client has to send a request's line and headers once it starts "
        "one; a slower one is answered 408 and its connection closed.",
    )
    idle_timeout: float = Field(
        default=75.0,
        gt=0,
        le=3600,
        description="Seconds a connection may sit idle between requests (or before its first) "
        "before the edge closes it. Keep it above a load balancer's own idle timeout.",
    )
    max_connections: int = Field(
        default=4096,
        ge=1,
        description="Client connections each edge process holds at most (also bounded by its "
        "open-file limit); past it the connection idle the longest is closed to make room.",
    )
    max_body_bytes_in_flight: int = Field(
        default=16_777_216,
        ge=1024,
        description="Bytes of request bodies each edge process holds at once, counted as they "
        "arrive (decoded) and held until the request is answered; past it a request whose next "
        "bytes do not fit is answered 503 with Retry-After at once.",
    )
    fault_points: str = Field(
        "", description="Test-only crash points for the fault suite; leave empty in production."
    )
    worker_metrics_port: int = Field(
        default=0,
        ge=0,
        le=65535,
        description="Port a worker serves /metrics and /healthz on (0: off; `ingest run` adds n).",
    )
    worker_metrics_host: str = Field(
        "127.0.0.1", description="Address a worker's metrics port binds to."
    )
    health_file: str = Field(
        "",
        description="File a worker touches every second while its consumer is attached.",
    )
    result_retention: Duration = Field(
        default="7d",
        description="Age at which request results are purged (their status URLs then answer "
        "404); results of requests with an Idempotency-Key or a delivery id are kept at least "
        "24h whatever this says.",
        validate_default=True,
    )
    dead_letter_retention: Duration = Field(
        default="30d", description="Age at which dead letters are purged.", validate_default=True
    )
    rejection_retention: Duration = Field(
        default="7d",
        description="Age at which recorded rejections are purged.",
        validate_default=True,
    )
    purge_interval: Duration = Field(
        default="5m",
        description="Time between two purges by a worker (each worker purges in the background).",
        validate_default=True,
    )
    log_level: str = Field("INFO", description="Log level (DEBUG, INFO, WARNING, ERROR).")

    log_format: str = Field("json", description="Log format: json (one object a line) or text.")
    access_log: bool = Field(True, description="Log every HTTP request (tokens redacted).")

    @field_validator("log_format")
    @classmethod
    def _known_format(cls, value: str) -> str:
        if value not in ("json", "text"):
            raise ValueError("must be json or text")
        return value

    @field_validator("database_url")
    @classmethod
    def _postgres_dsn(cls, value: str) -> str:
        if not value.startswith(("postgres://", "postgresql://")):
            raise ValueError("must be a postgresql:// URL")
        return value

    @field_validator("amqp_url")
    @classmethod
    def _amqp_dsn(cls, value: str) -> str:
        if not value.startswith(("amqp://", "amqps://")):
            raise ValueError("must be an amqp:// URL")
        return value

    @field_validator("public_url")
    @classmethod
    def _http_base(cls, value: str) -> str:
        if value:
            AnyUrl(value)
            if not value.startswith(("http://", "https://")):
                raise ValueError("must be an http:// or https:// URL")
        return value.rstrip("/")

    @field_validator("log_level")
    @classmethod
    def _known_level(cls, value: str) -> str:
        level = value.upper()
        if level not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
            raise ValueError("must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL")
        return level

    @property
    def base_url(self) -> str:
        """Base of handed-out URLs: `public_url`, or the bound address when unset."""
        return self.public_url or f"http://{self.host}:{self.port}"

    @property
    def dead_letter_queue(self) -> str:
        return f"{self.queue}.dead"


def settings_table() -> str:
    """The README's settings table, generated from the class so the two cannot drift."""
    rows = ["| variable | default | meaning |", "|---|---|---|"]
    for name, spec in Settings.model_fields.items():
        default = spec.default
        shown = f"`{default}`" if default not in ("", None) else "(empty)"
        rows.append(f"| `INGEST_{name.upper()}` | {shown} | {spec.description} |")
    return "\n".join(rows)
