"""Workflows stored and served: the admin API and the `ingest workflow` CLI (definitions
themselves: tests/unit/ingest/test_workflows.py)."""

from __future__ import annotations

import json

from ingest.workflows import hash_token
from tests.conftest import SALES, cli, run_cli

ADMIN = {"Authorization": "Bearer admin-secret"}


async def test_token_is_stored_only_as_its_sha256(make_workflow, pool):
    workflow, token = await make_workflow()
    stored = await pool.fetchrow(
        "SELECT * FROM workflow_tokens WHERE workflow_id = $1", workflow.id
    )
    assert bytes(stored["token_hash"]) == hash_token(token)
    assert token not in json.dumps({k: str(v) for k, v in stored.items()})


async def test_admin_api_creates_lists_gets_and_shows_example(client, settings):
    response = await client.post("/api/v1/admin/workflows", json=SALES, headers=ADMIN)
    assert response.status == 201
    created = await response.json()
    assert (
        created["import_url"] == f"{settings.public_url}/api/v1/workflows/{created['token']}/tasks"
    )
    assert created["token"] in created["example_curl"]
    assert created["example_payload"]["Company ID"] == "42"
    listed = await (await client.get("/api/v1/admin/workflows", headers=ADMIN)).json()
    assert [w["id"] for w in listed] == [created["id"]]
    assert "token" not in listed[0]
    one = await client.get(f"/api/v1/admin/workflows/{created['id']}", headers=ADMIN)
    assert (await one.json())["name"] == "Sales pipeline"
    example = await client.get(f"/api/v1/admin/workflows/{created['id']}/example", headers=ADMIN)
    assert (await example.json())["example_payload"] == created["example_payload"]
    missing = await client.get("/api/v1/admin/workflows/nope", headers=ADMIN)
    assert missing.status == 404


async def test_admin_api_reports_definition_problems(client):
    response = await client.post(
        "/api/v1/admin/workflows", json={"name": "x", "stages": []}, headers=ADMIN
    )
    assert response.status == 422
    assert "at least one stage" in " ".join((await response.json())["problems"])


async def test_admin_api_needs_the_admin_token(client):
    assert (await client.get("/api/v1/admin/workflows")).status == 401
    wrong = {"Authorization": "Bearer guess"}
    assert (await client.get("/api/v1/admin/workflows", headers=wrong)).status == 401


async def test_admin_api_is_closed_without_an_admin_token(settings):
    from aiohttp.test_utils import TestClient, TestServer

    from ingest.edge.app import create_app

    closed = settings.model_copy(update={"admin_token": ""})
    async with TestClient(TestServer(create_app(closed), port=settings.port)) as client:
        response = await client.get("/api/v1/admin/workflows", headers=ADMIN)
        assert response.status == 403
        assert "INGEST_ADMIN_TOKEN" in (await response.json())["message"]


def test_cli_creates_a_workflow_from_yaml(settings, tmp_path):
    path = tmp_path / "sales.yaml"
    path.write_text(
        "name: Sales pipeline\nfields:\n  - {name: Company ID, type: text, required: true}\n"
        "  - {name: 'International?', type: checkbox}\nunique_id: Company ID\nstages: [Lead, Won]\n"
    )
    created = json.loads(run_cli(settings, "workflow", "create", str(path)))
    assert created["name"] == "Sales pipeline"
    assert created["import_url"].endswith(f"/api/v1/workflows/{created['token']}/tasks")
    assert "curl -X POST" in created["example_curl"]
    assert created["example_payload"]["Stage"] == "Lead"


def test_cli_reports_an_invalid_definition(settings, tmp_path):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"name": "x", "fields": [{"name": "a", "type": "colour"}]}))
    done = cli(settings, "workflow", "create", str(path))
    assert done.returncode == 2
    assert "unknown field type 'colour'" in done.stderr
