"""The rate limit is shared by every edge (ingest.edge.ratelimit): `INGEST_RATE_LIMIT` means the
same number however many edges run, against the real Postgres and edge processes."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
from aiohttp.test_utils import TestClient, TestServer

from ingest import store
from ingest.edge.app import create_app
from ingest.edge.ratelimit import LEASE_TIMEOUT, SharedBuckets
from tests.conftest import SEED_REQUEST, wait_until
from tests.edges import edge_processes

ASYNC = {"Prefer": "respond-async"}


async def _hammer(url: str, token: str, seconds: float, connections: int = 4) -> dict[int, int]:
    """Send task requests to one edge for `seconds` over `connections` keep-alive connections;
    how many got each status."""
    statuses: dict[int, int] = {}
    deadline = time.monotonic() + seconds

    async def one_connection(session: aiohttp.ClientSession) -> None:
        n = 0
        while time.monotonic() < deadline:
            n += 1
            body = {**SEED_REQUEST, "Company ID": f"{id(session)}-{n}"}
            async with session.post(
                f"{url}/api/v1/workflows/{token}/tasks", json=body, headers=ASYNC
            ) as response:
                statuses[response.status] = statuses.get(response.status, 0) + 1
                if response.status == 429:
                    assert int(response.headers["Retry-After"]) >= 1
                    await asyncio.sleep(0.005)  # a pushy client, not a busy loop

    connector = aiohttp.TCPConnector(limit=connections)
    async with aiohttp.ClientSession(connector=connector) as session:
        await asyncio.gather(*(one_connection(session) for _ in range(connections)))
    return statuses


async def test_two_edges_accept_one_rate_limit_between_them(settings, make_workflow, tmp_path):
    _, token = await make_workflow()
    env = {"INGEST_RATE_LIMIT": "20", "INGEST_RATE_BURST": "20", "INGEST_EDGES": "2"}
    async with edge_processes(settings, 2, tmp_path, **env) as (first, second):
        # One client on one edge gets the whole limit, not half of it: the burst and 2 s of 20.
        alone = await _hammer(first, token, 2.0)
        assert 50 <= alone[202] <= 20 + 40 + 2 + 5, alone
        # Both edges hammered: together they accept 2 s of 20 (the bucket is empty now), plus at
        # most a slice (2 tasks) unspent per edge and what timing adds; per-edge buckets would
        # have let in 20 + 40 more on the second edge.
        both = await asyncio.gather(_hammer(first, token, 2.0), _hammer(second, token, 2.0))
    accepted = [statuses.get(202, 0) for statuses in both]
    assert 30 <= sum(accepted) <= 40 + 2 * 2 + 5, both
    assert all(accepted), both  # each edge took its turns
    assert all(set(statuses) <= {202, 429} for statuses in (alone, *both))


async def test_a_batch_leaves_the_shared_bucket_in_debt_and_the_other_edge_says_how_long(
    settings, make_workflow, tmp_path
):
    _, token = await make_workflow()
    env = {"INGEST_RATE_LIMIT": "20", "INGEST_RATE_BURST": "20", "INGEST_EDGES": "2"}
    batch = [{**SEED_REQUEST, "Company ID": str(n)} for n in range(60)]
    async with (
        edge_processes(settings, 2, tmp_path, **env) as (first, second),
        aiohttp.ClientSession() as session,
    ):
        async with session.post(
            f"{first}/api/v1/workflows/{token}/tasks/batch", json=batch, headers=ASYNC
        ) as response:
            assert response.status == 202  # larger than the burst, let in on a full bucket
        async with session.post(
            f"{second}/api/v1/workflows/{token}/tasks", json=SEED_REQUEST, headers=ASYNC
        ) as response:
            assert response.status == 429
            assert (await response.json())["error"] == "rate_limited"
            # 40 tasks of debt and one more, at 20 a second: 2.05 s, so 3 whole seconds (or 2,
            # had the request taken its time getting here).
            assert response.headers["Retry-After"] in {"2", "3"}


async def _edge(settings: Any, **changes: Any) -> TestClient[Any, Any]:
    server = TestServer(create_app(settings.model_copy(update=changes)), port=settings.port)
    return TestClient(server)


async def test_while_the_shared_bucket_cannot_answer_an_edge_takes_its_share_at_once(
    settings, make_workflow, pool
):
    _, token = await make_workflow()
    url = f"/api/v1/workflows/{token}/tasks"
    async with (
        # A burst of 10, and so slow a rate that nothing comes back while the test runs.
        await _edge(settings, rate_limit=0.1, rate_burst=10, edges=2) as client,
        pool.acquire() as blocker,
    ):
        # Postgres as slow as it gets for the rate limit: every lease waits for this lock.
        transaction = blocker.transaction()
        await transaction.start()
        await blocker.execute("LOCK TABLE rate_buckets IN ACCESS EXCLUSIVE MODE")
        statuses, slowest = [], 0.0
        for _ in range(8):
            started = time.monotonic()
            response = await client.post(url, json=SEED_REQUEST, headers=ASYNC)
            slowest = max(slowest, time.monotonic() - started)
            statuses.append(response.status)
        await transaction.rollback()
        assert statuses == [202] * 5 + [429] * 3  # half the burst: this edge's share of two
        assert slowest < LEASE_TIMEOUT + 0.5
        assert await _local_share(client) == 1  # operators see it on /metrics

        async def shared_again() -> bool:
            await client.post(url, json=SEED_REQUEST, headers=ASYNC)
            return bool(await pool.fetchval("SELECT count(*) FROM rate_buckets"))

        # Tried again a second later, the shared bucket takes over again.
        await wait_until(shared_again, within=5)
        assert await _local_share(client) == 0


async def _local_share(client) -> float:
    text = await (await client.get("/metrics")).text()
    [value] = [
        line.split()[-1]
        for line in text.splitlines()
        if line.startswith("ingest_rate_limit_local_share ")
    ]
    return float(value)


async def test_no_rate_limit_never_touches_the_shared_buckets(client, make_workflow, pool):
    _, token = await make_workflow()
    for _ in range(5):
        response = await client.post(
            f"/api/v1/workflows/{token}/tasks", json=SEED_REQUEST, headers=ASYNC
        )
        assert response.status == 202
    assert await pool.fetchval("SELECT count(*) FROM rate_buckets") == 0


async def test_concurrent_leases_from_several_pools_never_grant_more_than_the_bucket(
    settings, make_workflow
):
    workflow, _ = await make_workflow()
    async with (
        store.open_pool(settings, size=4) as one,
        store.open_pool(settings, size=4) as other,
    ):
        edges = [SharedBuckets(one), SharedBuckets(other)]
        # No refill to speak of (a task every 1000 s): the 100 of the first burst are all there is.
        leases = await asyncio.gather(
            *(edges[n % 2].lease(workflow.id, 0.001, 100.0, 1.0, 5.0) for n in range(60))
        )
        assert sum(lease.granted for lease in leases) == 100
        assert all(lease.granted in (0, 5) for lease in leases)
        assert (await edges[0].lease(workflow.id, 0.001, 100.0, 1.0, 5.0)).granted == 0


async def test_a_deleted_workflow_takes_its_bucket_with_it(make_workflow, pool):
    workflow, _ = await make_workflow()
    assert (await SharedBuckets(pool).lease(workflow.id, 1.0, 10.0, 1.0, 1.0)).granted == 1
    await pool.execute("DELETE FROM workflows WHERE id = $1", workflow.id)
    assert await pool.fetchval("SELECT count(*) FROM rate_buckets") == 0
    # A lease racing the delete lets the request through; the worker refuses the workflow.
    assert (await SharedBuckets(pool).lease(workflow.id, 1.0, 10.0, 1.0, 1.0)).granted == 1
