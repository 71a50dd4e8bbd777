"""Tokens of workflows (SPEC §8): issued beside the others, listed by prefix, revoked one by one
through the admin API and the CLI; tokens from before migration 0008 keep working."""

from __future__ import annotations

import secrets
import subprocess
import time
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import orjson
import pytest
from aiohttp.test_utils import TestClient, TestServer

from ingest import migrations, store, tokens
from ingest.edge.app import create_app
from ingest.settings import Settings
from ingest.workflows import WorkflowDefinition, hash_token
from tests.conftest import SALES, run_cli, wait_until

ADMIN = {"Authorization": "Bearer admin-secret"}


@pytest.fixture
async def edge(settings: Settings) -> AsyncIterator[TestClient[Any, Any]]:
    """An in-process edge that would cache a workflow for a minute: whatever it forgets sooner,
    a change notice made it forget."""
    cached = settings.model_copy(update={"workflow_cache_ttl": 60.0})
    server = TestServer(create_app(cached), host="127.0.0.1", port=settings.port)
    async with TestClient(server) as client:
        yield client


async def _status(client: TestClient[Any, Any], token: str) -> tuple[int, Any]:
    response = await client.get(f"/api/v1/workflows/{token}/tasks")
    return response.status, await response.json()


async def _refused_within(client: TestClient[Any, Any], token: str, seconds: float) -> float:
    """Seconds until `token` is answered like an unknown token (at most `seconds`)."""
    started = time.monotonic()
    unknown = await _status(client, secrets.token_urlsafe(32))

    async def refused() -> bool:
        return await _status(client, token) == unknown

    await wait_until(refused, within=seconds, interval=0.02)
    return time.monotonic() - started


async def test_an_issued_token_works_beside_the_first_until_each_is_revoked(edge, make_workflow):
    workflow, first = await make_workflow()
    assert (await _status(edge, first))[0] == 200  # now cached for a minute
    issued = await edge.post(f"/api/v1/admin/workflows/{workflow.public_id}/tokens", headers=ADMIN)
    assert issued.status == 201
    second = await issued.json()
    assert set(second) == {"token", "prefix"}
    assert second["prefix"] == second["token"][: tokens.PREFIX_CHARS]
    assert (await _status(edge, second["token"]))[0] == 200
    assert (await _status(edge, first))[0] == 200

    first_prefix = first[: tokens.PREFIX_CHARS]
    revoked = await edge.delete(
        f"/api/v1/admin/workflows/{workflow.public_id}/tokens/{first_prefix}", headers=ADMIN
    )
    assert revoked.status == 204
    assert await _refused_within(edge, first, 1.0) < 1.0
    assert (await _status(edge, second["token"]))[0] == 200

    listed = await edge.get(f"/api/v1/admin/workflows/{workflow.public_id}/tokens", headers=ADMIN)
    assert [t["prefix"] for t in await listed.json()] == [second["prefix"]]
    again = await edge.delete(
        f"/api/v1/admin/workflows/{workflow.public_id}/tokens/{first_prefix}", headers=ADMIN
    )
    assert again.status == 404


async def test_revoking_the_last_token_leaves_the_workflow_reachable_by_none_until_one_is_issued(
    edge, make_workflow
):
    workflow, token = await make_workflow()
    path = f"/api/v1/admin/workflows/{workflow.public_id}/tokens"
    assert (await edge.delete(f"{path}/{token}", headers=ADMIN)).status == 204  # the whole token
    await _refused_within(edge, token, 1.0)
    assert await (await edge.get(path, headers=ADMIN)).json() == []
    assert (await edge.get(f"/api/v1/admin/workflows/{workflow.public_id}", headers=ADMIN)).ok
    fresh = await (await edge.post(path, headers=ADMIN)).json()
    assert (await _status(edge, fresh["token"]))[0] == 200


async def test_tokens_are_kept_as_hashes_named_by_their_prefix(edge, make_workflow, pool):
    workflow, token = await make_workflow()
    issued = await (
        await edge.post(f"/api/v1/admin/workflows/{workflow.public_id}/tokens", headers=ADMIN)
    ).json()
    rows = await pool.fetch(
        "SELECT * FROM workflow_tokens WHERE workflow_id = $1 ORDER BY id", workflow.id
    )
    assert [bytes(r["token_hash"]) for r in rows] == [
        hash_token(token),
        hash_token(issued["token"]),
    ]
    assert [r["prefix"] for r in rows] == [token[:8], issued["token"][:8]]
    stored = repr([dict(r) for r in rows])
    assert token not in stored
    assert issued["token"] not in stored


@pytest.mark.parametrize(
    "prefix",
    ["nothere1", "%00abcdefg", "%ED%A0%80abcdefg", "x" * 300, "-"],
)
async def test_revoking_what_is_no_token_of_the_workflow_is_404(edge, make_workflow, prefix):
    workflow, token = await make_workflow()
    response = await edge.delete(
        f"/api/v1/admin/workflows/{workflow.public_id}/tokens/{prefix}", headers=ADMIN
    )
    assert response.status == 404
    assert (await response.json())["error"] == "not_found"
    assert (await _status(edge, token))[0] == 200


async def test_another_workflows_token_cannot_be_revoked_through_this_one(edge, make_workflow):
    mine, _ = await make_workflow()
    _, theirs = await make_workflow()
    for handle in (theirs, theirs[:8]):
        response = await edge.delete(
            f"/api/v1/admin/workflows/{mine.public_id}/tokens/{handle}", headers=ADMIN
        )
        assert response.status == 404
    assert (await _status(edge, theirs))[0] == 200


async def test_token_routes_need_the_admin_token_and_a_workflow(edge, make_workflow):
    workflow, token = await make_workflow()
    tokens_path = f"/api/v1/admin/workflows/{workflow.public_id}/tokens"
    for method, path in (("POST", tokens_path), ("GET", tokens_path)):
        assert (await edge.request(method, path)).status == 401
    assert (await edge.delete(f"{tokens_path}/{token[:8]}")).status == 401
    assert (await _status(edge, token))[0] == 200
    for method, path in (
        ("POST", "/api/v1/admin/workflows/nope/tokens"),
        ("GET", "/api/v1/admin/workflows/nope/tokens"),
        ("DELETE", f"/api/v1/admin/workflows/nope/tokens/{token[:8]}"),
        ("GET", "/api/v1/admin/workflows/%00/tokens"),
    ):
        response = await edge.request(method, path, headers=ADMIN)
        assert response.status == 404, (method, path)
        assert (await response.json())["message"] == "no workflow has this id"


def test_new_tokens_never_start_like_a_command_line_option() -> None:
    assert not any(tokens.new_token().startswith("-") for _ in range(2000))


async def test_the_cli_issues_lists_and_revokes_tokens(settings, make_workflow, edge):
    workflow, first = await make_workflow()
    issued = orjson.loads(run_cli(settings, "workflow", "token", "new", workflow.public_id))
    assert issued["prefix"] == issued["token"][:8]
    assert (await _status(edge, issued["token"]))[0] == 200
    listed = orjson.loads(run_cli(settings, "workflow", "token", "list", workflow.public_id))
    assert [t["prefix"] for t in listed] == [first[:8], issued["prefix"]]
    assert all(t["created_at"] for t in listed)

    assert (await _status(edge, first))[0] == 200  # cached
    out = run_cli(settings, "workflow", "token", "revoke", workflow.public_id, first[:8])
    assert "revoked" in out
    await _refused_within(edge, first, 1.0)
    with pytest.raises(subprocess.CalledProcessError) as failed:
        run_cli(settings, "workflow", "token", "revoke", workflow.public_id, first[:8])
    assert "has no token" in failed.value.stderr
    with pytest.raises(subprocess.CalledProcessError) as failed:
        run_cli(settings, "workflow", "token", "new", "nope")
    assert "no workflow has the id 'nope'" in failed.value.stderr


async def test_tokens_from_before_migration_0008_keep_working_and_are_revoked_whole(settings):
    dsn = settings.database_url + "_tokens"
    await migrations.ensure_database(dsn, 10)
    conn = await asyncpg.connect(dsn)
    try:
        await migrations.apply(conn, up_to=7)
        old_token = tokens.new_token()
        definition = WorkflowDefinition.parse(SALES).model_dump(mode="json")
        await conn.execute(
            "INSERT INTO workflows (public_id, token_hash, name, definition)"
            " VALUES ('old', $1, 'Old', $2::jsonb)",
            hash_token(old_token),
            orjson.dumps(definition).decode(),
        )
        assert [m.version for m in await migrations.apply(conn, up_to=8)] == [8]
        await conn.close()
        migrated = settings.model_copy(update={"database_url": dsn})
        async with store.open_pool(migrated, size=1) as pool:
            found = await store.workflow_by_token(pool, old_token)
            assert found is not None
            assert found.public_id == "old"
            assert [t.prefix for t in await tokens.tokens_of(pool, found.id)] == [None]
            assert not await tokens.revoke(pool, found.id, old_token[:8])
            assert await tokens.revoke(pool, found.id, old_token)
            assert await store.workflow_by_token(pool, old_token) is None
    finally:
        if not conn.is_closed():
            await conn.close()
        admin = await asyncpg.connect(settings.database_url)
        await admin.execute(f'DROP DATABASE IF EXISTS "{dsn.rsplit("/", 1)[1]}" WITH (FORCE)')
        await admin.close()
