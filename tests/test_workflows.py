"""Workflow definitions (SPEC §3), the admin API and the `ingest workflow` CLI."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from ingest.errors import DefinitionError
from ingest.workflows import FieldType, WorkflowDefinition, example_payload, hash_token
from tests.conftest import ROOT, SALES, run_cli, service_env

ADMIN = {"Authorization": "Bearer admin-secret"}


def problems_of(definition):
    with pytest.raises(DefinitionError) as caught:
        WorkflowDefinition.parse(definition)
    return " | ".join(caught.value.problems)


def test_every_flowdash_field_type_is_accepted():
    fields = [
        {
            "name": kind.value,
            "type": kind.value,
            **({"options": ["a", "b"]} if "Select" in kind.value else {}),
        }
        for kind in FieldType
    ]
    definition = WorkflowDefinition.parse({"name": "All", "fields": fields, "members": ["a@b.co"]})
    assert [spec.type for spec in definition.fields] == list(FieldType)
    assert [spec.id for spec in definition.fields] == list(range(1, len(FieldType) + 1))


def test_unknown_type_is_named():
    assert "unknown field type 'colour'" in problems_of(
        {"name": "x", "fields": [{"name": "a", "type": "colour"}]}
    )


def test_duplicate_names_are_refused():
    fields = [{"name": "a", "type": "text"}, {"name": "a", "type": "number"}]
    assert "used more than once" in problems_of({"name": "x", "fields": fields})


def test_built_in_names_cannot_be_redefined():
    assert "built-in" in problems_of({"name": "x", "fields": [{"name": "Stage", "type": "text"}]})


def test_unique_id_must_name_a_field():
    assert "names no field" in problems_of({"name": "x", "fields": [], "unique_id": "Company ID"})


def test_select_without_options_is_refused():
    assert "needs a non-empty 'options'" in problems_of(
        {"name": "x", "fields": [{"name": "Region", "type": "singleSelect"}]}
    )


def test_empty_stage_list_is_refused():
    assert "at least one stage" in problems_of({"name": "x", "stages": []})


def test_members_must_be_emails():
    assert "not an email" in problems_of({"name": "x", "members": ["bob"]})


def test_several_problems_are_reported_together():
    problems = problems_of(
        {
            "name": "x",
            "fields": [{"name": "R", "type": "multipleSelect"}],
            "unique_id": "Q",
            "stages": [],
        }
    )
    assert "needs a non-empty 'options'" in problems
    assert "names no field" in problems
    assert "at least one stage" in problems


def test_example_payload_reflects_the_schema():
    definition = WorkflowDefinition.parse(
        {
            **SALES,
            "fields": [
                *SALES["fields"],
                {"name": "Region", "type": "singleSelect", "options": ["EMEA"]},
            ],
        }
    )
    payload = example_payload(definition)
    assert set(payload) == {spec.name for spec in definition.fields} | {"Stage", "Assigned To"}
    assert payload["Region"] == "EMEA"
    assert payload["Stage"] == "Not Started"
    assert isinstance(payload["International?"], bool)


async def test_token_is_stored_only_as_its_sha256(make_workflow, pool):
    workflow, token = await make_workflow()
    stored = await pool.fetchrow("SELECT * FROM workflows WHERE id = $1", workflow.id)
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
    done = subprocess.run(
        [sys.executable, "-m", "ingest", "workflow", "create", str(path)],
        env=service_env(settings),
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    assert done.returncode == 2
    assert "unknown field type 'colour'" in done.stderr
