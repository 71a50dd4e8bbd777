"""The ledger of rejections never holds a request up (SPEC §8): with its database cut off, a
refusal is answered at once and the rejection dropped and counted; its queue is bounded."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient, TestServer

from ingest.edge.app import create_app
from ingest.edge.ledger import Ledger
from ingest.edge.metrics import EdgeMetrics
from ingest.rejections import Refused
from ingest.settings import Settings
from tests.conftest import free_port, wait_until
from tests.deliveries import JSON
from tests.harness.proxy import FaultProxy


@pytest.fixture
async def proxy(settings: Settings) -> AsyncIterator[FaultProxy]:
    port = int(settings.database_url.rsplit(":", 1)[1].split("/", 1)[0])
    async with FaultProxy(port) as proxy:
        yield proxy


@pytest.fixture
async def proxied_client(
    settings: Settings, proxy: FaultProxy
) -> AsyncIterator[TestClient[Any, Any]]:
    """The edge, its database reached through `proxy`; tokens cached long enough to outlast an
    outage, so a refusal needs no database."""
    host, database = settings.database_url.rsplit(":", 1)
    proxied = settings.model_copy(
        update={
            "database_url": f"{host}:{proxy.port}/{database.split('/', 1)[1]}",
            "workflow_cache_ttl": 300.0,
            # How long a silent database holds a connection the ledger gave up on.
            "database_timeout": 2.0,
            "port": free_port(),
        }
    )
    server = TestServer(create_app(proxied), host="127.0.0.1", port=proxied.port)
    async with TestClient(server) as client:
        yield client
        await proxy.heal()  # let the edge close its pool the ordinary way


def _dropped(metrics: str) -> float:
    for line in metrics.splitlines():
        if line.startswith("ingest_rejections_dropped_total"):
            return float(line.split()[-1])
    return 0.0


async def test_with_its_database_cut_off_a_refusal_is_answered_at_once_and_counted_as_dropped(
    proxied_client: TestClient[Any, Any],
    proxy: FaultProxy,
    pool: asyncpg.Pool,
    make_workflow: Any,
) -> None:
    client = proxied_client
    _, token = await make_workflow()
    tasks = f"/api/v1/workflows/{token}/tasks"

    async def stored(count: int) -> bool:
        return bool(await pool.fetchval("SELECT count(*) FROM rejections") == count)

    assert (await client.post(tasks, data=b"[]", headers=JSON)).status == 400
    await wait_until(lambda: stored(1))

    await proxy.cut()
    for _ in range(3):
        started = time.monotonic()
        answered = await client.post(tasks, data=b"[]", headers=JSON)
        assert answered.status == 400
        assert time.monotonic() - started < 0.5

    async def all_dropped() -> bool:
        return _dropped(await (await client.get("/metrics")).text()) == 3

    await wait_until(all_dropped)
    assert await stored(1)

    await proxy.heal()  # the ledger stores again once its database is back

    async def recorded_again() -> bool:
        await client.post(tasks, data=b"[]", headers=JSON)
        return bool(await pool.fetchval("SELECT count(*) FROM rejections") > 1)

    await wait_until(recorded_again)


async def test_with_its_database_silent_a_refusal_is_still_answered_at_once(
    proxied_client: TestClient[Any, Any],
    proxy: FaultProxy,
    pool: asyncpg.Pool,
    make_workflow: Any,
) -> None:
    """A database that takes the bytes and never answers: the ledger gives up on it after its
    write timeout, and the requests never wait for it."""
    client = proxied_client
    _, token = await make_workflow()
    tasks = f"/api/v1/workflows/{token}/tasks"
    assert (await client.post(tasks, data=b"[]", headers=JSON)).status == 400
    await wait_until(
        lambda: _count(pool, "SELECT count(*) FROM rejections", 1)
    )  # the token is cached, the ledger has written once

    await proxy.blackhole()
    started = time.monotonic()
    for _ in range(5):
        assert (await client.post(tasks, data=b"[]", headers=JSON)).status == 400
    assert time.monotonic() - started < 1.0

    async def dropped() -> bool:
        return _dropped(await (await client.get("/metrics")).text()) == 5

    await wait_until(dropped)


async def _count(pool: asyncpg.Pool, sql: str, expected: int) -> bool:
    return bool(await pool.fetchval(sql) == expected)


def _refused(workflow: str) -> Refused:
    return Refused(
        at=time.time(),
        route="POST /api/v1/workflows/{token}/tasks",
        status=400,
        answer=b'{"error": "malformed_body", "message": "no"}',
        headers=[("Content-Type", "application/json")],
        body=b"[]",
        body_size=2,
        workflow=workflow,
    )


async def test_the_ledger_queue_is_bounded_and_drops_what_does_not_fit(
    pool: asyncpg.Pool, make_workflow: Any
) -> None:
    workflow, _ = await make_workflow()
    metrics = EdgeMetrics()
    ledger = Ledger(pool, metrics, max_queued=2)
    for _ in range(3):
        ledger.offer(_refused(workflow.public_id), 100)
    assert ledger.queued == 2
    assert metrics.rejections_dropped._value.get() == 1
    writer = asyncio.create_task(ledger.run())
    ledger.stop()
    await asyncio.wait_for(writer, 10)
    assert await pool.fetchval("SELECT count(*) FROM rejections") == 2
    ledger.offer(_refused(workflow.public_id), 100)  # stopped: taken no more
    assert metrics.rejections_dropped._value.get() == 2
