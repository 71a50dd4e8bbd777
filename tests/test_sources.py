"""Sources (SPEC §6) through the admin API and the CLI, and deliveries through the receive route:
filters, maps, validation by the worker, status URLs; against the real Postgres and RabbitMQ.

Provider signatures end to end are in `test_sources_providers.py`; bad input in
`test_sources_input.py`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import asyncpg
import orjson
from aiohttp.test_utils import TestClient

from ingest.settings import Settings
from tests.conftest import SALES, cli, run_cli, wait_until
from tests.deliveries import (
    ADMIN,
    EXAMPLES,
    create_source,
    final_status,
    hook_path,
    path_of,
    written,
)

SECRET = "It's a Secret to Everybody"


def _definition(workflow_id: str, **overrides: Any) -> dict[str, Any]:
    return {
        "name": "Leads",
        "workflow": workflow_id,
        "verify": {"scheme": "none"},
        "map": {
            "Company ID": "lead.id",
            "Company Name": "lead.company",
            "Number of Employees": "lead.size",
            "Stage": "'In Progress'",
        },
        **overrides,
    }


# -------------------------------------------------------------------------------- the admin API


async def test_a_source_is_created_listed_shown_and_deleted_by_the_admin_api(
    client: TestClient[Any, Any], settings: Settings, make_workflow: Any
) -> None:
    workflow, _ = await make_workflow()
    definition = _definition(workflow.public_id, verify={"scheme": "github", "secrets": [SECRET]})
    response = await client.post("/api/v1/admin/sources", json=definition, headers=ADMIN)
    assert response.status == 201
    assert SECRET not in await response.text()
    created = await response.json()
    assert created["url"] == f"{settings.base_url}/api/v1/hooks/{created['id']}"
    assert len(created["id"]) >= 40  # unguessable: 256 random bits
    assert created["verify"]["scheme"] == "github"
    assert created["verify"]["secret_count"] == 1
    assert (created["workflow"], created["map"], created["respond"]) == (
        workflow.public_id,
        definition["map"],
        "async",
    )

    listed = await client.get("/api/v1/admin/sources", headers=ADMIN)
    assert await listed.json() == [created]
    one = await client.get(f"/api/v1/admin/sources/{created['id']}", headers=ADMIN)
    assert await one.json() == created
    assert SECRET not in await listed.text() + await one.text()

    gone = await client.delete(f"/api/v1/admin/sources/{created['id']}", headers=ADMIN)
    assert gone.status == 204
    for method in ("GET", "DELETE"):
        again = await client.request(
            method, f"/api/v1/admin/sources/{created['id']}", headers=ADMIN
        )
        assert again.status == 404
        assert (await again.json())["error"] == "not_found"


async def test_the_admin_api_of_sources_needs_the_admin_token(
    client: TestClient[Any, Any],
) -> None:
    for method, path in (("GET", "/api/v1/admin/sources"), ("POST", "/api/v1/admin/sources")):
        response = await client.request(method, path, json={})
        assert response.status == 401
        assert (await response.json())["error"] == "unauthorized"


async def test_an_invalid_expression_is_refused_with_the_expression_and_its_position(
    client: TestClient[Any, Any], make_workflow: Any, pool: asyncpg.Pool
) -> None:
    workflow, _ = await make_workflow()
    definition = _definition(
        workflow.public_id,
        filter="action ==",
        map={"Company ID": "lead.", "Company Name": "lead[?size > `10`", "Nope": "x"},
    )
    problems = (await create_source(client, definition, 422))["problems"]
    assert "filter: the expression 'action ==' ends too early (position 9)" in problems
    assert "map['Company ID']: the expression 'lead.' ends too early (position 5)" in problems
    assert any("'lead[?size > `10`'" in p and "position" in p for p in problems)
    assert any(p.startswith("map['Nope']:") and "no such field" in p for p in problems)
    assert await pool.fetchval("SELECT count(*) FROM sources") == 0


async def test_a_source_must_name_a_workflow_that_exists(client: TestClient[Any, Any]) -> None:
    problems = (await create_source(client, _definition("nope"), 422))["problems"]
    assert problems == ["workflow: no workflow has the public id 'nope'"]


async def test_unknown_function_and_wrong_arity_are_refused_at_creation(
    client: TestClient[Any, Any], make_workflow: Any
) -> None:
    workflow, _ = await make_workflow()
    mapping = {"Company ID": "upper(lead.id)", "Company Name": "length(lead.a, lead.b)"}
    problems = await create_source(client, _definition(workflow.public_id, map=mapping), 422)
    assert problems["problems"] == [
        "map['Company ID']: the expression 'upper(lead.id)' calls upper(), which is no JMESPath "
        "function",
        "map['Company Name']: the expression 'length(lead.a, lead.b)' calls length() with 2 "
        "argument(s); it takes 1",
    ]


# --------------------------------------------------------------------------------------- the CLI


async def test_the_cli_creates_lists_and_tests_sources(
    settings: Settings, make_workflow: Any, tmp_path: Path, pool: asyncpg.Pool
) -> None:
    workflow, _ = await make_workflow()
    definition = tmp_path / "source.yaml"
    definition.write_text(
        "name: Leads\n"
        "workflow: '<workflow id>'\n"
        "verify: {scheme: hmac, secrets: [s3cret], header: X-Signature, prefix: 'sha256='}\n"
        "filter: lead.size > `5`\n"
        "map: {Company ID: lead.id, Company Name: lead.company, Stage: \"'Done'\"}\n"
    )
    created = orjson.loads(
        run_cli(settings, "source", "create", str(definition), "--workflow", workflow.public_id)
    )
    assert created["url"] == f"{settings.base_url}/api/v1/hooks/{created['id']}"
    assert created["verify"] == {
        "scheme": "hmac",
        "secret_count": 1,
        "tolerance": 300,
        "header": "X-Signature",
        "algorithm": "sha256",
        "encoding": "hex",
        "prefix": "sha256=",
        "delivery_id_header": None,
    }
    assert orjson.loads(run_cli(settings, "source", "list")) == [created]

    payload = tmp_path / "delivery.json"
    payload.write_text('{"lead": {"id": "42", "company": "Acme", "size": 10}}')
    shown = orjson.loads(run_cli(settings, "source", "test", created["id"], str(payload)))
    assert shown == {
        "status": "mapped",
        "task": {"Company ID": "42", "Company Name": "Acme", "Stage": "Done"},
    }
    payload.write_text('{"lead": {"id": "42", "size": 1}}')
    shown = orjson.loads(run_cli(settings, "source", "test", created["id"], str(payload)))
    assert shown == {"status": "ignored"}
    payload.write_text('{"lead": {"size": "ten"}}')  # a string ordered against a number
    failed = cli(settings, "source", "test", created["id"], str(payload))
    assert failed.returncode == 1
    assert orjson.loads(failed.stdout)["error"] == "mapping_failed"
    payload.write_text("[1, 2]")
    failed = cli(settings, "source", "test", created["id"], str(payload))
    assert failed.returncode == 1
    assert orjson.loads(failed.stdout)["error"] == "malformed_body"
    assert await written(pool) == (0, 0)


async def test_the_cli_reports_every_problem_of_a_definition(
    settings: Settings, make_workflow: Any
) -> None:
    workflow, _ = await make_workflow()
    failed = cli(
        settings,
        "source",
        "create",
        str(EXAMPLES / "github-issues" / "source.json"),
        "--workflow",
        workflow.public_id,
    )
    assert failed.returncode == 2
    assert failed.stderr.startswith("invalid source definition:\n")
    assert "map['Issue ID']:" in failed.stderr  # the sales workflow has no such field
    assert "map['Opened At']:" in failed.stderr


async def test_the_cli_test_of_a_mapping_that_fails_names_the_field(
    settings: Settings, make_workflow: Any, tmp_path: Path
) -> None:
    workflow, _ = await make_workflow()
    path = tmp_path / "source.json"
    mapping = {"Company ID": "lead.id", "Company Name": "join(', ', lead.names)"}
    path.write_bytes(orjson.dumps(_definition(workflow.public_id, map=mapping)))
    created = orjson.loads(run_cli(settings, "source", "create", str(path)))
    payload = tmp_path / "delivery.json"
    payload.write_text('{"lead": {"id": "1", "names": "not a list"}}')
    failed = cli(settings, "source", "test", created["id"], str(payload))
    assert failed.returncode == 1
    shown = orjson.loads(failed.stdout)
    assert shown["error"] == "mapping_failed"
    assert "map['Company Name'] \"join(', ', lead.names)\"" in shown["message"]


# ------------------------------------------------------------------------------------ deliveries


async def test_a_mapped_delivery_becomes_a_task_through_the_queue(
    client: TestClient[Any, Any], worker: Any, make_workflow: Any, settings: Settings
) -> None:
    workflow, token = await make_workflow()
    source = await create_source(client, _definition(workflow.public_id))
    delivery = {"lead": {"id": "42", "company": "Acme", "size": 12, "extra": [1, 2]}}
    response = await client.post(hook_path(source), json=delivery)
    assert response.status == 202
    accepted = await response.json()
    assert response.headers["Location"] == accepted["status_url"]
    assert accepted["status_url"].startswith(f"{source['url']}/requests/")
    document = await final_status(client, accepted["status_url"])
    assert (document["status"], document["http_status"], document["outcome"]) == (
        "succeeded",
        201,
        "created",
    )
    task = await (await client.get(f"/api/v1/workflows/{token}/tasks/42")).json()
    assert task["Company Name"] == "Acme"
    assert task["Number of Employees"] == "12"
    assert task["Stage"] == "In Progress"
    # Unknown request ids, and ids of other sources' workflows, are 404 at a source.
    missing = await client.get(f"{hook_path(source)}/requests/nope")
    assert missing.status == 404


async def test_a_null_result_leaves_the_field_as_it_was(
    client: TestClient[Any, Any], worker: Any, make_workflow: Any
) -> None:
    workflow, _ = await make_workflow()
    source = await create_source(client, _definition(workflow.public_id, respond="sync"))
    first = {"lead": {"id": "7", "company": "Acme", "size": 3}}
    assert (await client.post(hook_path(source), json=first)).status == 201
    response = await client.post(hook_path(source), json={"lead": {"id": "7", "size": 4}})
    assert response.status == 200
    task = await response.json()
    assert (task["Company Name"], task["Number of Employees"]) == ("Acme", "4")


async def test_without_a_map_a_delivery_is_a_task_body(
    client: TestClient[Any, Any], worker: Any, make_workflow: Any
) -> None:
    workflow, _ = await make_workflow()
    definition = _definition(workflow.public_id, respond="sync")
    del definition["map"]
    source = await create_source(client, definition)
    body = {"Company ID": "9", "Company Name": "Initech", "Contract Value": 10000.50}
    response = await client.post(hook_path(source), json=body)
    assert response.status == 201
    assert (await response.json())["Contract Value"] == "10000.5"


async def test_a_filtered_delivery_is_ignored_and_writes_nothing(
    client: TestClient[Any, Any], worker: Any, make_workflow: Any, pool: asyncpg.Pool
) -> None:
    workflow, _ = await make_workflow()
    source = await create_source(client, _definition(workflow.public_id, filter="lead.size > `5`"))
    deliveries: list[Any] = [{"lead": {"id": "1", "size": 2}}, {"lead": "odd"}, {}, {"lead": []}]
    for delivery in deliveries:
        response = await client.post(hook_path(source), json=delivery)
        assert response.status == 200
        assert await response.json() == {"status": "ignored"}
    await worker.drain()
    assert await written(pool) == (0, 0)


async def test_the_mapped_task_is_validated_like_a_task_body(
    client: TestClient[Any, Any], worker: Any, make_workflow: Any, pool: asyncpg.Pool
) -> None:
    workflow, _ = await make_workflow()
    mapping = {
        "Company ID": "lead.id",
        "Number of Employees": "lead.size",
        "Expected Close Date": "lead.close",
        "Stage": "lead.stage",
    }
    source = await create_source(
        client, _definition(workflow.public_id, map=mapping, respond="sync")
    )
    delivery = {"lead": {"id": "3", "size": "many", "close": "2020-31-01", "stage": "Shipped"}}
    response = await client.post(hook_path(source), json=delivery)
    assert response.status == 422
    assert (await response.json())["errors"] == {
        "Company Name": ["can't be blank"],
        "Number of Employees": ["is not a number"],
        "Expected Close Date": ["is invalid"],
        "Stage": ["is not included in the list"],
    }
    assert await pool.fetchval("SELECT count(*) FROM tasks") == 0


async def test_an_expression_that_fails_on_an_odd_payload_is_a_422_naming_it(
    client: TestClient[Any, Any], worker: Any, make_workflow: Any, pool: asyncpg.Pool
) -> None:
    workflow, _ = await make_workflow()
    mapping = {"Company ID": "lead.id", "Company Name": "join(' ', lead.names)"}
    source = await create_source(client, _definition(workflow.public_id, map=mapping))
    odd = ({"lead": {"id": "1", "names": "Acme"}}, {"lead": {"id": "1", "names": [1, 2]}})
    for delivery in odd:
        response = await client.post(hook_path(source), json=delivery)
        assert response.status == 422
        error = await response.json()
        assert error["error"] == "mapping_failed"
        assert "map['Company Name']" in error["message"]
        assert "join(' ', lead.names)" in error["message"]
    filtered = await create_source(
        client, _definition(workflow.public_id, filter="length(lead) > `1`")
    )
    response = await client.post(hook_path(filtered), json={"lead": 5})
    assert response.status == 422
    assert (await response.json())["message"].startswith("filter 'length(lead) > `1`'")
    await worker.drain()
    assert await written(pool) == (0, 0)


async def test_a_deleted_source_stops_within_the_cache_ttl(
    client: TestClient[Any, Any], worker: Any, make_workflow: Any, settings: Settings
) -> None:
    workflow, _ = await make_workflow()
    source = await create_source(client, _definition(workflow.public_id))
    delivery = {"lead": {"id": "1", "company": "Acme"}}
    assert (await client.post(hook_path(source), json=delivery)).status == 202
    assert (
        await client.delete(f"/api/v1/admin/sources/{source['id']}", headers=ADMIN)
    ).status == 204

    async def refused() -> bool:
        response = await client.post(hook_path(source), json=delivery)
        return response.status == 404

    await wait_until(refused, within=settings.workflow_cache_ttl + 2)


async def test_a_status_url_of_a_source_reads_only_its_workflows_requests(
    client: TestClient[Any, Any], worker: Any, make_workflow: Any
) -> None:
    first, _ = await make_workflow()
    second, _ = await make_workflow({**SALES, "name": "Other"})
    mine = await create_source(client, _definition(first.public_id))
    theirs = await create_source(client, _definition(second.public_id))
    response = await client.post(hook_path(mine), json={"lead": {"id": "1", "company": "A"}})
    status_url = (await response.json())["status_url"]
    request_id = status_url.rsplit("/", 1)[1]
    assert (await client.get(path_of(status_url))).status == 200
    foreign = await client.get(f"{hook_path(theirs)}/requests/{request_id}")
    assert foreign.status == 404
