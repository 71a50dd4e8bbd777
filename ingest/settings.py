"""The one settings object: read from the environment once, then passed down explicitly."""

from __future__ import annotations

from pydantic import AnyUrl, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Every knob of ingest. Each field is an `INGEST_<NAME>` environment variable."""

    model_config = SettingsConfigDict(env_prefix="INGEST_", frozen=True, extra="ignore")

    #: Postgres DSN (asyncpg form).
    database_url: str = "postgresql://postgres@127.0.0.1:5432/ingest"
    #: RabbitMQ URL.
    amqp_url: str = "amqp://guest:guest@127.0.0.1:5672/"
    #: Address the HTTP edge binds to.
    host: str = "127.0.0.1"
    #: Port the HTTP edge binds to.
    port: int = Field(default=8080, ge=0, le=65535)
    #: Base of every URL the service hands out (Task URL, status URL, import URL).
    public_url: str = ""
    #: Bearer token for the admin API; empty keeps the admin API closed.
    admin_token: str = ""
    #: Seconds a task request waits for its worker before answering 202.
    sync_timeout: float = Field(default=5.0, ge=0, le=60)
    #: Edge processes started by `ingest run` (they share the port with SO_REUSEPORT).
    edges: int = Field(default=1, ge=1, le=64)
    #: Worker processes started by `ingest run`.
    workers: int = Field(default=2, ge=0, le=64)
    #: Name of the durable quorum queue (and exchange) that carries task requests.
    queue: str = Field(default="ingest.tasks", min_length=1, max_length=200)
    #: Messages the task queue holds before publishes are rejected (503).
    queue_max_length: int = Field(default=200_000, ge=1)
    #: Deliveries of one message before it is dead-lettered.
    delivery_limit: int = Field(default=10, ge=1, le=1000)
    #: Seconds the edge waits for a publisher confirm before answering 503.
    publish_timeout: float = Field(default=5.0, gt=0, le=60)
    #: Task requests the edge carries in one broker message at most.
    publish_batch_max: int = Field(default=256, ge=1, le=10_000)
    #: Bytes of task bodies the edge carries in one broker message at most.
    publish_batch_bytes: int = Field(default=1_048_576, ge=1024)
    #: Broker messages the edge has in flight (awaiting confirms) at once.
    publish_concurrency: int = Field(default=8, ge=1, le=256)
    #: Task requests waiting to be published before the edge answers 503.
    publish_backlog: int = Field(default=10_000, ge=1)
    #: Largest request body the edge reads, in bytes.
    max_body_bytes: int = Field(default=1_048_576, ge=1024)
    #: Unacknowledged messages a worker holds (AMQP prefetch).
    worker_prefetch: int = Field(default=64, ge=1, le=65_535)
    #: Task requests a worker applies in one transaction at most.
    worker_batch_max: int = Field(default=500, ge=1, le=10_000)
    #: Seconds a worker waits to fill a batch once it has one message.
    worker_batch_linger: float = Field(default=0.002, ge=0, le=1)
    #: Seconds any single database statement may take.
    database_timeout: float = Field(default=10.0, gt=0, le=300)
    #: Connections in each process's database pool.
    database_pool_size: int = Field(default=10, ge=1, le=200)
    #: AMQP heartbeat in seconds (short values notice dead connections sooner).
    amqp_heartbeat: int = Field(default=30, ge=0, le=600)
    #: Seconds a workflow read by token stays cached at the edge.
    workflow_cache_ttl: float = Field(default=2.0, ge=0, le=3600)
    #: Seconds SIGTERM gives in-flight work to finish.
    shutdown_timeout: float = Field(default=15.0, gt=0, le=600)
    #: Secret that signs request ids in status URLs; empty means one kept in the database.
    secret_key: str = ""
    #: Log level (DEBUG, INFO, WARNING, ERROR).
    log_level: str = "INFO"

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
