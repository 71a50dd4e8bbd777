"""Real processes: edges and workers as the CLI starts them, under load, signals and crashes."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import aiohttp
import pytest

from tests.conftest import ROOT, SEED_REQUEST, free_port, service_env, spawn, wait_until
from tests.edges import is_ready

pytestmark = pytest.mark.slow


async def _published(url: str) -> bool:
    """True once the edge has had a task request confirmed by the broker: it is waiting for the
    request's answer."""
    async with aiohttp.ClientSession() as session, session.get(f"{url}/metrics") as response:
        text = await response.text()
    confirmed = re.search(r"^ingest_publish_confirms_total (\S+)$", text, re.MULTILINE)
    return confirmed is not None and float(confirmed[1]) >= 1


def _stop(process: subprocess.Popen[bytes], timeout: float = 20) -> int:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        return process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        raise


def _cmdline(pid: int) -> bytes:
    with open(f"/proc/{pid}/cmdline", "rb") as handle:
        return handle.read()


def _children_of(pid: int) -> list[int]:
    done = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True)
    return [int(p) for p in done.stdout.split()]


async def _send_all(urls: list[str], token: str, bodies: list[dict], concurrency: int = 40):
    outcomes: list[tuple[int, dict]] = [(0, {})] * len(bodies)
    queue: asyncio.Queue[int] = asyncio.Queue()
    for index in range(len(bodies)):
        queue.put_nowait(index)

    async def client(session: aiohttp.ClientSession, url: str) -> None:
        while not queue.empty():
            index = queue.get_nowait()
            async with session.post(
                f"{url}/api/v1/workflows/{token}/tasks", json=bodies[index]
            ) as r:
                outcomes[index] = (r.status, await r.json())

    async with aiohttp.ClientSession() as session:
        await asyncio.gather(*(client(session, urls[n % len(urls)]) for n in range(concurrency)))
    return outcomes


async def test_two_edges_and_two_workers_lose_and_double_nothing(
    settings, make_workflow, pool, tmp_path: Path
):
    _, token = await make_workflow()
    ports = [free_port(), free_port()]
    env = service_env(settings)
    edges = [
        spawn(
            ["-m", "ingest", "serve"], {**env, "INGEST_PORT": str(port)}, tmp_path / f"edge{n}.log"
        )
        for n, port in enumerate(ports)
    ]
    workers = [spawn(["-m", "worker"], env, tmp_path / f"worker{n}.log") for n in range(2)]
    urls = [f"http://127.0.0.1:{port}" for port in ports]
    try:
        for url in urls:
            await wait_until(lambda url=url: is_ready(url), within=30)
        # 800 distinct tasks, plus 200 updates of tasks among them.
        bodies = [
            {**SEED_REQUEST, "Company ID": f"c{n}", "Number of Employees": n} for n in range(800)
        ]
        bodies += [{"Company ID": f"c{n}", "Contract Value": n} for n in range(0, 800, 4)]
        outcomes = await _send_all(urls, token, bodies)
        statuses = Counter(status for status, _ in outcomes)
        assert set(statuses) <= {200, 201, 202}, statuses

        async def drained():
            return await pool.fetchval("SELECT count(*) FROM request_results") == len(bodies)

        await wait_until(drained, within=60)
        assert await pool.fetchval("SELECT count(*) FROM tasks") == 800
        assert await pool.fetchval("SELECT count(DISTINCT request_id) FROM request_results") == 1000
        by_outcome = dict(
            await pool.fetch("SELECT outcome, count(*) FROM request_results GROUP BY 1")
        )
        assert (
            by_outcome.get("created", 0)
            + by_outcome.get("updated", 0)
            + by_outcome.get("unchanged", 0)
            == 1000
        )
        # A request answered synchronously was answered with what was committed.
        contract_values = dict(
            await pool.fetch(
                "SELECT unique_key, (fields->>'4')::numeric FROM tasks WHERE fields ? '4'"
            )
        )
        for n in range(0, 800, 4):
            assert contract_values[f"c{n}"] in (n, 10000)
        updated = [body for status, body in outcomes[800:] if status == 200]
        for body in updated:
            assert body["Contract Value"] == body["Company ID"][1:]
    finally:
        codes = [_stop(p) for p in edges + workers]
    assert codes == [0, 0, 0, 0]


async def test_sigterm_finishes_in_flight_work_and_exits_zero(
    settings, make_workflow, pool, tmp_path: Path
):
    _, token = await make_workflow()
    env = service_env(settings)
    edge = spawn(["-m", "ingest", "serve"], env, tmp_path / "edge.log")
    worker = spawn(["-m", "worker"], env, tmp_path / "worker.log")
    url = settings.public_url
    try:
        await wait_until(lambda: is_ready(url), within=30)
        bodies = [{**SEED_REQUEST, "Company ID": f"s{n}"} for n in range(300)]
        sending = asyncio.create_task(_send_all([url], token, bodies, concurrency=20))

        async def working():
            return await pool.fetchval("SELECT count(*) FROM request_results") > 0

        await wait_until(working, within=30)  # the worker is committing while requests arrive
        assert await asyncio.to_thread(_stop, worker) == 0
        worker = spawn(["-m", "worker"], env, tmp_path / "worker2.log")
        outcomes = await sending
        assert {status for status, _ in outcomes} <= {201, 202}

        async def drained():
            return await pool.fetchval("SELECT count(*) FROM request_results") == len(bodies)

        await wait_until(drained, within=60)
        assert await pool.fetchval("SELECT count(*) FROM tasks") == 300
    finally:
        codes = [await asyncio.to_thread(_stop, p) for p in (edge, worker)]
    assert codes == [0, 0]


async def test_edge_sigterm_answers_requests_already_waiting(
    settings, make_workflow, tmp_path: Path
):
    _, token = await make_workflow()
    env = service_env(settings)
    edge = spawn(["-m", "ingest", "serve"], env, tmp_path / "edge.log")
    url = settings.public_url
    try:
        await wait_until(lambda: is_ready(url), within=30)
        async with aiohttp.ClientSession() as session:
            # No worker runs: the request waits its budget, and meanwhile the edge is told to stop.
            waiting = asyncio.create_task(
                session.post(
                    f"{url}/api/v1/workflows/{token}/tasks",
                    json=SEED_REQUEST,
                    headers={"Prefer": "wait=2"},
                )
            )
            await wait_until(lambda: _published(url), within=10)
            edge.send_signal(signal.SIGTERM)
            response = await waiting
            assert response.status == 202
            assert "Location" in response.headers
    finally:
        code = await asyncio.to_thread(_stop, edge)
    assert code == 0


async def test_ingest_run_restarts_a_crashed_worker_and_stops_cleanly(
    settings, make_workflow, tmp_path: Path
):
    _, token = await make_workflow()
    env = {**service_env(settings), "INGEST_WORKERS": "1"}
    group = spawn(["-m", "ingest", "run"], env, tmp_path / "run.log")
    url = settings.public_url
    try:
        await wait_until(lambda: is_ready(url), within=30)

        async def two_children():
            return len(_children_of(group.pid)) == 2 or None

        await wait_until(two_children, within=30)
        before = set(_children_of(group.pid))
        worker_pid = next(p for p in before if b"worker" in _cmdline(p))
        os.kill(worker_pid, signal.SIGKILL)

        async def replaced():
            now = set(_children_of(group.pid))
            return len(now) == 2 and worker_pid not in now

        await wait_until(replaced, within=30)
        async with (
            aiohttp.ClientSession() as session,
            session.post(f"{url}/api/v1/workflows/{token}/tasks", json=SEED_REQUEST) as response,
        ):
            assert response.status == 201
    finally:
        code = await asyncio.to_thread(_stop, group, 40)
    assert code == 0
    assert "restarting" in (tmp_path / "run.log").read_text()


async def test_ingest_work_runs_a_worker(settings, tmp_path: Path):
    log = tmp_path / "work.log"
    worker = spawn(["-m", "ingest", "work"], service_env(settings), log)

    async def consuming():
        assert worker.poll() is None, log.read_text()
        return b"consuming" in log.read_bytes()

    try:
        await wait_until(consuming, within=30)
    finally:
        code = await asyncio.to_thread(_stop, worker)
    assert code == 0


def test_invalid_settings_stop_the_process_with_a_clear_message(settings):
    env = service_env(settings, INGEST_PORT="eighty", INGEST_SYNC_TIMEOUT="-1")
    done = subprocess.run(
        [sys.executable, "-m", "ingest", "serve"],
        env=env,
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=30,
    )
    assert done.returncode == 1
    assert "INGEST_PORT" in done.stderr
    assert "INGEST_SYNC_TIMEOUT" in done.stderr
