"""Values the database can hold, checked before it sees them (issue #8, points 3, 6 and 7): numbers
beyond the bounds, Unique IDs and stages too long for their index, strict e-mails, URLs, phones and
datetimes, definitions that cannot be stored, and answers of bounded size. Never a 500, never a
poison message."""

from __future__ import annotations

import asyncio
import json
import uuid

import orjson
import pytest

from ingest.messages import Operation, TaskRequest
from ingest.results import MAX_STORED_BODY_BYTES
from ingest.workflows import MAX_FIELD_ID
from tests.conftest import cli, publish_batches, wait_until

JSON = {"Content-Type": "application/json"}
ADMIN = {**JSON, "Authorization": "Bearer admin-secret"}
TINY = "-1e-9999999999999999999"
HUGE = "1E+9999999999999999999"
NUMERIC = {"name": "Numbers", "fields": [{"name": "N", "type": "number"}], "unique_id": "N"}
KINDS = {
    "name": "Kinds",
    "fields": [
        {"name": "Ref", "type": "text"},
        {"name": "Email", "type": "email"},
        {"name": "Phone", "type": "phone"},
        {"name": "Website", "type": "url"},
        {"name": "At", "type": "datetime"},
    ],
    "unique_id": "Ref",
}


def tasks_url(token: str) -> str:
    return f"/api/v1/workflows/{token}/tasks"


async def post(client, token, data: bytes | str, headers=None):
    body = data.encode() if isinstance(data, str) else data
    response = await client.post(tasks_url(token), data=body, headers={**JSON, **(headers or {})})
    return response.status, await response.json()


async def no_dead_letters(pool):
    assert await pool.fetchval("SELECT count(*) FROM dead_letters") == 0


# ------------------------------------------------------------------------------------ numbers


async def test_a_tiny_negative_exponent_is_not_a_number_rather_than_poison(
    client, worker, make_workflow, pool
):
    _, token = await make_workflow()
    body = f'{{"Company ID": "x", "Company Name": "n", "Contract Value": {TINY}}}'
    assert await post(client, token, body) == (
        422,
        {"errors": {"Contract Value": ["is not a number"]}},
    )
    await no_dead_letters(pool)


@pytest.mark.parametrize(
    ("field", "message"),
    [
        ("Contract Value", "is not a number"),
        ("Number of Employees", "is not a number"),
        ("Company Name", "is invalid"),
        ("Company ID", "is invalid"),
        ("Unknown", "is not a field of this workflow"),
    ],
)
@pytest.mark.parametrize("literal", [TINY, HUGE, "9" * 5000])
async def test_a_number_beyond_the_bounds_in_any_key_is_that_keys_422(
    client, worker, make_workflow, pool, field, message, literal
):
    _, token = await make_workflow()
    body = {"Company ID": "x", "Company Name": "n"}
    text = orjson.dumps(body).decode()[:-1] + f', "{field}": {literal}}}'
    assert await post(client, token, text) == (422, {"errors": {field: [message]}})
    await no_dead_letters(pool)


async def test_a_numeric_unique_id_beyond_the_bounds_is_never_a_server_error(
    client, worker, make_workflow
):
    _, token = await make_workflow(NUMERIC)
    assert await post(client, token, f'{{"N": {HUGE}}}') == (
        422,
        {"errors": {"N": ["is not a number"]}},
    )
    assert await post(client, token, '{"N": "1e-9999999999999999999"}') == (
        422,
        {"errors": {"N": ["is not a number"]}},
    )
    for value in (HUGE, TINY, "1e1001", "١٢"):
        assert (await client.get(f"{tasks_url(token)}/{value}")).status == 404
        assert (await client.delete(f"{tasks_url(token)}/{value}")).status == 404
    listed = await client.get(tasks_url(token), params={"N": HUGE})
    assert (listed.status, (await listed.json())["error"]) == (400, "invalid_filter")


async def test_poison_numbers_in_a_shared_broker_message_get_their_own_4xx_and_neighbours_commit(
    settings, worker, make_workflow, pool
):
    workflow, _ = await make_workflow()

    def request(body: str) -> TaskRequest:
        return TaskRequest(uuid.uuid4(), workflow.id, workflow.version, Operation.UPSERT, body, 0.0)

    healthy = [
        request('{"Company ID": "h1", "Company Name": "One", "Contract Value": 10}'),
        request('{"Company ID": "h2", "Company Name": "Two"}'),
    ]
    tiny = request(f'{{"Company ID": "x", "Company Name": "n", "Contract Value": {TINY}}}')
    huge = request(f'{{"Company ID": "y", "Company Name": "n", "Elsewhere": {HUGE}}}')
    nul = request('{"Company ID": "z", "Company Name": "\\u0000"}')
    surrogate = request('{"Company ID": "s", "Company Name": "\\ud800"}')
    batch = [tiny, healthy[0], huge, nul, surrogate, healthy[1]]
    await publish_batches(settings, batch)

    async def settled():
        rows = await pool.fetch(
            "SELECT request_id, http_status FROM request_results"
            " WHERE request_id = ANY($1::uuid[])",
            [r.id for r in batch],
        )
        return {row["request_id"]: row["http_status"] for row in rows} if len(rows) == 6 else None

    statuses = await wait_until(settled, within=30)
    assert [statuses[r.id] for r in batch] == [422, 201, 422, 400, 400, 201]
    assert await pool.fetchval("SELECT count(*) FROM tasks") == 2
    await no_dead_letters(pool)


# ------------------------------------------------------------------------- index-sized texts


@pytest.mark.parametrize(
    ("key", "status"),
    [("k" * 2048, 201), ("k" * 2700, 422), ("€" * 700, 422), ("é" * 1024, 201)],
)
async def test_a_unique_id_must_fit_the_task_index(
    client, worker, make_workflow, pool, key, status
):
    _, token = await make_workflow()
    answer = await post(client, token, orjson.dumps({"Company ID": key, "Company Name": "n"}))
    assert answer[0] == status
    if status == 422:
        assert answer[1] == {"errors": {"Company ID": ["is invalid"]}}
        assert (await client.get(f"{tasks_url(token)}/{key}")).status == 404
    else:
        assert (await client.get(f"{tasks_url(token)}/{key}")).status == 200
    await no_dead_letters(pool)


@pytest.mark.parametrize(
    ("definition", "problem"),
    [
        ({"stages": ["s" * 3200]}, "is longer than 200 characters"),
        ({"members": ["a@b..c"]}, "is not an email address"),
        (
            {"fields": [{"name": "R", "type": "singleSelect", "options": ["o" * 5000]}]},
            "is longer than 500 characters",
        ),
    ],
)
async def test_admin_definitions_that_no_index_could_hold_are_422(
    client, pool, definition, problem
):
    response = await client.post(
        "/api/v1/admin/workflows", json={"name": "x", **definition}, headers=ADMIN
    )
    assert response.status == 422
    assert problem in " ".join((await response.json())["problems"])
    assert await pool.fetchval("SELECT count(*) FROM workflows") == 0


async def test_admin_create_whose_numbered_field_id_overflows_is_422_and_stores_nothing(
    client, pool
):
    fields = [{"name": "a", "type": "text", "id": MAX_FIELD_ID}, {"name": "b", "type": "text"}]
    response = await client.post(
        "/api/v1/admin/workflows", json={"name": "x", "fields": fields}, headers=ADMIN
    )
    assert response.status == 422
    assert "beyond the largest field id" in " ".join((await response.json())["problems"])
    assert await pool.fetchval("SELECT count(*) FROM workflows") == 0
    listed = await client.get("/api/v1/admin/workflows", headers=ADMIN)
    assert (listed.status, await listed.json()) == (200, [])


async def test_workflows_stored_before_todays_bounds_still_list(client, settings, pool):
    """Rows the old code committed (a numbered id past the bound, a 3,200-character stage, a
    member email-validator refuses) must not lock the admin list or the CLI out."""
    old = {
        "name": "Old",
        "fields": [{"name": "a", "type": "text", "id": MAX_FIELD_ID + 1}],
        "stages": ["s" * 3200],
        "members": ["bob@localhost"],
    }
    await pool.execute(
        "INSERT INTO workflows (public_id, name, definition) VALUES ('old', 'Old', $1)",
        old,
    )
    listed = await client.get("/api/v1/admin/workflows", headers=ADMIN)
    assert listed.status == 200
    assert [w["id"] for w in await listed.json()] == ["old"]
    done = await asyncio.to_thread(cli, settings, "workflow", "list")
    assert done.returncode == 0, done.stderr
    assert [w["id"] for w in json.loads(done.stdout)] == ["old"]


# ------------------------------------------------------------------------- strict field types


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("Email", "a\n@b.c"),
        ("Email", "a@b..c"),
        ("Phone", "abc"),
        ("Phone", "12"),
        ("Website", "http://exa mple.com"),
        ("Website", "javascript:alert(1)"),
        ("At", "2020-W01-1T00:00Z"),
        ("At", "2020-01-31T09:30:00.1234567Z"),
        ("At", "2020-01-31T09:30:00"),
    ],
)
async def test_strict_field_types_refuse_what_they_used_to_let_through(
    client, worker, make_workflow, field, value
):
    _, token = await make_workflow(KINDS)
    assert await post(client, token, orjson.dumps({"Ref": "r", field: value})) == (
        422,
        {"errors": {field: ["is invalid"]}},
    )


async def test_strict_field_types_keep_good_values_as_written(client, worker, make_workflow):
    _, token = await make_workflow(KINDS)
    good = {
        "Ref": "r",
        "Email": "someone@example.com",
        "Phone": "+1 (555) 010-0100 ext. 7",
        "Website": "https://example.com/a?b=c#d",
        "At": "2020-01-31T09:30:00.123456+02:00",
    }
    status, body = await post(client, token, orjson.dumps(good))
    assert status == 201
    assert {k: body[k] for k in ("Email", "Phone", "Website")} == {
        k: good[k] for k in ("Email", "Phone", "Website")
    }
    assert body["At"] == "2020-01-31T07:30:00.123456Z"


# ------------------------------------------------------------------------------ bounded sizes


async def test_sixty_thousand_unknown_keys_get_a_short_422(client, worker, make_workflow, pool):
    _, token = await make_workflow()
    body = {"Company ID": "x", "Company Name": "n", **{f"k{n:05}": n for n in range(60_000)}}
    status, answer = await post(client, token, orjson.dumps(body))
    assert status == 422
    errors = answer["errors"]
    assert len(errors) == 21
    assert errors["base"] == ["and 59980 more keys are not fields of this workflow"]
    stored = await pool.fetchval("SELECT max(octet_length(body::text)) FROM request_results")
    assert stored < 2000


async def test_an_oversized_result_is_stored_as_a_note_while_the_live_answer_is_whole(
    client, worker, make_workflow, pool
):
    definition = {
        "name": "Notes",
        "fields": [{"name": f"Note {n}", "type": "longText"} for n in range(3)],
    }
    _, token = await make_workflow(definition)
    body = {f"Note {n}": "n" * 100_000 for n in range(3)}
    headers = {"Idempotency-Key": "big"}
    status, live = await post(client, token, orjson.dumps(body), headers)
    assert status == 201
    assert live["Note 2"] == "n" * 100_000
    stored = await pool.fetchval("SELECT octet_length(body::text) FROM request_results")
    assert stored < 1000 < MAX_STORED_BODY_BYTES
    status, replayed = await post(client, token, orjson.dumps(body), headers)
    assert status == 201
    assert replayed["error"] == "result_too_large"
    assert replayed["Task URL"] == live["Task URL"]
