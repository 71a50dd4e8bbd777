"""`make bench`: ingest beside the peers a user would pick instead, as `make run` runs it.

Measured side by side, at each number of connections (default 64 and 256), in this order so that a
noisy machine hurts every row alike: (d) the bare aiohttp ceiling, (n) the naive peer (one jsonb
upsert per request, bench/naive.py), (a) ingest with `Prefer: respond-async` (accepted/s, landed/s,
tasks per broker message); then (b) ingest sync at 16 connections (closed loop: req/s, p50, p99)
and the edge's RSS under 8x the smallest number of connections. Each phase has a 2 s warm-up and
starts on empty tables after a CHECKPOINT. Prints the ratios beside the targets of issue 9.

ingest runs with its defaults (access log on, INFO logs to bench/results/ingest.log, INGEST_EDGES
and INGEST_WORKERS as they come unless --edges/--workers say otherwise); the bench only gives it a
private database (ingest_bench), queue (bench.tasks) and port. Durability is never relaxed:
synchronous_commit on, persistent messages to a quorum queue, publisher confirms, ack after commit.

landed/s counts rows written (ingest: request results; naive: its rows) over the time from the
first request until the last one is in Postgres. Machine CPU per landed task is every core's busy
time over that same window (/proc/stat) less wrk's and this script's own, divided by the rows; it
is also split by process (the server's own, its database's Postgres backends, RabbitMQ, and the
rest of the machine, which on a shared machine is mostly other people's work).
Only ratios from one run mean anything: the machine is shared and noisy.

Usage: python bench/run.py [--duration 10] [--connections 64,256] [--edges N] [--workers N]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Coroutine, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, TypeVar

import aio_pika
import asyncpg

from ingest.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
RESULTS = BENCH / "results"
ADMIN_DSN = os.environ.get("BENCH_ADMIN_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")
AMQP_URL = os.environ.get("BENCH_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
DATABASE = "ingest_bench"
QUEUE = "bench.tasks"
SALES = ROOT / "examples" / "sales-pipeline.json"
WARMUP = 2.0
SYNC_CONNECTIONS = 16
OVERLOAD_FACTOR = 8
#: ingest's tables that hold what requests wrote; TRUNCATE … CASCADE reaches the ones that refer to
#: them (task values, whatever the layout), so the bench works across storage changes.
INGEST_TABLES = ("tasks", "request_results", "dead_letters", "attempts")
PUBLISH_BATCH = "ingest_publish_batch_requests"

T = TypeVar("T")


def dsn(database: str) -> str:
    return ADMIN_DSN.rsplit("/", 1)[0] + "/" + database


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# The machine: CPU over a window, memory and processes.


def busy_seconds() -> float:
    """CPU time every core spent on anything but idle and iowait since boot."""
    with open("/proc/stat") as stat:
        fields = [int(v) for v in stat.readline().split()[1:]]
    idle = fields[3] + fields[4]
    return (sum(fields) - idle) / os.sysconf("SC_CLK_TCK")


def own_cpu_seconds() -> float:
    """This script's CPU plus that of the children it has reaped (wrk, nothing else)."""
    total = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        usage = resource.getrusage(who)
        total += usage.ru_utime + usage.ru_stime
    return total


@dataclass
class Span:
    """What a Window saw: wall time, machine CPU, and the CPU of the processes serving the load."""

    seconds: float
    cpu_seconds: float
    by_process: dict[str, float]


class Window:
    """Wall time and machine CPU (less wrk's and this script's) from its creation to `close`.

    The CPU of the server under test (its process tree), of the bench database's Postgres backends
    and of RabbitMQ is also taken per process: the rest of the machine is Postgres' background
    writers, the kernel, and other people's work on a shared machine.
    """

    def __init__(self, server: subprocess.Popen[bytes]) -> None:
        self._server = server
        self._processes = self._serving()
        self.started = time.monotonic()
        self._busy, self._own = busy_seconds(), own_cpu_seconds()

    def close(self) -> Span:
        machine = busy_seconds() - self._busy - (own_cpu_seconds() - self._own)
        seconds = time.monotonic() - self.started
        by_process: dict[str, float] = {}
        for pid, (role, cpu) in self._serving().items():
            before = self._processes.get(pid, (role, 0.0))[1]
            by_process[role] = by_process.get(role, 0.0) + cpu - before
        return Span(seconds, max(0.0, machine), by_process)

    def _serving(self) -> dict[int, tuple[str, float]]:
        """Role and CPU seconds so far of each process that serves the load."""
        tree = {self._server.pid, *descendants(self._server.pid)}
        found = {}
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit() and (role := serving_role(int(entry.name), tree)):
                found[int(entry.name)] = (role, process_cpu_seconds(int(entry.name)))
        return found


def serving_role(pid: int, tree: set[int]) -> str | None:
    line = cmdline(pid)
    if pid in tree:
        roles = {"ingest serve": "edge", "-m worker": "workers", "naive.py": "naive"}
        return next((role for mark, role in roles.items() if mark in line), "supervisor")
    if line.startswith("postgres: ") and DATABASE in line.split():  # backends, autovacuum
        return "Postgres"
    return "RabbitMQ" if "beam.smp" in line else None


def process_cpu_seconds(pid: int) -> float:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat.rsplit(")", 1)[1].split()  # after the command name, which may hold spaces
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_kib(pid: int, field: str = "VmRSS") -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def descendants(pid: int) -> list[int]:
    found = []
    listed = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True, timeout=10)
    for child in map(int, listed.stdout.split()):
        found.append(child)
        found.extend(descendants(child))
    return found


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


# Load: wrk with bench/post.lua (the seed task, a unique Company ID per request).


@dataclass
class WrkResult:
    requests: int
    seconds: float
    non2xx: int
    errors: int
    p50_ms: float
    p99_ms: float

    @property
    def ok(self) -> int:
        return self.requests - self.non2xx - self.errors

    @property
    def rate(self) -> float:
        return self.ok / self.seconds


def wrk(
    url: str,
    duration: float,
    connections: int,
    prefer: str = "",
    watch: Callable[[], None] | None = None,
) -> WrkResult:
    """Run wrk for `duration` seconds; `watch` is called every 0.2 s while it runs."""
    command = ["wrk", f"-t{min(2, connections)}", f"-c{connections}", f"-d{duration:g}s"]
    command += ["--timeout", "10s", "-s", str(BENCH / "post.lua"), url]
    env = {**os.environ, "WRK_PREFER": prefer}
    deadline = time.monotonic() + duration + 60
    with subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as process:
        while process.poll() is None and time.monotonic() < deadline:
            if watch is not None:
                watch()
            with suppress(subprocess.TimeoutExpired):
                process.wait(0.2)
        out, err = process.communicate(timeout=10)
    if process.returncode:
        raise RuntimeError(f"wrk failed ({process.returncode}): {err.strip()}")
    line = next(line for line in out.splitlines() if line.startswith("JSON "))
    raw = json.loads(line[5:])
    errors = raw["connect"] + raw["read"] + raw["write"] + raw["timeout"]
    return WrkResult(
        raw["requests"],
        raw["duration_us"] / 1e6,
        raw["non2xx"],
        errors,
        raw["p50_us"] / 1000,
        raw["p99_us"] / 1000,
    )


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


# The phases.


@dataclass
class Landing:
    """One load phase that writes: answers, rows landed, time and machine CPU until they did."""

    answers: WrkResult
    landed: int
    span: Span
    tasks_per_message: float | None = None

    @property
    def landed_rate(self) -> float:
        return self.landed / self.span.seconds

    @property
    def cpu_per_task_us(self) -> float:
        return self.per_task_us(self.span.cpu_seconds)

    def per_task_us(self, cpu_seconds: float) -> float:
        return cpu_seconds / max(self.landed, 1) * 1e6

    @property
    def serving_per_task_us(self) -> float:
        return self.per_task_us(sum(self.span.by_process.values()))

    def split_us(self, roles: tuple[str, ...]) -> str:
        """CPU per task of these processes, then of the rest of the machine, in µs."""
        parts = [self.per_task_us(self.span.by_process.get(role, 0.0)) for role in roles]
        rest = self.cpu_per_task_us - self.serving_per_task_us
        return " + ".join(f"{part:,.0f}" for part in parts) + f" | {max(rest, 0):,.0f}"


@dataclass
class Run:
    """Everything one `make bench` measured."""

    edges: int
    workers: int
    duration: float
    connections: list[int]
    bare: dict[int, WrkResult] = field(default_factory=dict)
    naive: dict[int, Landing] = field(default_factory=dict)
    ingest: dict[int, Landing] = field(default_factory=dict)
    sync: WrkResult | None = None
    overload_connections: int = 0
    overload: WrkResult | None = None
    rss_mib: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    #: Settings changed from ingest's defaults (`--set`): a tuned run, not `make run`'s.
    tuned: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Site:
    """Where the servers under test listen (one at a time, on one port), and ingest's settings."""

    port: int
    token: str
    env: dict[str, str]
    log: IO[bytes]

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"{self.base}/api/v1/workflows/{self.token}/tasks"

    def listening(self) -> bool:
        return port_open(self.port)

    @contextmanager
    def ingest(self, what: str) -> Iterator[subprocess.Popen[bytes]]:
        """`ingest run` (edges and workers), once its edge answers /readyz with 200."""
        self.log.write(f"--- bench: {what}\n".encode())
        self.log.flush()
        command = [sys.executable, "-m", "ingest", "run"]
        with serving(command, self.ready, self.env, self.log) as group:
            yield group

    def ready(self) -> bool:
        return http_get(self.base + "/readyz")[0] == 200


def measure_bare(site: Site, connections: int, duration: float) -> WrkResult:
    with serving([sys.executable, str(BENCH / "bare.py"), str(site.port)], site.listening):
        wrk(site.url, WARMUP, connections)
        return wrk(site.url, duration, connections)


def measure_naive(services: Services, site: Site, connections: int, duration: float) -> Landing:
    services.execute("DROP TABLE IF EXISTS naive_tasks")
    command = [sys.executable, str(BENCH / "naive.py"), str(site.port), dsn(DATABASE)]
    with serving(command, site.listening) as server:
        wrk(site.url, WARMUP, connections)
        services.clean_naive()
        window = Window(server)
        answers = wrk(site.url, duration, connections)
        span = window.close()
    return Landing(answers, services.count("naive_tasks"), span)


def measure_async(
    services: Services,
    site: Site,
    group: subprocess.Popen[bytes],
    connections: int,
    duration: float,
) -> Landing:
    warm = wrk(site.url, WARMUP, connections, prefer="respond-async")
    services.wait_drained("request_results", warm.ok)
    services.clean_ingest()
    metrics_url = site.base + "/metrics"
    carried, messages = publish_batches(metrics_url)
    window = Window(group)
    answers = wrk(site.url, duration, connections, prefer="respond-async")
    landed = services.wait_drained("request_results", answers.ok)
    span = window.close()
    carried_after, messages_after = publish_batches(metrics_url)
    if messages_after > messages and carried_after > carried:
        per_message = (carried_after - carried) / (messages_after - messages)
    else:  # the two scrapes reached different edges: that edge's figure since it started
        per_message = carried_after / max(messages_after, 1)
    return Landing(answers, landed, span, per_message)


def measure_sync(run: Run, site: Site) -> None:
    wrk(site.url, WARMUP, SYNC_CONNECTIONS)
    run.sync = wrk(site.url, run.duration, SYNC_CONNECTIONS)


def measure_overload(
    run: Run, services: Services, site: Site, group: subprocess.Popen[bytes]
) -> None:
    """Edge RSS before, at most during, and after OVERLOAD_FACTOR x the fewest connections."""
    edges = edge_pids(group)

    def rss() -> float:
        return max((rss_kib(p) for p in edges), default=0) / 1024

    run.rss_mib["normal"] = peak = rss()

    def watch() -> None:
        nonlocal peak
        peak = max(peak, rss())

    before = services.count("request_results")
    run.overload_connections = OVERLOAD_FACTOR * min(run.connections)
    run.overload = wrk(site.url, run.duration, run.overload_connections, watch=watch)
    services.wait_drained("request_results", before + run.overload.ok)
    run.rss_mib["peak"], run.rss_mib["after"] = peak, rss()


def measure_all(run: Run, site: Site) -> None:
    services = Services()
    services.connect()
    try:
        for connections in run.connections:
            step(f"(d) bare, {connections} connections")
            run.bare[connections] = measure_bare(site, connections, run.duration)
            step(f"(n) naive, {connections} connections")
            run.naive[connections] = measure_naive(services, site, connections, run.duration)
            step(f"(a) ingest async, {connections} connections")
            with site.ingest(f"async, {connections} connections") as group:
                run.ingest[connections] = measure_async(
                    services, site, group, connections, run.duration
                )
                if connections == run.connections[-1]:
                    step(f"(b) ingest sync, {SYNC_CONNECTIONS} connections")
                    measure_sync(run, site)
                    step(f"edge RSS, {OVERLOAD_FACTOR}x {min(run.connections)} connections")
                    measure_overload(run, services, site, group)
    finally:
        run.notes += services.warnings
        services.close()


def step(what: str) -> None:
    print(f"  {datetime.now():%H:%M:%S} {what}", flush=True)


# The report.

#: (a)/(n) landed/s at least this much, at these numbers of connections.
LANDED_VS_NAIVE = {64: 1.5, 256: 2.5}
LANDED_VS_BARE = 0.5
CPU_VS_NAIVE = {256: 0.4}
SYNC_P50_MS, SYNC_P99_MS = 10.0, 50.0
RSS_GROWTH = 1.25
NAIVE_ROLES = ("naive", "Postgres")
INGEST_ROLES = ("edge", "workers", "Postgres", "RabbitMQ")


def plural(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def judged(text: str, ok: bool | None) -> str:
    return text if ok is None else f"{text} {'✓' if ok else '✗'}"


def ratio(a: float, b: float) -> float:
    return a / b if b else 0.0


def table_rows(run: Run) -> list[tuple[str, list[str], str]]:
    """(label, one cell per number of connections, target) for the side-by-side figures."""
    cs = run.connections
    a, n, d = run.ingest, run.naive, run.bare
    vs_naive = {c: ratio(a[c].landed_rate, n[c].landed_rate) for c in cs}
    vs_bare = {c: ratio(a[c].landed_rate, d[c].rate) for c in cs}
    cpu = {c: ratio(a[c].cpu_per_task_us, n[c].cpu_per_task_us) for c in cs}
    per_message = [f"{a[c].tasks_per_message:,.1f}" for c in cs]
    return [
        ("(d) bare aiohttp req/s", [f"{d[c].rate:,.0f}" for c in cs], ""),
        ("(n) naive peer landed/s", [f"{n[c].landed_rate:,.0f}" for c in cs], ""),
        ("(a) ingest async accepted/s", [f"{a[c].answers.rate:,.0f}" for c in cs], ""),
        ("(a) ingest async landed/s", [f"{a[c].landed_rate:,.0f}" for c in cs], ""),
        ("(a) tasks per broker message", per_message, "grows with load"),
        (
            "(a)/(n) landed/s",
            [
                judged(f"{vs_naive[c]:.2f}x", _at_least(vs_naive[c], LANDED_VS_NAIVE.get(c)))
                for c in cs
            ],
            "≥ " + ", ≥ ".join(f"{v}x at {c}" for c, v in LANDED_VS_NAIVE.items()),
        ),
        (
            "(a)/(d) landed / bare req/s",
            [judged(f"{vs_bare[c]:.2f}x", vs_bare[c] >= LANDED_VS_BARE) for c in cs],
            f"≥ {LANDED_VS_BARE}x",
        ),
        (
            "(a)/(d) accepted / bare req/s",
            [f"{ratio(a[c].answers.rate, d[c].rate):.2f}x" for c in cs],
            "",
        ),
        ("CPU per landed task (n)", [f"{n[c].cpu_per_task_us:,.0f} µs" for c in cs], ""),
        ("CPU per landed task (a)", [f"{a[c].cpu_per_task_us:,.0f} µs" for c in cs], ""),
        ("  (n) naive+Postgres | rest", [n[c].split_us(NAIVE_ROLES) for c in cs], "µs"),
        (
            "  (a) edge+workers+Postgres+RabbitMQ | rest",
            [a[c].split_us(INGEST_ROLES) for c in cs],
            "µs",
        ),
        (
            "CPU per landed task (a)/(n)",
            [judged(f"{cpu[c]:.2f}x", _at_most(cpu[c], CPU_VS_NAIVE.get(c))) for c in cs],
            "≤ " + ", ≤ ".join(f"{v}x at {c}" for c, v in CPU_VS_NAIVE.items()),
        ),
        (
            "  the same, serving processes only",
            [f"{ratio(a[c].serving_per_task_us, n[c].serving_per_task_us):.2f}x" for c in cs],
            "(without the rest of a shared machine)",
        ),
    ]


def _at_least(value: float, target: float | None) -> bool | None:
    return None if target is None else value >= target


def _at_most(value: float, target: float | None) -> bool | None:
    return None if target is None else value <= target


def report(run: Run) -> list[str]:
    who = f"{plural(run.edges, 'edge')}, {plural(run.workers, 'worker')}"
    return [
        f"ingest bench, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {os.cpu_count()} CPUs: ingest as "
        f"`make run` runs it ({who}, access log on"
        + (f"; TUNED: {' '.join(run.tuned)}" if run.tuned else "")
        + f"); {run.duration:g} s a phase after {WARMUP:g} s of warm-up",
        "",
        *side_by_side(run),
        "",
        *sync_lines(run),
        *overload_lines(run),
        *(f"  note: {note}" for note in run.notes + failed_answers(run)),
    ]


def failed_answers(run: Run) -> list[str]:
    """Phases where some answers were not 2xx: their rates count only the 2xx ones."""
    phases: list[tuple[str, WrkResult | None]] = [("(b) sync", run.sync)]
    for c in run.connections:
        phases.append((f"(d) at {c}", run.bare[c]))
        phases += [(f"(n) at {c}", run.naive[c].answers), (f"(a) at {c}", run.ingest[c].answers)]
    return [
        f"{name}: {r.non2xx:,} non-2xx answers, {r.errors:,} socket errors of {r.requests:,}"
        for name, r in phases
        if r is not None and (r.non2xx or r.errors)
    ]


def side_by_side(run: Run) -> list[str]:
    rows = table_rows(run)
    headers = [f"{c} conns" for c in run.connections]
    label_width = max(len(label) for label, _, _ in rows)
    widths = [max(len(h), *(len(cells[i]) for _, cells, _ in rows)) for i, h in enumerate(headers)]

    def line(label: str, cells: list[str], target: str) -> str:
        padded = "  ".join(f"{cell:>{w}}" for cell, w in zip(cells, widths, strict=True))
        return f"  {label:<{label_width}}  {padded}  {target}".rstrip()

    return [line("", headers, "target"), *(line(*row) for row in rows)]


def sync_lines(run: Run) -> list[str]:
    if run.sync is None:
        return []
    s = run.sync
    p50 = judged(f"{s.p50_ms:.1f} ms", s.p50_ms < SYNC_P50_MS)
    p99 = judged(f"{s.p99_ms:.1f} ms", s.p99_ms < SYNC_P99_MS)
    return [
        f"  (b) ingest sync, {SYNC_CONNECTIONS} conns, closed loop: {s.rate:,.0f} req/s, "
        f"p50 {p50} (target < {SYNC_P50_MS:g} ms), p99 {p99} (target < {SYNC_P99_MS:g} ms)"
    ]


def overload_lines(run: Run) -> list[str]:
    if run.overload is None:
        return []
    rss, o = run.rss_mib, run.overload
    flat = max(rss["peak"], rss["after"]) <= rss["normal"] * RSS_GROWTH
    figures = judged(f"{rss['normal']:.0f} / {rss['peak']:.0f} / {rss['after']:.0f} MiB", flat)
    return [
        f"  edge RSS, normal / peak under {run.overload_connections} sync conns "
        f"({OVERLOAD_FACTOR}x {min(run.connections)}) / after: {figures} "
        f"(target: peak and after within {RSS_GROWTH - 1:.0%} of normal)",
        f"  answers under {run.overload_connections} conns: {o.rate:,.0f} ok/s, "
        f"{o.non2xx:,} non-2xx, {o.errors:,} socket errors, p99 {o.p99_ms:,.0f} ms",
    ]


def figures(run: Run, lines: list[str]) -> dict[str, Any]:
    by_connections = {
        str(c): {
            "bare_rps": run.bare[c].rate,
            "naive_landed_per_s": run.naive[c].landed_rate,
            "naive_cpu_per_task_us": run.naive[c].cpu_per_task_us,
            "naive_serving_cpu_per_task_us": run.naive[c].serving_per_task_us,
            "ingest_accepted_per_s": run.ingest[c].answers.rate,
            "ingest_landed_per_s": run.ingest[c].landed_rate,
            "ingest_cpu_per_task_us": run.ingest[c].cpu_per_task_us,
            "ingest_serving_cpu_per_task_us": run.ingest[c].serving_per_task_us,
            "tasks_per_message": run.ingest[c].tasks_per_message,
            "ingest_vs_naive": ratio(run.ingest[c].landed_rate, run.naive[c].landed_rate),
            "ingest_vs_bare": ratio(run.ingest[c].landed_rate, run.bare[c].rate),
            "cpu_ingest_vs_naive": ratio(
                run.ingest[c].cpu_per_task_us, run.naive[c].cpu_per_task_us
            ),
            "naive": asdict(run.naive[c]),
            "ingest": asdict(run.ingest[c]),
            "bare": asdict(run.bare[c]),
        }
        for c in run.connections
    }
    return {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "cpus": os.cpu_count(),
        "edges": run.edges,
        "workers": run.workers,
        "duration_s": run.duration,
        "by_connections": by_connections,
        "sync": asdict(run.sync) if run.sync else None,
        "overload": asdict(run.overload) if run.overload else None,
        "overload_connections": run.overload_connections,
        "edge_rss_mib": run.rss_mib,
        "notes": run.notes,
        "table": lines,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--duration", type=float, default=10, help="seconds per phase")
    parser.add_argument("--connections", default="64,256", help="comma-separated (default 64,256)")
    parser.add_argument("--edges", type=int, help="INGEST_EDGES (default: ingest's own default)")
    parser.add_argument("--workers", type=int, help="INGEST_WORKERS (default: ingest's own)")
    parser.add_argument(
        "--set", action="append", default=[], metavar="INGEST_X=VALUE", help="a tuned setting"
    )
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed (make bench installs it: apt-get install -y wrk)")
    defaults = Settings.model_fields
    run = Run(
        edges=args.edges or int(defaults["edges"].default),
        workers=args.workers if args.workers is not None else int(defaults["workers"].default),
        duration=args.duration,
        connections=[int(c) for c in args.connections.split(",")],
        tuned=args.set,
    )
    if run.edges > 1:
        run.notes.append(
            f"tasks per broker message: of one of the {run.edges} edges, whichever answered "
            "/metrics (at random)"
        )
    port = free_port()
    env = service_env(port, args.edges, args.workers, args.set)
    RESULTS.mkdir(exist_ok=True)
    setup = Services()
    try:
        setup.fresh()
    finally:
        setup.close()
    token = prepare(env)
    print(f"bench on port {port}; ingest's log: {RESULTS / 'ingest.log'}", flush=True)
    with (RESULTS / "ingest.log").open("wb") as log:
        measure_all(run, Site(port, token, env, log))
    lines = report(run)
    print("\n" + "\n".join(lines))
    figures_json = json.dumps(figures(run, lines), indent=2, ensure_ascii=False)
    (RESULTS / "last.json").write_text(figures_json)


if __name__ == "__main__":
    main()
