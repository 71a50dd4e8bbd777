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
import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import IO

from load import WrkResult, wrk
from machine import Window, rss_kib
from plan import (
    BATCH_CONNECTIONS,
    BATCH_ITEMS,
    BENCH,
    DATABASE,
    HOOK_CONNECTIONS,
    OVERLOAD_FACTOR,
    RESULTS,
    SYNC_CONNECTIONS,
    WARMUP,
)
from records import Landing, Run
from report import figures, report
from services import (
    Hook,
    Services,
    dsn,
    edge_pids,
    free_port,
    http_get,
    port_open,
    prepare,
    prepare_hook,
    publish_batches,
    service_env,
    serving,
)

from ingest.settings import Settings

# The phases.


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

    @property
    def batch_url(self) -> str:
        return f"{self.url}/batch"

    def hook_url(self, hook: Hook) -> str:
        return f"{self.base}/api/v1/hooks/{hook.source_id}"

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


def measure_hooks(run: Run, site: Site, hook: Hook) -> None:
    """Signed deliveries, each a new one, answered 202 once the broker confirmed: what a webhook
    sender waits for."""
    env = {"WRK_BODY_FILE": str(hook.body_file), "WRK_SIGNATURE": hook.signature}
    url = site.hook_url(hook)
    wrk(url, WARMUP, HOOK_CONNECTIONS, script="hook.lua", script_env=env)
    run.hooks = wrk(url, run.duration, HOOK_CONNECTIONS, script="hook.lua", script_env=env)


def measure_batch(run: Run, services: Services, site: Site, group: subprocess.Popen[bytes]) -> None:
    """Batch imports of BATCH_ITEMS tasks, `Prefer: respond-async`; landed counts tasks."""
    env = {"WRK_BATCH_ITEMS": str(BATCH_ITEMS)}

    def load(duration: float) -> WrkResult:
        return wrk(
            site.batch_url,
            duration,
            BATCH_CONNECTIONS,
            prefer="respond-async",
            script="batch.lua",
            script_env=env,
        )

    services.wait_drained("tasks", load(WARMUP).ok * BATCH_ITEMS)
    services.clean_ingest()
    window = Window(group)
    answers = load(run.duration)
    landed = services.wait_drained("tasks", answers.ok * BATCH_ITEMS)
    run.batch = Landing(answers, landed, window.close())


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


def measure_all(run: Run, site: Site, hook: Hook) -> None:
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
                    step(f"(h) signed webhook deliveries, {HOOK_CONNECTIONS} connections")
                    measure_hooks(run, site, hook)
                    step(f"(t) batch imports of {BATCH_ITEMS}, {BATCH_CONNECTIONS} connections")
                    measure_batch(run, services, site, group)
                    step(f"edge RSS, {OVERLOAD_FACTOR}x {min(run.connections)} connections")
                    measure_overload(run, services, site, group)
    finally:
        run.notes += services.warnings
        services.close()


def step(what: str) -> None:
    print(f"  {datetime.now():%H:%M:%S} {what}", flush=True)


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
    hook = prepare_hook(env)
    print(f"bench on port {port}; ingest's log: {RESULTS / 'ingest.log'}", flush=True)
    with (RESULTS / "ingest.log").open("wb") as log:
        measure_all(run, Site(port, token, env, log), hook)
    lines = report(run)
    print("\n" + "\n".join(lines))
    figures_json = json.dumps(figures(run, lines), indent=2, ensure_ascii=False)
    (RESULTS / "last.json").write_text(figures_json)


if __name__ == "__main__":
    main()
