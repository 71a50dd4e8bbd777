"""POST /api/v1/workflows/{token}/tasks through RabbitMQ and a worker into Postgres, and back."""

from __future__ import annotations

import json
import uuid
from decimal import Decimal

import pytest

from ingest.messages import Operation, TaskRequest
from tests.conftest import SALES, SEED_REQUEST, SEED_RESPONSE, publish_batches, wait_until


def tasks_url(token: str) -> str:
    return f"/api/v1/workflows/{token}/tasks"


async def post(client, token, body, headers=None):
    response = await client.post(tasks_url(token), json=body, headers=headers)
    return response.status, await response.json()


async def test_seed_request_round_trips_to_flowdash_response(
    client, worker, make_workflow, settings
):
    workflow, token = await make_workflow()
    status, body = await post(client, token, SEED_REQUEST)
    assert status == 201
    task_url = body.pop("Task URL")
    assert body == SEED_RESPONSE
    assert list(body)[:2] == ["Stage", "Assigned To"]
    assert task_url.startswith(f"{settings.public_url}/workflows/{workflow.public_id}/tasks/")
    assert token not in task_url


async def test_task_url_returns_the_task_without_the_token(client, worker, make_workflow):
    _, token = await make_workflow()
    _, created = await post(client, token, SEED_REQUEST)
    path = created["Task URL"].split("://", 1)[1].split("/", 1)[1]
    response = await client.get("/" + path)
    assert response.status == 200
    assert await response.json() == created


async def test_seed_invalid_date_gives_flowdash_422(client, worker, make_workflow):
    _, token = await make_workflow()
    status, body = await post(client, token, {**SEED_REQUEST, "Expected Close Date": "2020-31-01"})
    assert status == 422
    assert body == {"errors": {"Expected Close Date": ["is invalid"]}}


async def test_duplicate_unique_id_updates_only_supplied_fields(
    client, worker, make_workflow, pool
):
    _, token = await make_workflow()
    await post(client, token, SEED_REQUEST)
    status, body = await post(client, token, {"Company ID": "42", "Number of Employees": "20"})
    assert status == 200
    assert body["Number of Employees"] == "20"
    assert {k: v for k, v in body.items() if k not in ("Number of Employees", "Task URL")} == {
        k: v for k, v in SEED_RESPONSE.items() if k != "Number of Employees"
    }
    assert await pool.fetchval("SELECT count(*) FROM tasks") == 1


async def test_resending_the_same_values_is_unchanged(client, worker, make_workflow, pool):
    _, token = await make_workflow()
    await post(client, token, SEED_REQUEST)
    status, _ = await post(client, token, SEED_REQUEST)
    assert status == 200
    outcomes = await pool.fetch("SELECT outcome FROM request_results ORDER BY completed_at")
    assert [r["outcome"] for r in outcomes] == ["created", "unchanged"]


@pytest.mark.parametrize(
    ("change", "field", "message"),
    [
        ({"Color": "red"}, "Color", "is not a field of this workflow"),
        ({"Stage": "Shipped"}, "Stage", "is not included in the list"),
        (
            {"Assigned To": "stranger@example.com"},
            "Assigned To",
            "is not a member of this workflow",
        ),
        ({"Number of Employees": "many"}, "Number of Employees", "is not a number"),
        ({"International?": "maybe"}, "International?", "is invalid"),
    ],
)
async def test_invalid_values_get_flowdash_messages(
    client, worker, make_workflow, change, field, message
):
    _, token = await make_workflow()
    status, body = await post(client, token, {**SEED_REQUEST, **change})
    assert status == 422
    assert body == {"errors": {field: [message]}}


async def test_bad_select_option_is_not_included_in_the_list(client, worker, make_workflow):
    definition = {
        **SALES,
        "fields": [
            *SALES["fields"],
            {"name": "Region", "type": "singleSelect", "options": ["EMEA", "APAC"]},
        ],
    }
    _, token = await make_workflow(definition)
    status, body = await post(client, token, {**SEED_REQUEST, "Region": "Mars"})
    assert (status, body) == (422, {"errors": {"Region": ["is not included in the list"]}})
    status, body = await post(client, token, {**SEED_REQUEST, "Region": "EMEA"})
    assert (status, body["Region"]) == (201, "EMEA")


async def test_every_error_is_reported_at_once(client, worker, make_workflow):
    _, token = await make_workflow()
    status, body = await post(
        client,
        token,
        {"Company ID": "7", "Expected Close Date": "soon", "Stage": "Nope", "Extra": 1},
    )
    assert status == 422
    assert body["errors"] == {
        "Expected Close Date": ["is invalid"],
        "Stage": ["is not included in the list"],
        "Extra": ["is not a field of this workflow"],
        "Company Name": ["can't be blank"],
    }


async def test_missing_required_field_fails_on_create_but_not_on_update(
    client, worker, make_workflow
):
    _, token = await make_workflow()
    status, body = await post(client, token, {"Company ID": "9"})
    assert (status, body) == (422, {"errors": {"Company Name": ["can't be blank"]}})
    assert (await post(client, token, {"Company ID": "9", "Company Name": "Nine"}))[0] == 201
    status, body = await post(client, token, {"Company ID": "9", "International?": True})
    assert status == 200
    assert body["Company Name"] == "Nine"


async def test_missing_unique_id_value_is_blank(client, worker, make_workflow):
    _, token = await make_workflow()
    status, body = await post(client, token, {"Company Name": "Nameless"})
    assert (status, body) == (422, {"errors": {"Company ID": ["can't be blank"]}})
    status, body = await post(client, token, {"Company ID": "  ", "Company Name": "Blank"})
    assert (status, body) == (422, {"errors": {"Company ID": ["can't be blank"]}})


async def test_values_are_stored_exactly_in_typed_columns(client, worker, make_workflow, pool):
    _, token = await make_workflow()
    big = "12345678901234567890.12345678901234567890"
    response = await client.post(
        tasks_url(token),
        data=f'{{"Company ID": "1", "Company Name": "X", "Contract Value": {big},'
        ' "International?": true,'
        ' "Expected Close Date": "2021-02-03"}',
        headers={"Content-Type": "application/json"},
    )
    assert response.status == 201
    assert (await response.json())["Contract Value"] == big
    stored = await pool.fetchval("SELECT fields::text FROM tasks")
    # One row per task; numbers stay JSON numbers, digit for digit (jsonb keeps them as numeric).
    assert f": {big}" in stored
    values = json.loads(stored, parse_float=Decimal, parse_int=Decimal)
    assert Decimal(big) in values.values()
    assert True in values.values()
    assert "2021-02-03" in values.values()


async def test_workflow_without_unique_id_always_creates(client, worker, make_workflow, pool):
    definition = {
        "name": "Inbox",
        "fields": [{"name": "Subject", "type": "text"}],
        "stages": ["New"],
    }
    _, token = await make_workflow(definition)
    assert (await post(client, token, {"Subject": "a"}))[0] == 201
    assert (await post(client, token, {"Subject": "a"}))[0] == 201
    assert await pool.fetchval("SELECT count(*) FROM tasks") == 2


async def test_put_updates_and_is_404_when_missing(client, worker, make_workflow):
    _, token = await make_workflow()
    response = await client.put(tasks_url(token), json={"Company ID": "404"})
    assert response.status == 404
    await post(client, token, SEED_REQUEST)
    response = await client.put(tasks_url(token), json={"Company ID": "42", "Stage": "Done"})
    assert response.status == 200
    assert (await response.json())["Stage"] == "Done"


async def test_get_task_by_unique_id(client, worker, make_workflow):
    _, token = await make_workflow()
    _, created = await post(client, token, SEED_REQUEST)
    response = await client.get(f"{tasks_url(token)}/42")
    assert response.status == 200
    assert await response.json() == created
    assert (await client.get(f"{tasks_url(token)}/43")).status == 404


async def test_respond_async_gives_202_and_a_status_url_that_succeeds(
    client, worker, make_workflow
):
    _, token = await make_workflow()
    response = await client.post(
        tasks_url(token), json=SEED_REQUEST, headers={"Prefer": "respond-async"}
    )
    assert response.status == 202
    assert response.headers["Preference-Applied"] == "respond-async"
    body = await response.json()
    assert body["status"] == "pending"
    assert response.headers["Location"] == body["status_url"]
    path = "/" + body["status_url"].split("://", 1)[1].split("/", 1)[1]

    async def finished():
        document = await (await client.get(path)).json()
        return document if document["status"] != "pending" else None

    document = await wait_until(finished)
    assert document["status"] == "succeeded"
    assert document["http_status"] == 201
    assert document["outcome"] == "created"
    assert document["task"]["Company ID"] == "42"


async def test_sync_request_with_workers_stopped_gets_202_and_succeeds_once_a_worker_starts(
    client, stopped_worker, make_workflow
):
    _, token = await make_workflow()
    response = await client.post(tasks_url(token), json=SEED_REQUEST, headers={"Prefer": "wait=1"})
    assert response.status == 202
    path = "/" + response.headers["Location"].split("://", 1)[1].split("/", 1)[1]
    assert (await (await client.get(path)).json())["status"] == "pending"
    await stopped_worker.start()

    async def succeeded():
        return (await (await client.get(path)).json())["status"] == "succeeded"

    await wait_until(succeeded)


async def test_failed_validation_status_document_lists_errors(client, worker, make_workflow):
    _, token = await make_workflow()
    response = await client.post(
        tasks_url(token), json={"Company ID": "1"}, headers={"Prefer": "respond-async"}
    )
    path = "/" + response.headers["Location"].split("://", 1)[1].split("/", 1)[1]

    async def finished():
        document = await (await client.get(path)).json()
        return document if document["status"] != "pending" else None

    document = await wait_until(finished)
    assert document["status"] == "failed"
    assert document["http_status"] == 422
    assert document["errors"] == {"Company Name": ["can't be blank"]}


async def test_status_url_of_unknown_or_foreign_request_is_404(client, worker, make_workflow):
    _, token = await make_workflow()
    _, other_token = await make_workflow()
    response = await client.post(
        tasks_url(token), json=SEED_REQUEST, headers={"Prefer": "respond-async"}
    )
    request_id = (await response.json())["id"]
    assert (
        await client.get(f"/api/v1/workflows/{other_token}/requests/{request_id}")
    ).status == 404
    forged = request_id[:-2] + ("AA" if not request_id.endswith("AA") else "BB")
    assert (await client.get(f"/api/v1/workflows/{token}/requests/{forged}")).status == 404
    assert (await client.get(f"/api/v1/workflows/{token}/requests/nonsense")).status == 404


async def test_unknown_token_is_404_json(client, worker):
    response = await client.post(tasks_url("not-a-token"), json=SEED_REQUEST)
    assert response.status == 404
    assert (await response.json())["error"] == "not_found"


async def test_redelivered_message_has_no_second_effect(
    client, worker, make_workflow, settings, pool
):
    workflow, _ = await make_workflow()
    request = TaskRequest(
        id=uuid.uuid4(),
        workflow_id=workflow.id,
        workflow_version=workflow.version,
        operation=Operation.UPSERT,
        body='{"Company ID": "77", "Company Name": "Once", "Number of Employees": 1}',
        received_at=0.0,
    )
    later = TaskRequest(
        id=uuid.uuid4(),
        workflow_id=workflow.id,
        workflow_version=workflow.version,
        operation=Operation.UPSERT,
        body='{"Company ID": "77", "Number of Employees": 2}',
        received_at=0.0,
    )
    # The third message is a redelivery of the first.
    await publish_batches(settings, [request], [later], [request])

    await worker.drain()
    assert await pool.fetchval("SELECT count(*) FROM request_results") == 2
    employees = await pool.fetchval("SELECT (fields->>'3')::numeric FROM tasks")
    assert employees == 2  # the redelivered first request did not overwrite the later one


async def test_requests_for_one_unique_id_in_one_batch_merge_in_order(
    make_workflow, settings, pool, worker
):
    workflow, _ = await make_workflow()
    bodies = [
        '{"Company ID": "5", "Company Name": "First"}',
        '{"Company ID": "5", "Number of Employees": 3}',
        '{"Company ID": "5", "Company Name": "Last"}',
    ]
    requests = [
        TaskRequest(uuid.uuid4(), workflow.id, workflow.version, Operation.UPSERT, body, 0.0)
        for body in bodies
    ]
    await publish_batches(settings, requests)

    async def all_done():
        return await pool.fetchval("SELECT count(*) FROM request_results") == 3

    await wait_until(all_done)
    rows = await pool.fetch("SELECT request_id, outcome, http_status FROM request_results")
    outcome = {r["request_id"]: (r["outcome"], r["http_status"]) for r in rows}
    assert [outcome[r.id] for r in requests] == [
        ("created", 201),
        ("updated", 200),
        ("updated", 200),
    ]
    assert await pool.fetchval("SELECT count(*) FROM tasks") == 1
    name = await pool.fetchval("SELECT fields->>'2' FROM tasks")
    assert name == "Last"


async def test_a_request_repeated_inside_one_batch_runs_once(make_workflow, settings, pool, worker):
    workflow, _ = await make_workflow()
    first, later = (
        TaskRequest(uuid.uuid4(), workflow.id, workflow.version, Operation.UPSERT, body, 0.0)
        for body in (
            '{"Company ID": "8", "Company Name": "Once", "Number of Employees": 1}',
            '{"Company ID": "8", "Number of Employees": 2}',
        )
    )
    await publish_batches(settings, [first, later, first])

    async def all_done():
        return await pool.fetchval("SELECT count(*) FROM request_results") == 2

    await wait_until(all_done)
    assert await pool.fetchval("SELECT (fields->>'3')::numeric FROM tasks") == 2
