"""Postgres and RabbitMQ for the bench, and the servers under test (started, probed, stopped)."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Coroutine, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, TypeVar

import aio_pika
import asyncpg
from machine import cmdline, descendants
from plan import (
    ADMIN_DSN,
    AMQP_URL,
    DATABASE,
    GITHUB_EXAMPLE,
    INGEST_TABLES,
    PUBLISH_BATCH,
    QUEUE,
    ROOT,
    SALES,
)

T = TypeVar("T")


def dsn(database: str) -> str:
    return ADMIN_DSN.rsplit("/", 1)[0] + "/" + database


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# Postgres and RabbitMQ, driven from this synchronous script through one private event loop.


class Services:
    """The bench database (one connection) and the admin chores around it."""

    def __init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._conn: asyncpg.Connection | None = None
        self.warnings: list[str] = []

    def run(self, coroutine: Coroutine[Any, Any, T], timeout: float = 60) -> T:
        return self._loop.run_until_complete(asyncio.wait_for(coroutine, timeout))

    def connect(self) -> None:
        self._conn = self.run(asyncpg.connect(dsn(DATABASE), timeout=10))

    def close(self) -> None:
        if self._conn is not None:
            self.run(self._conn.close())
        self._loop.close()

    def value(self, query: str) -> Any:
        assert self._conn is not None
        return self.run(self._conn.fetchval(query))

    def execute(self, query: str) -> None:
        assert self._conn is not None
        self.run(self._conn.execute(query))

    def count(self, table: str) -> int:
        return int(self.value(f"SELECT count(*) FROM {table}"))

    def fresh(self) -> None:
        """No bench database and no bench queue left from an earlier run."""
        self.run(_drop_database())
        self.run(_delete_queue())

    def clean_ingest(self) -> None:
        present = [t for t in INGEST_TABLES if self.value(f"SELECT to_regclass('{t}') IS NOT NULL")]
        self.execute(f"TRUNCATE {', '.join(present)} CASCADE")
        self.execute("CHECKPOINT")

    def clean_naive(self) -> None:
        self.execute("TRUNCATE naive_tasks")
        self.execute("CHECKPOINT")

    def wait_drained(self, table: str, expected: int, stall: float = 5) -> int:
        """Rows in `table` once it holds `expected`, or once it has not grown for `stall` s."""
        last, grown_at = -1, time.monotonic()
        while True:
            rows = self.count(table)
            if rows >= expected:
                return rows
            if rows != last:
                last, grown_at = rows, time.monotonic()
            elif time.monotonic() - grown_at > stall:
                self.warnings.append(f"{table} stopped growing at {rows:,} of {expected:,} rows")
                print(f"  warning: {self.warnings[-1]}", flush=True)
                return rows
            time.sleep(0.2)


async def _drop_database() -> None:
    conn = await asyncpg.connect(ADMIN_DSN, timeout=10)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{DATABASE}" WITH (FORCE)')
    finally:
        await conn.close()


async def _delete_queue() -> None:
    connection = await aio_pika.connect(AMQP_URL, timeout=10)
    async with connection:
        channel = await connection.channel()
        await channel.queue_delete(QUEUE)


# The servers under test.


def http_get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, ""
    except OSError:
        return 0, ""


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


@contextmanager
def serving(
    command: list[str],
    ready: Callable[[], bool],
    env: dict[str, str] | None = None,
    log: IO[bytes] | None = None,
) -> Iterator[subprocess.Popen[bytes]]:
    """A server process, yielded once `ready` says so, stopped by SIGTERM on the way out."""
    process = subprocess.Popen(command, env=env, cwd=ROOT, stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + 60
        while not ready():
            if process.poll() is not None:
                raise RuntimeError(f"{' '.join(command)} exited with {process.returncode}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{' '.join(command)} not ready in 60 s")
            time.sleep(0.1)
        yield process
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(40)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def service_env(
    port: int, edges: int | None, workers: int | None, tuned: Sequence[str] = ()
) -> dict[str, str]:
    """The environment of `make run` (no INGEST_* from the caller) plus what the bench needs, and
    the `--set` settings of a tuned run (quote its figures only beside a default run's)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("INGEST_")}
    env.update(
        INGEST_DATABASE_URL=dsn(DATABASE),
        INGEST_AMQP_URL=AMQP_URL,
        INGEST_QUEUE=QUEUE,
        INGEST_PORT=str(port),
    )
    if edges is not None:
        env["INGEST_EDGES"] = str(edges)
    if workers is not None:
        env["INGEST_WORKERS"] = str(workers)
    for setting in tuned:
        name, _, value = setting.partition("=")
        env[name] = value
    return env


def prepare(env: dict[str, str]) -> str:
    """Migrate the fresh bench database and create the seed workflow; returns its token."""
    ingest_cli(env, "migrate")
    return str(json.loads(ingest_cli(env, "workflow", "create", str(SALES)))["token"])


@dataclass(frozen=True)
class Hook:
    """A GitHub source for signed deliveries: its id, a delivery's body file and its signature."""

    source_id: str
    body_file: Path
    signature: str


def prepare_hook(env: dict[str, str]) -> Hook:
    """The GitHub example's workflow and source, and its sample delivery signed as GitHub signs it
    (one signature serves every request: the delivery id, which varies, is not signed)."""
    workflow = json.loads(
        ingest_cli(env, "workflow", "create", str(GITHUB_EXAMPLE / "workflow.json"))
    )
    made = ingest_cli(
        env, "source", "create", str(GITHUB_EXAMPLE / "source.json"), "--workflow", workflow["id"]
    )
    source = json.loads(made)
    body = (GITHUB_EXAMPLE / "delivery.json").read_bytes()
    secret = source_secret(GITHUB_EXAMPLE / "source.json")
    digest = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return Hook(source["id"], GITHUB_EXAMPLE / "delivery.json", f"sha256={digest}")


def source_secret(path: Path) -> str:
    return str(json.loads(path.read_text())["verify"]["secrets"][0])


def ingest_cli(env: dict[str, str], *args: str) -> str:
    command = [sys.executable, "-m", "ingest", *args]
    done = subprocess.run(command, env=env, capture_output=True, text=True, cwd=ROOT, timeout=120)
    if done.returncode:
        sys.exit(f"`ingest {' '.join(args)}` failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return done.stdout


def edge_pids(group: subprocess.Popen[bytes]) -> list[int]:
    return [p for p in descendants(group.pid) if "ingest serve" in cmdline(p)]


def publish_batches(metrics_url: str) -> tuple[float, float]:
    """The answering edge's publish-batch histogram: (requests carried, messages published)."""
    status, text = http_get(metrics_url)
    values = {}
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name in (f"{PUBLISH_BATCH}_sum", f"{PUBLISH_BATCH}_count"):
            values[name] = float(value)
    if status != 200 or len(values) != 2:
        raise RuntimeError(f"no {PUBLISH_BATCH} in {metrics_url} ({status})")
    return values[f"{PUBLISH_BATCH}_sum"], values[f"{PUBLISH_BATCH}_count"]
