"""Batch import (SPEC §7), against the real Postgres and RabbitMQ: in order, one result per item,
duplicates applied in order, bad items answered alone, one broker message and one transaction a
batch, async answers with per-item results, an Idempotency-Key for the whole batch."""

from __future__ import annotations

import asyncio
import io
import re
from typing import Any

import orjson
import pytest
from aiohttp.test_utils import TestClient

from ingest.edge.keys import METRICS
from tests.conftest import SEED_REQUEST, SEED_RESPONSE

TASK_URL = "Task URL"


def batch_url(token: str) -> str:
    return f"/api/v1/workflows/{token}/tasks/batch"


def company(n: int, **fields: Any) -> dict[str, Any]:
    return {**SEED_REQUEST, "Company ID": str(n), "Company Name": f"Company {n}", **fields}


def shown(task: dict[str, Any]) -> dict[str, Any]:
    """A task as answered, without its Task URL (random)."""
    return {name: value for name, value in task.items() if name != TASK_URL}


async def status_document(client: TestClient[Any, Any], status_url: str) -> dict[str, Any]:
    document: dict[str, Any] = await (await client.get(status_url.split("/", 3)[3])).json()
    return document


# ------------------------------------------------------------------------------ answers in order


async def test_each_item_gets_its_own_result_in_order(client, worker, make_workflow, pool):
    _, token = await make_workflow()
    items = [SEED_REQUEST, company(43, Stage="Shipped"), 7, {"Nope": 1}, company(44)]
    response = await client.post(batch_url(token), json=items)
    assert response.status == 200
    results = (await response.json())["results"]
    assert [r["status"] for r in results] == [201, 422, 400, 422, 201]
    assert shown(results[0]["body"]) == {**SEED_RESPONSE, "Expected Close Date": "2020-01-31"}
    assert results[1]["body"] == {"errors": {"Stage": ["is not included in the list"]}}
    assert results[2]["body"] == {
        "error": "malformed_body",
        "message": "a batch item must be a JSON object (a task body)",
    }
    assert results[3]["body"]["errors"]["Nope"] == ["is not a field of this workflow"]
    assert results[4]["body"]["Company ID"] == "44"
    stored = await pool.fetch("SELECT unique_key FROM tasks ORDER BY unique_key")
    assert [row["unique_key"] for row in stored] == ["42", "44"]
    # One request, one result: the batch's.
    assert await pool.fetchval("SELECT count(*) FROM request_results") == 1


async def test_items_with_one_unique_id_are_applied_in_order(client, worker, make_workflow, pool):
    _, token = await make_workflow()
    items = [
        company(1, Stage="Not Started"),
        {"Company ID": "1", "Stage": "In Progress"},
        {"Company ID": "1", "Stage": "In Progress"},
        {"Company ID": "1", "Company Name": ""},  # blanks a required field: refused, alone
        {"Company ID": "1", "Stage": "Done", "Number of Employees": 11},
    ]
    results = (await (await client.post(batch_url(token), json=items)).json())["results"]
    assert [r["status"] for r in results] == [201, 200, 200, 422, 200]
    # Each body is the task as that item left it.
    stages = [r["body"].get("Stage") for r in results]
    assert stages == ["Not Started", "In Progress", "In Progress", None, "Done"]
    assert results[3]["body"] == {"errors": {"Company Name": ["can't be blank"]}}
    assert len({r["body"][TASK_URL] for r in results if r["status"] < 300}) == 1
    row = await pool.fetchrow("SELECT stage, fields->>'3' AS employees FROM tasks")
    assert (row["stage"], row["employees"]) == ("Done", "11")
    assert await pool.fetchval("SELECT count(*) FROM tasks") == 1


async def test_without_a_unique_id_every_item_creates_a_task(client, worker, make_workflow, pool):
    _, token = await make_workflow({**_NO_UNIQUE_ID})
    results = (await (await client.post(batch_url(token), json=[{"Title": "a"}] * 3)).json())[
        "results"
    ]
    assert [r["status"] for r in results] == [201, 201, 201]
    assert len({r["body"][TASK_URL] for r in results}) == 3
    assert await pool.fetchval("SELECT count(*) FROM tasks") == 3


_NO_UNIQUE_ID = {"name": "Notes", "fields": [{"name": "Title", "type": "text"}]}


async def test_a_batch_updates_tasks_written_before_it(client, worker, make_workflow):
    _, token = await make_workflow()
    tasks = f"/api/v1/workflows/{token}/tasks"
    assert (await client.post(tasks, json=SEED_REQUEST)).status == 201
    items = [{"Company ID": "42", "Stage": "Done"}, {"Company ID": "42", "Stage": "Done"}]
    results = (await (await client.post(batch_url(token), json=items)).json())["results"]
    assert [r["status"] for r in results] == [200, 200]
    assert results[0]["body"]["Company Name"] == "Acme Corp"
    assert (await (await client.get(f"{tasks}/42")).json())["Stage"] == "Done"


# --------------------------------------------------------------------------------- bad input


def _deep(levels: int) -> str:
    return "[" * levels + "]" * levels


@pytest.mark.parametrize(
    ("body", "why"),
    [
        (b"", "empty"),
        (b"   ", "empty"),
        (b'{"Company ID": "42"}', "must be a JSON array"),
        (b'"text"', "must be a JSON array"),
        (b"[]", "at least one"),
        (b'[{"Company ID": "42"}', "not valid JSON"),
        (b"[1, 2,]", "not valid JSON"),
        (f'[{{"Deep": {_deep(64)}}}]'.encode(), "item 0: JSON nesting deeper than 64"),
        (_deep(100_000).encode(), "nesting|not valid JSON"),
        (b'[{"Company Name": "\xff"}]', "not valid UTF-8"),
        (b"[NaN]", "not valid JSON"),
    ],
)
async def test_a_body_that_is_no_batch_is_refused_whole(
    client, worker, make_workflow, pool, body, why
):
    _, token = await make_workflow()
    response = await client.post(
        batch_url(token), data=body, headers={"Content-Type": "application/json"}
    )
    assert response.status == 400
    answer = await response.json()
    assert answer["error"] == "malformed_body"
    assert re.search(why, answer["message"]), answer["message"]
    await worker.drain()
    assert await pool.fetchval("SELECT count(*) FROM request_results") == 0


async def test_nul_and_lone_surrogates_are_their_items_own_400(client, worker, make_workflow, pool):
    """As a non-object item is: the other items of the batch are applied (SPEC §7)."""
    _, token = await make_workflow()
    body = (
        b'[{"Company ID": "4\\u00002"}, {"Company ID": "7", "Company Name": "Seven"},'
        b' {"Company ID": "\\ud800"}, "\\udfff", 5]'
    )
    answer = await client.post(
        batch_url(token), data=body, headers={"Content-Type": "application/json"}
    )
    results = (await answer.json())["results"]
    assert [r["status"] for r in results] == [400, 201, 400, 400, 400]
    assert "\\u0000" in results[0]["body"]["message"]
    assert "lone surrogates" in results[2]["body"]["message"]
    assert await pool.fetchval("SELECT count(*) FROM tasks") == 1


async def test_more_items_than_the_limit_is_413(client, worker, make_workflow, settings, pool):
    _, token = await make_workflow()
    items = [company(n) for n in range(settings.batch_max_items + 1)]
    response = await client.post(batch_url(token), json=items)
    assert response.status == 413
    assert await response.json() == {
        "error": "body_too_large",
        "message": "a batch holds at most 1000 items; this one holds 1001",
    }
    huge = io.BytesIO(orjson.dumps([{"Company Name": "x" * settings.max_body_bytes}]))
    response = await client.post(
        batch_url(token), data=huge, headers={"Content-Type": "application/json"}
    )
    assert response.status == 413
    await worker.drain()
    assert await pool.fetchval("SELECT count(*) FROM request_results") == 0


async def test_huge_numbers_are_their_items_own_422(client, worker, make_workflow):
    _, token = await make_workflow()
    body = (
        b'[{"Company ID": "1", "Company Name": "a", "Number of Employees": 1e999999},'
        b' {"Company ID": "2", "Company Name": "b", "Number of Employees": '
        + b"9" * 40
        + b"}, 1e999999]"
    )
    response = await client.post(
        batch_url(token), data=body, headers={"Content-Type": "application/json"}
    )
    assert response.status == 200
    results = (await response.json())["results"]
    assert [r["status"] for r in results] == [422, 201, 400]
    assert results[0]["body"] == {"errors": {"Number of Employees": ["is not a number"]}}
    assert results[1]["body"]["Number of Employees"] == "9" * 40


async def test_the_edge_refuses_what_it_refuses_for_any_write(client, worker, make_workflow):
    _, token = await make_workflow()
    form = await client.post(batch_url(token), data=b"[{}]", headers={"Content-Type": "text/plain"})
    assert form.status == 415
    unknown = await client.post(batch_url("no-such-token"), json=[SEED_REQUEST])
    assert unknown.status == 404
    keys = await client.post(
        batch_url(token),
        json=[SEED_REQUEST],
        headers=[("Idempotency-Key", "a"), ("Idempotency-Key", "b")],
    )
    assert keys.status == 400


# ------------------------------------------------------------------------------------- async


async def test_respond_async_then_the_status_url_shows_every_items_result(
    client, worker, make_workflow
):
    _, token = await make_workflow()
    items = [SEED_REQUEST, 7, {**SEED_REQUEST, "Stage": "Done"}]
    response = await client.post(batch_url(token), json=items, headers={"Prefer": "respond-async"})
    assert response.status == 202
    assert response.headers["Preference-Applied"] == "respond-async"
    accepted = await response.json()
    assert response.headers["Location"] == accepted["status_url"]
    await worker.drain()
    document = await status_document(client, accepted["status_url"])
    assert document["status"] == "succeeded"
    assert (document["http_status"], document["outcome"]) == (200, "batch")
    assert [r["status"] for r in document["results"]] == [201, 400, 200]
    assert document["results"][2]["body"]["Stage"] == "Done"


async def test_a_wait_that_runs_out_answers_202_and_the_results_come_later(
    client, stopped_worker, make_workflow
):
    _, token = await make_workflow()
    response = await client.post(
        batch_url(token), json=[SEED_REQUEST], headers={"Prefer": "wait=1"}
    )
    assert response.status == 202
    assert "Preference-Applied" not in response.headers
    status_url = (await response.json())["status_url"]
    assert (await status_document(client, status_url))["status"] == "pending"
    await stopped_worker.start()
    await stopped_worker.drain()
    document = await status_document(client, status_url)
    assert [r["status"] for r in document["results"]] == [201]


# ------------------------------------------------------------------------------- idempotency


async def test_an_idempotency_key_covers_the_whole_batch(client, worker, make_workflow, pool):
    _, token = await make_workflow()
    headers = {"Idempotency-Key": "import-1"}
    items = [company(1), company(2), {"Company ID": "1", "Stage": "Done"}]
    first = await client.post(batch_url(token), json=items, headers=headers)
    again = await client.post(batch_url(token), json=items, headers=headers)
    assert (first.status, again.status) == (200, 200)
    assert await first.read() == await again.read()
    assert await pool.fetchval("SELECT count(*) FROM request_results") == 1
    assert await pool.fetchval("SELECT count(*) FROM tasks") == 2

    other = await client.post(batch_url(token), json=items[:2], headers=headers)
    assert other.status == 422
    assert (await other.json())["error"] == "idempotency_key_reused"
    single = await client.post(f"/api/v1/workflows/{token}/tasks", json=company(1), headers=headers)
    assert single.status == 422  # a key names one request: a batch, or a task request
    assert await pool.fetchval("SELECT stage FROM tasks WHERE unique_key = '1'") == "Done"


async def test_concurrent_retries_of_a_batch_have_one_effect(client, worker, make_workflow, pool):
    _, token = await make_workflow()
    headers = {"Idempotency-Key": "burst"}
    items = [company(n) for n in range(50)] + [{"Company ID": "0", "Stage": "Done"}]
    responses = await asyncio.gather(
        *(client.post(batch_url(token), json=items, headers=headers) for _ in range(10))
    )
    assert {r.status for r in responses} == {200}
    bodies = {await r.read() for r in responses}
    assert len(bodies) == 1
    results = orjson.loads(bodies.pop())["results"]
    assert [r["status"] for r in results] == [201] * 50 + [200]
    assert await pool.fetchval("SELECT count(*) FROM request_results") == 1
    assert await pool.fetchval("SELECT count(*) FROM tasks") == 50


async def test_a_pending_retry_gets_the_same_status_url(client, stopped_worker, make_workflow):
    _, token = await make_workflow()
    headers = {"Idempotency-Key": "later", "Prefer": "respond-async"}
    first = await client.post(batch_url(token), json=[SEED_REQUEST], headers=headers)
    second = await client.post(batch_url(token), json=[SEED_REQUEST], headers=headers)
    assert (first.status, second.status) == (202, 202)
    assert first.headers["Location"] == second.headers["Location"]


# -------------------------------------------------------------- one message, one transaction


def _sample(registry: Any, name: str) -> float:
    return registry.get_sample_value(name) or 0.0


async def test_a_thousand_items_travel_in_one_message_and_commit_in_one_transaction(
    client, consumer, make_workflow, pool
):
    _, token = await make_workflow()
    edge = client.server.app[METRICS].registry
    items = [company(n) for n in range(1000)]
    response = await client.post(batch_url(token), json=items)
    assert response.status == 200
    results = (await response.json())["results"]
    assert [r["status"] for r in results] == [201] * 1000
    assert [r["body"]["Company ID"] for r in results] == [str(n) for n in range(1000)]
    await consumer.drain()
    # One broker message, carrying one request.
    assert _sample(edge, "ingest_publish_confirms_total") == 1
    assert _sample(edge, "ingest_publish_batch_requests_sum") == 1
    # One transaction: one commit by the worker, and every row written has the same xmin.
    worker = consumer.metrics.registry
    assert consumer.batches == 1
    assert _sample(worker, "ingest_worker_batch_duration_seconds_count") == 1
    assert _sample(worker, "ingest_worker_retries_total") == 0
    transactions = await pool.fetchval(
        "SELECT count(DISTINCT xmin::text) FROM"
        " (SELECT xmin FROM tasks UNION ALL SELECT xmin FROM request_results) AS written"
    )
    assert transactions == 1
    assert await pool.fetchval("SELECT count(*) FROM tasks") == 1000
    stored = await pool.fetchval("SELECT body::text FROM request_results")
    assert orjson.loads(stored) == {"results": results}  # kept whole, as answered
