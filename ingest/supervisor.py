"""`ingest run`: edge and workers as one supervised process group on one machine.

Each child is restarted when it exits unexpectedly (with a backoff that resets once a child has
stayed up); SIGTERM or SIGINT is passed on to every child, which finishes its in-flight work, and
the group exits 0 once all have stopped.

Several edges share one port, so a scrape of `/metrics` reaches any one of them: a run of more
than one edge makes a fresh directory for prometheus-client's multiprocess mode and hands it to
its edges alone (each worker serves its own port), so every edge shows all of them; the live
gauges of an edge that exited are dropped, and the directory is removed when the group stops. A
single edge keeps its own registry: merging costs each metric update about twice its time, for
nothing when there is nothing to merge.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import sys
import tempfile
import time
from dataclasses import dataclass

from ingest.metrics import MULTIPROCESS_DIR, forget_process
from ingest.settings import Settings

log = logging.getLogger(__name__)

_STABLE_AFTER = 30.0
_MAX_BACKOFF = 30.0


@dataclass(frozen=True, slots=True)
class ChildSpec:
    name: str
    argv: tuple[str, ...]
    env: tuple[tuple[str, str], ...] = ()


def children(settings: Settings, metrics_dir: str | None) -> list[ChildSpec]:
    edge = (sys.executable, "-m", "ingest", "serve")
    worker = (sys.executable, "-m", "worker")
    shared = ((MULTIPROCESS_DIR, metrics_dir),) if metrics_dir else ()
    edges = [ChildSpec(f"edge-{n}", edge, shared) for n in range(settings.edges)]
    workers = [
        ChildSpec(f"worker-{n}", worker, _worker_env(settings, n)) for n in range(settings.workers)
    ]
    return edges + workers


def _worker_env(settings: Settings, index: int) -> tuple[tuple[str, str], ...]:
    """Each worker of the group gets its own metrics port: the configured one plus its index."""
    if not settings.worker_metrics_port:
        return ()
    return (("INGEST_WORKER_METRICS_PORT", str(settings.worker_metrics_port + index)),)


class Supervisor:
    def __init__(self, settings: Settings, specs: list[ChildSpec]) -> None:
        self._settings = settings
        self._specs = specs
        self._stopping = asyncio.Event()
        self._running: dict[str, asyncio.subprocess.Process] = {}
        self.restarts = 0

    def stop(self) -> None:
        self._stopping.set()
        for process in self._running.values():
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)

    async def run(self) -> None:
        await asyncio.gather(*(self._keep_alive(spec) for spec in self._specs))

    async def _keep_alive(self, spec: ChildSpec) -> None:
        backoff = 0.5
        while not self._stopping.is_set():
            started = time.monotonic()
            env = {**os.environ, **dict(spec.env)}
            process = await asyncio.create_subprocess_exec(*spec.argv, env=env)
            self._running[spec.name] = process
            log.info("started %s (pid %d)", spec.name, process.pid)
            code = await self._wait(process)
            del self._running[spec.name]
            _forget_metrics_of(spec, process.pid)
            if self._stopping.is_set():
                log.info("%s (pid %d) stopped with %s", spec.name, process.pid, code)
                return
            if time.monotonic() - started > _STABLE_AFTER:
                backoff = 0.5
            log.error(
                "%s (pid %d) exited with %s; restarting in %.1fs",
                spec.name,
                process.pid,
                code,
                backoff,
            )
            self.restarts += 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), backoff)
            backoff = min(backoff * 2, _MAX_BACKOFF)

    async def _wait(self, process: asyncio.subprocess.Process) -> int:
        waiting = asyncio.ensure_future(process.wait())
        stopping = asyncio.ensure_future(self._stopping.wait())
        await asyncio.wait({waiting, stopping}, return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()
        if waiting.done():
            return waiting.result()
        # Stopping: the child got SIGTERM in stop(); give it its grace period, then kill.
        try:
            return await asyncio.wait_for(waiting, self._settings.shutdown_timeout + 5)
        except TimeoutError:
            log.error("pid %d did not stop in time; killing it", process.pid)
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            return await process.wait()


def _forget_metrics_of(spec: ChildSpec, pid: int) -> None:
    """An exited edge's live gauges (its backlog, its pool) must not count any more."""
    directory = dict(spec.env).get(MULTIPROCESS_DIR)
    if directory:
        with contextlib.suppress(OSError):
            forget_process(pid, directory)


async def supervise(settings: Settings) -> None:
    metrics_dir = tempfile.mkdtemp(prefix="ingest-metrics-") if settings.edges > 1 else None
    try:
        supervisor = Supervisor(settings, children(settings, metrics_dir))
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, supervisor.stop)
        await supervisor.run()
    finally:
        if metrics_dir:
            shutil.rmtree(metrics_dir, ignore_errors=True)
