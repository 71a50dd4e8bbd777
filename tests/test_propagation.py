"""Changes reach every process within a second (SPEC §8): a revoked token, a changed workflow. Each
edge and worker LISTENs for change notices (`ingest.notices`); the edges here cache a workflow for
a minute, so whatever they forget sooner, a notice made them forget. A listener whose connection
is killed connects again and drops everything cached, since it may have missed notices."""

from __future__ import annotations

import asyncio
import secrets
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import aio_pika
import aiohttp
import asyncpg
import orjson
from aiohttp.test_utils import TestClient, TestServer

from ingest.edge.app import create_app
from ingest.messages import Operation, TaskBatch, TaskRequest
from ingest.settings import Settings
from ingest.workflows import Workflow, hash_token
from tests.conftest import SALES, SEED_REQUEST, wait_until
from tests.deliveries import create_source, hook_path
from tests.edges import edge_processes

ADMIN = {"Authorization": "Bearer admin-secret"}
#: A minute: far longer than any test waits, so only a notice can make an edge forget.
LONG_TTL = "60"
WITH_REGION = {**SALES, "fields": [*SALES["fields"], {"name": "Region", "type": "text"}]}


async def _status(http: aiohttp.ClientSession, url: str, token: str) -> tuple[int, Any]:
    async with http.get(f"{url}/api/v1/workflows/{token}/tasks") as response:
        return response.status, await response.json()


async def _seconds_until(check: Callable[[], Awaitable[bool]], within: float) -> float:
    started = time.monotonic()
    await wait_until(check, within=within, interval=0.02)
    return time.monotonic() - started


async def test_a_token_revoked_through_one_edge_is_refused_by_every_edge_within_a_second(
    settings, make_workflow, tmp_path
):
    workflow, token = await make_workflow()
    async with (
        edge_processes(settings, 2, tmp_path, INGEST_WORKFLOW_CACHE_TTL=LONG_TTL) as (a, b),
        aiohttp.ClientSession() as http,
    ):
        for url in (a, b):
            assert (await _status(http, url, token))[0] == 200  # cached for a minute
        unknown = await _status(http, b, secrets.token_urlsafe(32))
        path = f"/api/v1/admin/workflows/{workflow.public_id}/tokens/{token[:8]}"
        async with http.delete(f"{a}{path}", headers=ADMIN) as revoked:
            assert revoked.status == 204

        async def refused_by(url: str) -> bool:
            return await _status(http, url, token) == unknown

        elapsed = await asyncio.gather(
            *(_seconds_until(lambda url=url: refused_by(url), within=1.0) for url in (b, a))
        )
        assert max(elapsed) < 1.0


async def test_a_workflow_change_is_used_by_every_edge_and_the_worker_within_a_second(
    settings, make_workflow, worker, tmp_path
):
    workflow, token = await make_workflow()
    async with (
        edge_processes(settings, 2, tmp_path, INGEST_WORKFLOW_CACHE_TTL=LONG_TTL) as (a, b),
        aiohttp.ClientSession() as http,
    ):
        # Both edges and the worker hold version 1 now.
        task = f"/api/v1/workflows/{token}/tasks/{SEED_REQUEST['Company ID']}"
        async with http.post(f"{a}/api/v1/workflows/{token}/tasks", json=SEED_REQUEST) as made:
            assert made.status == 201
        for url in (a, b):
            async with http.get(f"{url}{task}") as shown:
                assert "Region" not in await shown.json()

        async with http.patch(
            f"{a}/api/v1/admin/workflows/{workflow.public_id}",
            json={"fields": WITH_REGION["fields"]},
            headers=ADMIN,
        ) as changed:
            assert changed.status == 200, await changed.text()
            assert "Region" in {f["name"] for f in (await changed.json())["fields"]}

        async def rendered_by(url: str) -> bool:
            async with http.get(f"{url}{task}") as shown:
                return "Region" in await shown.json()

        elapsed = await asyncio.gather(
            # A request accepted under version 1 and applied after the change: the worker,
            # told of version 2, applies it under version 2.
            _seconds_until(lambda: _applied_under_the_new_version(settings, workflow), 1.0),
            *(_seconds_until(lambda url=url: rendered_by(url), 1.0) for url in (b, a)),
        )
        assert max(elapsed) < 1.0


async def test_a_workflow_deleted_through_one_edge_is_unknown_to_every_edge_within_a_second(
    settings, make_workflow, tmp_path
):
    workflow, token = await make_workflow()
    async with (
        edge_processes(settings, 2, tmp_path, INGEST_WORKFLOW_CACHE_TTL=LONG_TTL) as (a, b),
        aiohttp.ClientSession() as http,
    ):
        for url in (a, b):
            assert (await _status(http, url, token))[0] == 200  # cached for a minute
        unknown = await _status(http, b, secrets.token_urlsafe(32))
        path = f"/api/v1/admin/workflows/{workflow.public_id}"
        async with http.delete(f"{a}{path}", headers=ADMIN) as deleted:
            assert deleted.status == 204

        async def unknown_to(url: str) -> bool:
            return await _status(http, url, token) == unknown

        elapsed = await asyncio.gather(
            *(_seconds_until(lambda url=url: unknown_to(url), within=1.0) for url in (b, a))
        )
        assert max(elapsed) < 1.0


async def _applied_under_the_new_version(settings: Settings, workflow: Workflow) -> bool:
    """Publish a request that names version 1 and sets the new field; True once the worker
    applied it (False: it refused the field, as version 1 would)."""
    body = {**SEED_REQUEST, "Region": "EMEA"}
    request = TaskRequest(
        uuid.uuid4(),
        workflow.id,
        1,
        Operation.UPSERT,
        orjson.dumps(body).decode(),
        0.0,
        wants_reply=False,
    )
    connection = await aio_pika.connect(settings.amqp_url, timeout=10)
    async with connection:
        channel = await connection.channel()
        exchange = await channel.get_exchange(settings.queue)
        message = aio_pika.Message(TaskBatch((request,)).encode(), delivery_mode=2)
        await exchange.publish(message, routing_key=settings.queue)
    conn = await asyncpg.connect(settings.database_url)
    try:
        status = await wait_until(
            lambda: conn.fetchval(
                "SELECT http_status FROM request_results WHERE request_id = $1", request.id
            ),
            within=5,
            interval=0.01,
        )
    finally:
        await conn.close()
    return bool(status == 200)


async def _listener_pid(pool: asyncpg.Pool, role: str) -> int | None:
    pid: int | None = await pool.fetchval(
        "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
        " AND application_name LIKE $1",
        f"ingest-changes-{role}-%",
    )
    return pid


async def test_a_listener_whose_connection_is_killed_listens_again_and_drops_every_cache(
    settings, make_workflow, pool, worker
):
    workflow, token = await make_workflow()
    cached = settings.model_copy(update={"workflow_cache_ttl": float(LONG_TTL)})
    server = TestServer(create_app(cached), host="127.0.0.1", port=settings.port)
    async with TestClient(server) as edge, aiohttp.ClientSession() as http:
        url = str(edge.make_url("")).rstrip("/")
        issued = await edge.post(
            f"/api/v1/admin/workflows/{workflow.public_id}/tokens", headers=ADMIN
        )
        second = (await issued.json())["token"]
        assert (await _status(http, url, token))[0] == 200
        # Revoked behind every listener's back (no notice): the edge serves it from its cache.
        await pool.execute("DELETE FROM workflow_tokens WHERE token_hash = $1", hash_token(token))
        assert (await _status(http, url, token))[0] == 200

        killed = {role: await _listener_pid(pool, role) for role in ("edge", "worker")}
        assert None not in killed.values()
        await pool.execute(
            "SELECT pg_terminate_backend(pid) FROM unnest($1::int[]) AS pid", list(killed.values())
        )

        async def listening_again(role: str) -> bool:
            pid = await _listener_pid(pool, role)
            return pid not in (None, killed[role])

        for role in killed:
            await wait_until(lambda role=role: listening_again(role), within=10, interval=0.02)
        # Listening again, it dropped what it cached: the token revoked unannounced is refused
        # (a minute before its entry would have expired).

        async def refused(revoked: str) -> bool:
            return (await _status(http, url, revoked))[0] == 404

        await wait_until(lambda: refused(token), within=1.0, interval=0.02)
        # And notices are heard over the new connection.
        assert (await _status(http, url, second))[0] == 200
        revoked = await edge.delete(
            f"/api/v1/admin/workflows/{workflow.public_id}/tokens/{second[:8]}", headers=ADMIN
        )
        assert revoked.status == 204
        assert await _seconds_until(lambda: refused(second), 1.0) < 1.0


async def test_a_deleted_source_is_refused_by_the_edge_within_a_second(
    settings, make_workflow, worker
):
    workflow, _ = await make_workflow()
    cached = settings.model_copy(update={"workflow_cache_ttl": float(LONG_TTL)})
    server = TestServer(create_app(cached), host="127.0.0.1", port=settings.port)
    async with TestClient(server) as edge:
        source = await create_source(
            edge,
            {
                "name": "Leads",
                "workflow": workflow.public_id,
                "verify": {"scheme": "none"},
                "map": {"Company ID": "lead.id", "Company Name": "lead.company"},
            },
        )
        delivery = {"lead": {"id": "1", "company": "Acme"}}
        assert (await edge.post(hook_path(source), json=delivery)).status == 202  # cached
        deleted = await edge.delete(f"/api/v1/admin/sources/{source['id']}", headers=ADMIN)
        assert deleted.status == 204

        async def refused() -> bool:
            return (await edge.post(hook_path(source), json=delivery)).status == 404

        assert await _seconds_until(refused, 1.0) < 1.0
