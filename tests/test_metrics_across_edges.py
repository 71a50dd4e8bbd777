"""Metrics across edges: one scrape of any edge reports them all (prometheus-client's
multiprocess mode, as `ingest run` sets it up), and the gauges an operator watches."""

from __future__ import annotations

import math
import os
import signal
import subprocess
from pathlib import Path

import aio_pika
import aiohttp
import pytest

from ingest.metrics import MULTIPROCESS_DIR
from tests.conftest import SEED_REQUEST, free_port, service_env, spawn, wait_until
from tests.edges import edge_processes, is_ready

TASKS = "/api/v1/workflows/{token}/tasks"
ASYNC = {"Prefer": "respond-async"}


def sample(text: str, name: str, **labels: str) -> float | None:
    """The sum of `name`'s samples with these labels; None when there is none."""
    found = None
    for line in text.splitlines():
        head, _, value = line.rpartition(" ")
        if head.split("{")[0] != name or line.startswith("#"):
            continue
        if all(f'{k}="{v}"' in head for k, v in labels.items()):
            found = (found or 0.0) + float(value)
    return found


async def scrape(url: str) -> str:
    async with aiohttp.ClientSession() as session, session.get(f"{url}/metrics") as response:
        assert response.status == 200
        return await response.text()


async def post_async(url: str, token: str, count: int, first: int = 0) -> None:
    async with aiohttp.ClientSession() as session:
        for n in range(first, first + count):
            body = {**SEED_REQUEST, "Company ID": str(n)}
            path = url + TASKS.format(token=token)
            async with session.post(path, json=body, headers=ASYNC) as response:
                assert response.status == 202, await response.text()


async def test_one_scrape_of_either_edge_reports_the_sum_over_both(
    settings, worker, make_workflow, tmp_path
):
    _, token = await make_workflow()
    shared = tmp_path / "metrics"
    shared.mkdir()
    env = {MULTIPROCESS_DIR: str(shared)}
    async with edge_processes(settings, 2, tmp_path, **env) as (first, second):
        await post_async(first, token, 3)
        await post_async(second, token, 2, first=3)
        for url in (first, second):
            text = await scrape(url)
            assert sample(text, "ingest_http_requests_total", route=TASKS, status="202") == 5
            assert sample(text, "ingest_publish_confirms_total") == 5
            assert sample(text, "ingest_accept_duration_seconds_count") == 5

        async def both_see_one_consumer() -> bool:
            # Both edges read the broker: one worker is 1, the newest reading, never 1 + 1.
            texts = [await scrape(url) for url in (first, second)]
            return all(sample(t, "ingest_queue_consumers") == 1 for t in texts)

        await wait_until(both_see_one_consumer, within=15)
        # Each edge's own pool is its own: the live edges' pools add up.
        pools = sample(await scrape(first), "ingest_db_pool_connections")
        assert pools is not None
        assert pools >= 2


async def test_an_edge_started_alone_keeps_its_own_registry(settings, make_workflow, tmp_path):
    _, token = await make_workflow()
    async with edge_processes(settings, 2, tmp_path) as (first, second):
        await post_async(first, token, 3)
        await post_async(second, token, 2, first=3)
        assert sample(await scrape(first), "ingest_publish_confirms_total") == 3
        assert sample(await scrape(second), "ingest_publish_confirms_total") == 2


async def test_queue_depth_consumers_and_dead_letters_are_read_from_broker_and_database(
    client, stopped_worker, make_workflow, pool
):
    """No worker: the queue holds what was accepted, nobody consumes; then one worker drains
    it. A dead letter kept in Postgres is counted."""
    _, token = await make_workflow()
    for n in range(3):
        body = {**SEED_REQUEST, "Company ID": str(n)}
        response = await client.post(TASKS.format(token=token), json=body, headers=ASYNC)
        assert response.status == 202

    async def reading(name: str) -> float | None:
        return sample(await (await client.get("/metrics")).text(), name)

    async def backlog_unconsumed() -> bool:
        ready = await reading("ingest_queue_depth_messages")
        return ready is not None and ready >= 1 and await reading("ingest_queue_consumers") == 0

    await wait_until(backlog_unconsumed, within=15)
    await stopped_worker.start()

    async def drained_by_one() -> bool:
        ready = await reading("ingest_queue_depth_messages")
        return ready == 0 and await reading("ingest_queue_consumers") == 1

    await wait_until(drained_by_one, within=15)
    assert await reading("ingest_dead_letters_stored") == 0
    await pool.execute("INSERT INTO dead_letters (body, reason) VALUES ('x', 'test')")

    async def one_dead_letter() -> bool:
        return await reading("ingest_dead_letters_stored") == 1

    await wait_until(one_dead_letter, within=15)


async def test_queue_gauges_say_nan_when_the_broker_cannot_tell(client, settings):
    """A queue that is gone (deleted under the edge) is an unknown reading, never a stale one."""
    connection = await aio_pika.connect(settings.amqp_url)
    async with connection:
        channel = await connection.channel()
        await channel.queue_delete(settings.queue)

    async def unknown() -> bool:
        text = await (await client.get("/metrics")).text()
        ready = sample(text, "ingest_queue_depth_messages")
        return ready is not None and math.isnan(ready)

    await wait_until(unknown, within=15)
    # The edge keeps its broker link: only the gauges' own channel failed.
    assert (await client.get("/readyz")).status == 200


@pytest.mark.slow
async def test_ingest_run_edges_share_a_metrics_directory_and_a_killed_edge_s_gauges_go(
    settings, make_workflow, tmp_path
):
    """`ingest run` with two edges: a scrape counts every request, whichever edge answered it;
    a killed edge's counts stay in the sum, its live gauges go once the supervisor saw it exit;
    the directory is removed when the group stops."""
    _, token = await make_workflow()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = service_env(settings, INGEST_PORT=str(port), INGEST_EDGES="2", INGEST_WORKERS="0")
    env.pop(MULTIPROCESS_DIR, None)
    group = spawn(["-m", "ingest", "run"], env, tmp_path / "run.log")
    try:
        edges = await wait_until(lambda: _edge_pids(group.pid), within=30)
        directory = _multiprocess_dir_of(edges[0])
        assert _multiprocess_dir_of(edges[1]) == directory
        await wait_until(lambda: is_ready(url), within=30)
        for n in range(10):  # a connection each: SO_REUSEPORT spreads them over both edges
            await post_async(url, token, 1, first=n)
        text = await scrape(url)
        assert sample(text, "ingest_http_requests_total", route=TASKS, status="202") == 10
        killed = edges[0]
        assert _files(directory, f"gauge_live*_{killed}.db")
        os.kill(killed, signal.SIGKILL)

        async def restarted() -> list[int] | None:
            pids = await _edge_pids(group.pid)
            return pids if pids and killed not in pids else None

        await wait_until(restarted, within=30)
        assert not _files(directory, f"gauge_live*_{killed}.db")
        assert _files(directory, f"counter_{killed}.db")
        await wait_until(lambda: is_ready(url), within=30)
        text = await scrape(url)
        assert sample(text, "ingest_http_requests_total", route=TASKS, status="202") == 10
    finally:
        group.send_signal(signal.SIGTERM)
        assert group.wait(30) == 0
    assert not _files(directory, "")


async def _edge_pids(parent: int) -> list[int] | None:
    return _edge_pids_now(parent)


def _edge_pids_now(parent: int) -> list[int] | None:
    """The two edges `ingest run` started, once both run."""
    done = subprocess.run(["pgrep", "-P", str(parent)], capture_output=True, text=True)
    pids = []
    for pid in map(int, done.stdout.split()):
        try:
            if b"serve" in Path(f"/proc/{pid}/cmdline").read_bytes():
                pids.append(pid)
        except OSError:
            continue
    return pids if len(pids) == 2 else None


def _files(directory: str, pattern: str) -> list[Path]:
    """The files of `directory` matching `pattern` (with "": the directory, if it exists)."""
    if not pattern:
        return [Path(directory)] if Path(directory).exists() else []
    return list(Path(directory).glob(pattern))


def _multiprocess_dir_of(pid: int) -> str:
    for entry in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0"):
        name, _, value = entry.partition(b"=")
        if name.decode() == MULTIPROCESS_DIR:
            return value.decode()
    raise AssertionError(f"edge {pid} has no {MULTIPROCESS_DIR}")
