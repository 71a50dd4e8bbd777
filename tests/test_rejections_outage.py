"""The ledger of rejections never holds a request up (SPEC §8): with its database cut off, a
refusal is answered at once and the rejection dropped and counted; its queue is bounded. Nor does
a flood fill it: each workflow's rejections are recorded within a budget, 429s once in a while,
and the rest only counted."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient, TestServer

from ingest.edge.app import create_app
from ingest.edge.ledger import RATE_LIMITED_EVERY, RECORD_BURST, RECORD_RATE, Ledger
from ingest.edge.metrics import EdgeMetrics
from ingest.rejections import Refused
from ingest.settings import Settings
from tests.conftest import SEED_REQUEST, free_port, wait_until
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


# ------------------------------------------------------------------------------------- floods


def _sample(metrics: str, name: str) -> float:
    """The sum of a metric's samples (every label set)."""
    return sum(
        float(line.split()[-1])
        for line in metrics.splitlines()
        if line.startswith(name + "{") or line.startswith(name + " ")
    )


async def _recorded(pool: asyncpg.Pool, workflow_id: int) -> list[Any]:
    return await pool.fetch(
        "SELECT status, unrecorded_before FROM rejections WHERE workflow_id = $1 ORDER BY id",
        workflow_id,
    )


async def test_a_flood_of_400s_is_recorded_as_a_bounded_sample_and_others_still_whole(
    client: TestClient[Any, Any], pool: asyncpg.Pool, make_workflow: Any
) -> None:
    flooding, flooding_token = await make_workflow()
    quiet, quiet_token = await make_workflow()
    started = time.monotonic()
    for _ in range(300):
        sent = await client.post(
            f"/api/v1/workflows/{flooding_token}/tasks", data=b"[]", headers=JSON
        )
        assert sent.status == 400
    elapsed = time.monotonic() - started
    for _ in range(3):
        sent = await client.post(f"/api/v1/workflows/{quiet_token}/tasks", data=b"[]", headers=JSON)
        assert sent.status == 400

    async def quiet_ones_stored() -> bool:  # stored in order: the flood's are in before them
        return len(await _recorded(pool, quiet.id)) == 3

    await wait_until(quiet_ones_stored)
    recorded = await _recorded(pool, flooding.id)
    assert RECORD_BURST <= len(recorded) <= RECORD_BURST + RECORD_RATE * elapsed + 1
    assert [row["unrecorded_before"] for row in recorded[:RECORD_BURST]] == [0] * RECORD_BURST
    # A rejection recorded after the burst says how many it follows that were left out.
    assert all(row["unrecorded_before"] > 0 for row in recorded[RECORD_BURST:])
    metrics = await (await client.get("/metrics")).text()
    assert _sample(metrics, "ingest_rejections_total") == 303  # every one is counted
    assert _sample(metrics, "ingest_rejections_unrecorded_total") == 300 - len(recorded)
    assert _sample(metrics, "ingest_rejections_dropped_total") == 0


async def test_a_client_hammering_a_429_costs_one_row_per_interval(
    settings: Settings, pool: asyncpg.Pool, make_workflow: Any
) -> None:
    flooding, flooding_token = await make_workflow()
    quiet, quiet_token = await make_workflow()
    limited = settings.model_copy(update={"rate_limit": 1.0, "rate_burst": 1})
    server = TestServer(create_app(limited), host="127.0.0.1", port=limited.port)
    async with TestClient(server) as client:
        started = time.monotonic()
        statuses = [await _post_seed(client, flooding_token) for _ in range(300)]
        elapsed = time.monotonic() - started
        # The rate lets one in a second, and the edge may hold one more it leased.
        assert statuses.count(429) >= 300 - 2 - elapsed
        assert [await _post_seed(client, quiet_token) for _ in range(2)] == [202, 429]

        async def quiet_one_stored() -> bool:
            return len(await _recorded(pool, quiet.id)) == 1

        await wait_until(quiet_one_stored)
        recorded = await _recorded(pool, flooding.id)
        assert {row["status"] for row in recorded} == {429}
        assert 1 <= len(recorded) <= 1 + elapsed / RATE_LIMITED_EVERY + 1
        metrics = await (await client.get("/metrics")).text()
        assert _sample(metrics, "ingest_rejections_total") == statuses.count(429) + 1
        assert _sample(metrics, "ingest_rejections_unrecorded_total") == statuses.count(429) - len(
            recorded
        )


async def _post_seed(client: TestClient[Any, Any], token: str) -> int:
    sent = await client.post(
        f"/api/v1/workflows/{token}/tasks", json=SEED_REQUEST, headers={"Prefer": "respond-async"}
    )
    return sent.status
