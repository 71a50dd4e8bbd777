"""Several edge processes over one database and one queue, each on its own port, as `ingest run`
starts them (`ingest serve`), for tests of what must hold across processes."""

from __future__ import annotations

import contextlib
import signal
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp

from ingest.settings import Settings
from tests.conftest import free_port, service_env, spawn, wait_until


async def is_ready(url: str) -> bool:
    """Whether the edge at `url` answers /readyz with 200."""
    try:
        async with aiohttp.ClientSession() as session, session.get(f"{url}/readyz") as response:
            return response.status == 200
    except aiohttp.ClientError:
        return False


@contextlib.asynccontextmanager
async def edge_processes(
    settings: Settings, count: int, logs: Path, **env: str
) -> AsyncIterator[list[str]]:
    """Start `count` edges (`extra` environment included); yield their base URLs once all are
    ready; stop them with SIGTERM afterwards. Each edge hands out its own URL as public URL."""
    processes: list[subprocess.Popen[bytes]] = []
    urls: list[str] = []
    try:
        for n in range(count):
            port = free_port()
            url = f"http://127.0.0.1:{port}"
            child_env = service_env(settings, INGEST_PORT=str(port), INGEST_PUBLIC_URL=url, **env)
            processes.append(spawn(["-m", "ingest", "serve"], child_env, logs / f"edge-{n}.log"))
            urls.append(url)
        for url in urls:
            await wait_until(lambda url=url: is_ready(url), within=30)
        yield urls
    finally:
        for process in processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in processes:
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
