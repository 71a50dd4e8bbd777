"""`make bench`: ingest beside a direct insert and a bare aiohttp server, measured in one run.

Prints, side by side: (a) ingest async accepted/s and landed/s; (b) ingest sync throughput and
p50/p99 at a fixed offered load of half (a)'s accepted rate; (c) the direct baseline (one
upsert transaction per request); (d) the bare aiohttp ceiling; then the ratios, CPU per task and
the edges' peak RSS, including under 2x overload. Only ratios from one run mean anything: the
machine is shared and noisy. Durability is never relaxed: synchronous_commit on, persistent
messages, publisher confirms.

    python bench/run.py [--duration 10] [--connections 64] [--edges 2] [--workers 2]
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
from dataclasses import dataclass
from pathlib import Path

import asyncpg

ROOT = Path(__file__).resolve().parent.parent
BENCH = Path(__file__).resolve().parent
ADMIN_DSN = os.environ.get("BENCH_ADMIN_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")
AMQP_URL = os.environ.get("BENCH_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
DATABASE = "ingest_bench"
QUEUE = "bench.tasks"
SALES = ROOT / "examples" / "sales-pipeline.json"


def dsn(database: str) -> str:
    return ADMIN_DSN.rsplit("/", 1)[0] + "/" + database


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def busy_jiffies() -> int:
    with open("/proc/stat") as stat:
        fields = [int(v) for v in stat.readline().split()[1:]]
    idle = fields[3] + fields[4]
    return sum(fields) - idle


def children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def rss_kib(pid: int, field: str = "VmHWM") -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def descendants(pid: int) -> list[int]:
    found = []
    for child in subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split():
        found.append(int(child))
        found.extend(descendants(int(child)))
    return found


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


@dataclass
class WrkResult:
    requests: int
    seconds: float
    non2xx: int
    errors: int
    p50_ms: float
    p99_ms: float
    machine_cpu_s: float

    @property
    def rate(self) -> float:
        return (self.requests - self.non2xx - self.errors) / self.seconds


def wrk(url: str, duration: float, connections: int, prefer: str = "", delay_ms: float = 0) -> WrkResult:
    env = {**os.environ, "WRK_PREFER": prefer, "WRK_DELAY_MS": str(int(delay_ms))}
    threads = min(2, connections)
    before_busy, before_self = busy_jiffies(), children_cpu_seconds()
    done = subprocess.run(
        ["wrk", f"-t{threads}", f"-c{connections}", f"-d{int(duration)}s", "--timeout", "10s",
         "-s", str(BENCH / "post.lua"), url],
        env=env, capture_output=True, text=True, check=True, timeout=duration + 60,
    )
    machine = (busy_jiffies() - before_busy) / os.sysconf("SC_CLK_TCK")
    wrk_cpu = children_cpu_seconds() - before_self
    line = next(l for l in done.stdout.splitlines() if l.startswith("JSON "))
    raw = json.loads(line[5:])
    errors = raw["connect"] + raw["read"] + raw["write"] + raw["timeout"]
    return WrkResult(raw["requests"], raw["duration_us"] / 1e6, raw["non2xx"], errors,
                     raw["p50_us"] / 1000, raw["p99_us"] / 1000, max(0.0, machine - wrk_cpu))


def wait_port(port: int, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError(f"nothing listens on {port}")


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(40)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


async def sql(query: str, database: str = DATABASE) -> object:
    conn = await asyncpg.connect(dsn(database), timeout=10)
    try:
        return await conn.fetchval(query)
    finally:
        await conn.close()


def service_env(port: int, edges: int, workers: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("INGEST_")}
    env.update(
        INGEST_DATABASE_URL=dsn(DATABASE), INGEST_AMQP_URL=AMQP_URL, INGEST_QUEUE=QUEUE,
        INGEST_PORT=str(port), INGEST_EDGES=str(edges), INGEST_WORKERS=str(workers),
        INGEST_LOG_LEVEL="WARNING", INGEST_ACCESS_LOG="false",
        INGEST_QUEUE_MAX_LENGTH="1000000",
    )
    return env


def reset(env: dict[str, str]) -> tuple[str, int]:
    asyncio.run(sql(f'DROP DATABASE IF EXISTS "{DATABASE}" WITH (FORCE)', "postgres"))
    subprocess.run(["rabbitmqctl", "-q", "delete_queue", QUEUE], capture_output=True)
    subprocess.run([sys.executable, "-m", "ingest", "migrate"], env=env, check=True,
                   capture_output=True, cwd=ROOT)
    created = subprocess.run([sys.executable, "-m", "ingest", "workflow", "create", str(SALES)],
                             env=env, check=True, capture_output=True, text=True, cwd=ROOT)
    workflow = json.loads(created.stdout)
    workflow_id = asyncio.run(sql("SELECT id FROM workflows"))
    assert isinstance(workflow_id, int)
    return workflow["token"], workflow_id


async def truncate() -> None:
    conn = await asyncpg.connect(dsn(DATABASE), timeout=10)
    try:
        await conn.execute("TRUNCATE tasks, task_values, request_results, dead_letters")
    finally:
        await conn.close()


def count(table: str) -> int:
    value = asyncio.run(sql(f"SELECT count(*) FROM {table}"))
    assert isinstance(value, int)
    return value


def wait_drained(expected: int, seconds: float = 300) -> float:
    """Seconds until `expected` results are in Postgres (or the count stops growing)."""
    started, last, still = time.monotonic(), -1, 0
    while time.monotonic() - started < seconds:
        landed = count("request_results")
        if landed >= expected:
            break
        still = still + 1 if landed == last else 0
        if still > 50:
            break
        last = landed
        time.sleep(0.1)
    return time.monotonic()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--duration", type=float, default=10)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--edges", type=int, default=1)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed (make bench installs it: apt-get install -y wrk)")
    port = free_port()
    env = service_env(port, args.edges, args.workers)
    token, workflow_id = reset(env)
    url = f"http://127.0.0.1:{port}/api/v1/workflows/{token}/tasks"
    logs = BENCH / "results"
    logs.mkdir(exist_ok=True)
    rows: dict[str, str] = {}

    # (d) bare ceiling
    bare = subprocess.Popen([sys.executable, str(BENCH / "bare.py"), str(port)])
    try:
        wait_port(port)
        wrk(url, 2, args.connections)  # warm-up
        bare_result = wrk(url, args.duration, args.connections)
    finally:
        stop(bare)

    # (c) direct baseline
    direct = subprocess.Popen([sys.executable, str(BENCH / "direct.py"), str(port), dsn(DATABASE),
                               str(workflow_id)])
    try:
        wait_port(port)
        wrk(url, 2, args.connections)
        asyncio.run(truncate())
        started = time.monotonic()
        direct_result = wrk(url, args.duration, args.connections)
        direct_landed = count("tasks") / (time.monotonic() - started)
    finally:
        stop(direct)

    # (a) ingest async, (b) ingest sync at half load, and 2x overload
    asyncio.run(truncate())
    with (logs / "ingest.log").open("wb") as log:
        group = subprocess.Popen([sys.executable, "-m", "ingest", "run"], env=env, cwd=ROOT,
                                 stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_port(port)
        time.sleep(2)
        warm = wrk(url, 2, args.connections, prefer="respond-async")
        wait_drained(warm.requests - warm.non2xx - warm.errors, 120)
        base_tasks, base_results = count("tasks"), count("request_results")
        started = time.monotonic()
        async_result = wrk(url, args.duration, args.connections, prefer="respond-async")
        accepted = async_result.requests - async_result.non2xx - async_result.errors
        drained = wait_drained(base_results + accepted)
        landed = count("tasks") - base_tasks
        async_landed = landed / (drained - started)
        busy_after = busy_jiffies()
        edges = [p for p in descendants(group.pid) if "ingest serve" in cmdline(p)]
        rss_normal = max((rss_kib(p, "VmRSS") for p in edges), default=0)

        rate = max(async_result.rate / 2, 1)
        sync_conns = min(args.connections, 64)
        delay = sync_conns / rate * 1000
        sync_result = wrk(url, args.duration, sync_conns, delay_ms=delay)

        overload = wrk(url, args.duration, args.connections * 8)
        rss_overload = max((rss_kib(p, "VmHWM") for p in edges), default=0)
        rss_after = max((rss_kib(p, "VmRSS") for p in edges), default=0)
    finally:
        stop(group)
    del busy_after

    cpu_per_task_us = async_result.machine_cpu_s / max(landed, 1) * 1e6
    rows = {
        "(a) ingest async accepted/s": f"{async_result.rate:,.0f}",
        "(a) ingest async landed/s": f"{async_landed:,.0f}  ({landed:,} rows)",
        "(b) ingest sync req/s @ half load": f"{sync_result.rate:,.0f}  (offered ~{rate:,.0f}/s)",
        "(b) ingest sync p50 / p99": f"{sync_result.p50_ms:.1f} ms / {sync_result.p99_ms:.1f} ms",
        "(c) direct insert landed/s": f"{direct_landed:,.0f}  (p99 {direct_result.p99_ms:.1f} ms)",
        "(d) bare aiohttp req/s": f"{bare_result.rate:,.0f}",
        "ratio ingest landed / direct": f"{async_landed / max(direct_landed, 1):.2f}x",
        "ratio ingest accepted / bare": f"{async_result.rate / max(bare_result.rate, 1):.2f}x",
        "ratio ingest landed / bare": f"{async_landed / max(bare_result.rate, 1):.2f}x",
        "machine CPU per landed task": f"{cpu_per_task_us:,.0f} µs (all processes but wrk)",
        "edge RSS normal / peak at 8x conns / after": (
            f"{rss_normal / 1024:.0f} / {rss_overload / 1024:.0f} / {rss_after / 1024:.0f} MiB"),
        "overload answers (non-2xx, errors)": (
            f"{overload.rate:,.0f} ok/s, {overload.non2xx:,} non-2xx, {overload.errors:,} errors"),
    }
    width = max(len(k) for k in rows)
    print(f"\ningest bench: {args.edges} edge(s), {args.workers} worker(s), "
          f"{args.connections} connections, {args.duration:g}s per phase, {os.cpu_count()} CPUs")
    for name, value in rows.items():
        print(f"  {name:<{width}}  {value}")
    (logs / "last.json").write_text(json.dumps(rows, indent=2, ensure_ascii=False))


if __name__ == "__main__":
    main()
