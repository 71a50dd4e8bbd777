"""A whole private deployment for fault tests: Postgres, RabbitMQ, a fault proxy in front of each
backend for each kind of process, ingest edges and workers as real processes, and a workflow."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import subprocess
import time
from pathlib import Path
from types import TracebackType
from typing import Any

import aiohttp
import asyncpg

from ingest import migrations, store
from ingest.settings import Settings
from ingest.workflows import Workflow, WorkflowDefinition
from tests.conftest import service_env, spawn
from tests.harness.history import LEDGER
from tests.harness.postgres import PrivatePostgres
from tests.harness.proxy import FaultProxy, free_port
from tests.harness.rabbitmq import PrivateRabbit

#: Short heartbeats and timeouts, so cuts are noticed in seconds.
FAST = {
    "amqp_heartbeat": 2,
    "publish_timeout": 2.0,
    "database_timeout": 3.0,
    "sync_timeout": 2.0,
    "shutdown_timeout": 5.0,
    "workflow_cache_ttl": 60.0,
}


class Cluster:
    def __init__(self, workdir: Path, **overrides: Any) -> None:
        self.workdir = workdir
        self.overrides = overrides
        self.pg = PrivatePostgres(workdir)
        self.rabbit = PrivateRabbit(workdir)
        self.edges: dict[int, subprocess.Popen[bytes]] = {}
        self.workers: dict[int, subprocess.Popen[bytes]] = {}
        self.edge_ports: dict[int, int] = {}
        self._stack = contextlib.AsyncExitStack()
        self.workflow: Workflow | None = None
        self.token = ""
        self._logs = 0

    async def __aenter__(self) -> Cluster:
        stack = self._stack
        await stack.enter_async_context(self.pg)
        await stack.enter_async_context(self.rabbit)
        self.edge_db = await stack.enter_async_context(FaultProxy(self.pg.port))
        self.worker_db = await stack.enter_async_context(FaultProxy(self.pg.port))
        self.edge_amqp = await stack.enter_async_context(FaultProxy(self.rabbit.port))
        self.worker_amqp = await stack.enter_async_context(FaultProxy(self.rabbit.port))
        conn = await asyncpg.connect(self.pg.dsn(), timeout=10)
        try:
            await conn.execute("CREATE DATABASE ingest")
        finally:
            await conn.close()
        conn = await asyncpg.connect(self.pg.dsn("ingest"), timeout=10)
        try:
            await migrations.apply(conn)
        finally:
            await conn.close()
        self.pool = await stack.enter_async_context(
            store.open_pool(self.settings_for(self.pg.port, self.rabbit.port), size=2)
        )
        self.workflow, self.token = await store.create_workflow(
            self.pool, WorkflowDefinition.parse(LEDGER)
        )
        stack.push_async_callback(self._stop_all)
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._stack.aclose()

    def settings_for(self, db_port: int, amqp_port: int, **extra: Any) -> Settings:
        return Settings(
            database_url=f"postgresql://postgres@127.0.0.1:{db_port}/ingest",
            amqp_url=f"amqp://guest:guest@127.0.0.1:{amqp_port}/",
            queue="fault.tasks",
            **{**FAST, **self.overrides, **extra},
        )

    def _log(self, name: str) -> Path:
        self._logs += 1
        return self.workdir / f"{self._logs:02d}-{name}.log"

    # ------------------------------------------------------------------------------- processes

    async def start_edge(self, index: int = 0, **extra: Any) -> str:
        port = self.edge_ports.setdefault(index, free_port())
        settings = self.settings_for(self.edge_db.port, self.edge_amqp.port, port=port, **extra)
        env = service_env(settings)
        self.edges[index] = spawn(["-m", "ingest", "serve"], env, self._log(f"edge{index}"))
        url = f"http://127.0.0.1:{port}"
        await _until_ready(url, self.edges[index])
        return url

    async def start_worker(self, index: int = 0, **extra: Any) -> None:
        settings = self.settings_for(self.worker_db.port, self.worker_amqp.port, **extra)
        self.workers[index] = spawn(
            ["-m", "worker"], service_env(settings), self._log(f"worker{index}")
        )

    def urls(self) -> list[str]:
        return [f"http://127.0.0.1:{self.edge_ports[i]}" for i in sorted(self.edges)]

    @staticmethod
    def kill(process: subprocess.Popen[bytes]) -> None:
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
        process.wait(10)

    @staticmethod
    async def terminate(process: subprocess.Popen[bytes], within: float = 30) -> int:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        return await asyncio.to_thread(process.wait, within)

    async def _stop_all(self) -> None:
        for process in [*self.edges.values(), *self.workers.values()]:
            with contextlib.suppress(Exception):
                await self.terminate(process, 15)
            if process.poll() is None:
                self.kill(process)

    @staticmethod
    async def wait_exit(process: subprocess.Popen[bytes], within: float) -> int:
        """The exit code of a process expected to end by itself (a fault point firing)."""
        deadline = time.monotonic() + within
        while process.poll() is None:
            if time.monotonic() > deadline:
                raise AssertionError(f"pid {process.pid} still runs after {within}s")
            await asyncio.sleep(0.1)
        return process.returncode

    async def stop_workers_for(self, seconds: float) -> None:
        """Stop every worker (SIGTERM), wait, and start them again."""
        indexes = sorted(self.workers)
        for index in indexes:
            await self.terminate(self.workers[index])
        await asyncio.sleep(seconds)
        for index in indexes:
            await self.start_worker(index)

    # -------------------------------------------------------------------------------- probes

    async def consumers(self) -> int:
        """Consumers attached to the task queue, as the broker sees them."""
        out = await self.rabbit.ctl("list_queues", "name", "consumers", "--no-table-headers", "-q")
        for line in out.splitlines():
            name, _, count = line.partition("\t")
            if name.strip() == "fault.tasks":
                return int(count.strip() or 0)
        return 0

    async def wait_consumers(self, at_least: int = 1, within: float = 60) -> None:
        deadline = time.monotonic() + within
        while await self.consumers() < at_least:
            if time.monotonic() > deadline:
                raise AssertionError(f"fewer than {at_least} consumers after {within}s")
            await asyncio.sleep(0.5)

    def logs(self) -> str:
        return "\n".join(
            f"== {path.name}\n" + "\n".join(path.read_text(errors="replace").splitlines()[-15:])
            for path in sorted(self.workdir.glob("*.log"))
        )


async def _until_ready(url: str, process: subprocess.Popen[bytes], within: float = 60) -> None:
    deadline = time.monotonic() + within
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise AssertionError(f"edge exited with {process.returncode}")
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                async with session.get(
                    f"{url}/readyz", timeout=aiohttp.ClientTimeout(total=2)
                ) as r:
                    if r.status == 200:
                        return
            await asyncio.sleep(0.2)
    raise AssertionError(f"{url} not ready within {within}s")
