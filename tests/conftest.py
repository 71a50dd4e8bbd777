"""Fixtures: every test gets its own database (cloned from a migrated template) and its own queue
names on the real local RabbitMQ, and removes both afterwards."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aio_pika
import asyncpg
import pytest
from aiohttp.test_utils import TestClient, TestServer

from ingest import migrations, store
from ingest.edge.app import create_app
from ingest.settings import Settings
from ingest.workflows import WorkflowDefinition
from worker.consumer import Consumer

ROOT = Path(__file__).resolve().parent.parent
ADMIN_DSN = os.environ.get("INGEST_TEST_ADMIN_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")
AMQP_URL = os.environ.get("INGEST_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
TEMPLATE = f"ingest_template_{os.getpid()}"

SALES = {
    "name": "Sales pipeline",
    "fields": [
        {"name": "Company ID", "type": "text", "required": True},
        {"name": "Company Name", "type": "text", "required": True},
        {"name": "Number of Employees", "type": "number"},
        {"name": "Contract Value", "type": "currency"},
        {"name": "Expected Close Date", "type": "date"},
        {"name": "International?", "type": "checkbox"},
    ],
    "unique_id": "Company ID",
    "stages": ["Not Started", "In Progress", "Done"],
    "members": ["user@example.com"],
}

#: The request of Flowdash's "Import from API" documentation.
SEED_REQUEST = {
    "Company ID": "42",
    "Company Name": "Acme Corp",
    "Number of Employees": 10,
    "Contract Value": 10000,
    "Expected Close Date": "2020-01-31",
    "International?": False,
    "Stage": "In Progress",
    "Assigned To": "user@example.com",
}
#: Flowdash's documented answer to it (its `Task URL` aside).
SEED_RESPONSE = {
    "Stage": "In Progress",
    "Assigned To": "user@example.com",
    "Company ID": "42",
    "Company Name": "Acme Corp",
    "Number of Employees": "10",
    "Contract Value": "10000",
    "International?": False,
    "Expected Close Date": "2020-01-31",
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _dsn(database: str) -> str:
    return ADMIN_DSN.rsplit("/", 1)[0] + "/" + database


async def _admin(sql: str) -> None:
    conn = await asyncpg.connect(ADMIN_DSN, timeout=10)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@pytest.fixture(scope="session")
def template_database() -> Iterator[str]:
    """One migrated database per test session; every test clones it."""

    async def create() -> None:
        await _admin(f'DROP DATABASE IF EXISTS "{TEMPLATE}"')
        await _admin(f'CREATE DATABASE "{TEMPLATE}"')
        conn = await asyncpg.connect(_dsn(TEMPLATE), timeout=10)
        try:
            await migrations.apply(conn)
        finally:
            await conn.close()

    asyncio.run(create())
    yield TEMPLATE
    asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{TEMPLATE}" WITH (FORCE)'))


async def delete_topology(settings: Settings) -> None:
    connection = await aio_pika.connect(AMQP_URL, timeout=10)
    try:
        channel = await connection.channel()
        for queue in (settings.queue, settings.dead_letter_queue):
            await channel.queue_delete(queue)
        for exchange in (settings.queue, f"{settings.queue}.dead"):
            await channel.exchange_delete(exchange)
    finally:
        await connection.close()


@pytest.fixture
async def settings(template_database: str) -> AsyncIterator[Settings]:
    """Settings naming a fresh database and fresh queues; both are removed afterwards."""
    name = f"t{uuid.uuid4().hex[:12]}"
    await _admin(f'CREATE DATABASE "ingest_{name}" TEMPLATE "{template_database}"')
    port = free_port()
    settings = Settings(
        database_url=_dsn(f"ingest_{name}"),
        amqp_url=AMQP_URL,
        queue=f"test.{name}.tasks",
        port=port,
        public_url=f"http://127.0.0.1:{port}",
        admin_token="admin-secret",
        sync_timeout=5.0,
        publish_timeout=5.0,
        database_pool_size=4,
        shutdown_timeout=5.0,
    )
    yield settings
    await delete_topology(settings)
    await _admin(f'DROP DATABASE IF EXISTS "ingest_{name}" WITH (FORCE)')


@pytest.fixture
async def pool(settings: Settings) -> AsyncIterator[asyncpg.Pool]:
    async with store.open_pool(settings, size=2) as pool:
        yield pool


@pytest.fixture
def make_workflow(pool: asyncpg.Pool) -> Any:
    """Create a workflow in the test's database; returns (workflow, token)."""

    async def make(definition: dict[str, Any] | None = None) -> tuple[Any, str]:
        return await store.create_workflow(pool, WorkflowDefinition.parse(definition or SALES))

    return make


@pytest.fixture
async def client(settings: Settings) -> AsyncIterator[TestClient[Any, Any]]:
    """The HTTP edge, in process, on the port its settings name."""
    server = TestServer(create_app(settings), host="127.0.0.1", port=settings.port)
    async with TestClient(server) as client:
        yield client


class WorkerHandle:
    """A worker running in this event loop; start and stop it at will."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._task: asyncio.Task[None] | None = None
        self._consumer: Consumer | None = None
        self._stack = contextlib.AsyncExitStack()

    async def start(self) -> None:
        pool = await self._stack.enter_async_context(store.open_pool(self.settings, size=2))
        self._consumer = Consumer(self.settings, pool)
        self._task = asyncio.create_task(self._consumer.run())
        await asyncio.wait_for(self._consumer.consuming.wait(), 10)

    @property
    def metrics(self) -> Any:
        """The running consumer's metrics (`worker.metrics.WorkerMetrics`)."""
        if self._consumer is None:
            raise RuntimeError("the worker is not running: start() it first")
        return self._consumer.metrics

    async def drain(self, within: float = 10.0) -> None:
        """Return once the task queue has no ready message and the worker holds no delivery (every
        result it will write is committed); raise TimeoutError if that takes over `within`."""
        if self._consumer is None:
            raise RuntimeError("the worker is not running: start() it first")
        await self._consumer.drain(within)

    async def stop(self) -> None:
        if self._consumer is not None and self._task is not None:
            self._consumer.stop()
            await asyncio.wait_for(self._task, 10)
        self._consumer = self._task = None
        await self._stack.aclose()


@pytest.fixture
async def worker(settings: Settings) -> AsyncIterator[WorkerHandle]:
    handle = WorkerHandle(settings)
    await handle.start()
    yield handle
    await handle.stop()


@pytest.fixture
async def consumer(settings: Settings) -> AsyncIterator[Consumer]:
    async with store.open_pool(settings, size=2) as pool:
        running = Consumer(settings, pool)
        task = asyncio.create_task(running.run())
        await asyncio.wait_for(running.consuming.wait(), 10)
        yield running
        running.stop()
        await asyncio.wait_for(task, 10)


@pytest.fixture
async def stopped_worker(settings: Settings) -> AsyncIterator[WorkerHandle]:
    handle = WorkerHandle(settings)
    yield handle
    await handle.stop()


def service_env(settings: Settings, **extra: str) -> dict[str, str]:
    """The environment that gives a child process these settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("INGEST_")}
    for name, value in settings.model_dump().items():
        env[f"INGEST_{name.upper()}"] = str(value)
    env.update(extra)
    return env


def cli(settings: Settings, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """Run `python -m ingest ARGS` with these settings (and `env` on top); however it ends."""
    return subprocess.run(
        [sys.executable, "-m", "ingest", *args],
        env=service_env(settings, **env),
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )


def run_cli(settings: Settings, *args: str, **env: str) -> str:
    """Run `python -m ingest ARGS` with these settings; its standard output (raises
    CalledProcessError unless it exits 0)."""
    done = cli(settings, *args, **env)
    done.check_returncode()
    return done.stdout


def spawn(argv: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as handle:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(
            [sys.executable, *argv], env=env, stdout=handle, stderr=subprocess.STDOUT, cwd=ROOT
        )


async def wait_until(predicate: Any, within: float = 15.0, interval: float = 0.1) -> Any:
    deadline = time.monotonic() + within
    while True:
        value = await predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {within}s")
        await asyncio.sleep(interval)


async def publish_batches(settings: Settings, *batches: list[Any]) -> None:
    """Publish task batches straight to the task exchange, one broker message each."""
    from ingest.messages import TaskBatch

    connection = await aio_pika.connect(settings.amqp_url)
    async with connection:
        channel = await connection.channel()
        exchange = await channel.get_exchange(settings.queue)
        for batch in batches:
            message = aio_pika.Message(TaskBatch(tuple(batch)).encode(), delivery_mode=2)
            await exchange.publish(message, routing_key=settings.queue)
