"""Workflow changes and deletes (SPEC §8): `PATCH`/`DELETE /api/v1/admin/workflows/{id}` and
`ingest workflow update|delete`, against the real Postgres and RabbitMQ: changes guarded by
If-Match, deletes that hide a workflow at once and then remove it in short batches. How a
change is read is tests/unit/ingest/test_revisions.py; propagation to other processes is
tests/test_propagation.py.

The `client` edge caches a token's workflow for INGEST_WORKFLOW_CACHE_TTL (2 s): what an edge
shows after a change is awaited for up to 3 s.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import orjson

from ingest import deletions, migrations, retention, store
from ingest.workflows import WorkflowDefinition
from tests.conftest import SALES, SEED_REQUEST, cli, run_cli, wait_until

ADMIN = {"Authorization": "Bearer admin-secret"}
WORKFLOWS = "/api/v1/admin/workflows"


async def _create(client: Any, definition: dict[str, Any] = SALES) -> dict[str, Any]:
    response = await client.post(WORKFLOWS, json=definition, headers=ADMIN)
    assert response.status == 201, await response.text()
    created: dict[str, Any] = await response.json()
    return created


async def _patch(client: Any, workflow_id: str, change: Any) -> tuple[int, Any]:
    response = await client.patch(f"{WORKFLOWS}/{workflow_id}", json=change, headers=ADMIN)
    return response.status, await response.json()


def _fields(created: dict[str, Any]) -> list[dict[str, Any]]:
    return [dict(spec) for spec in created["fields"]]


def _by_name(fields: list[dict[str, Any]], name: str) -> dict[str, Any]:
    return next(spec for spec in fields if spec["name"] == name)


async def _task_once(client: Any, token: str, key: str, wanted: Any) -> dict[str, Any] | None:
    """The task as the edge shows it, once `wanted(task)` holds (the edge's cache expired)."""
    response = await client.get(f"/api/v1/workflows/{token}/tasks/{key}")
    task: dict[str, Any] = await response.json()
    return task if response.status == 200 and wanted(task) else None


async def _seeded(client: Any, worker: Any) -> tuple[dict[str, Any], str]:
    """The sales workflow with the seed task (Stage "In Progress") and a second task."""
    created = await _create(client)
    token = created["token"]
    tasks = f"/api/v1/workflows/{token}/tasks"
    assert (await client.post(tasks, json=SEED_REQUEST)).status == 201
    other = {"Company ID": "43", "Company Name": "XYZ Inc.", "Number of Employees": 3}
    assert (await client.post(tasks, json=other)).status == 201
    return created, token


# ------------------------------------------------------------------------------------ the answer


async def test_a_change_makes_the_next_version_answered_as_get_shows_it(client):
    created = await _create(client)
    status, changed = await _patch(client, created["id"], {"name": "Deals", "stages": ["Lead"]})
    assert status == 200
    assert changed["version"] == created["version"] + 1 == 2
    assert (changed["name"], changed["stages"]) == ("Deals", ["Lead"])
    assert changed["fields"] == created["fields"]
    shown = await (await client.get(f"{WORKFLOWS}/{created['id']}", headers=ADMIN)).json()
    assert shown == changed
    # The same change again changes nothing: no new version.
    status, again = await _patch(client, created["id"], {"name": "Deals"})
    assert (status, again) == (200, changed)


async def test_concurrent_changes_apply_one_after_the_other(client):
    created = await _create(client)
    answers = await asyncio.gather(
        *(_patch(client, created["id"], {"name": f"Name {n}"}) for n in range(10))
    )
    assert sorted(answer["version"] for _, answer in answers) == list(range(2, 12))
    shown = await (await client.get(f"{WORKFLOWS}/{created['id']}", headers=ADMIN)).json()
    last = next(answer for _, answer in answers if answer["version"] == 11)
    assert shown["name"] == last["name"]


async def test_bad_changes_are_answered_with_every_problem(client):
    created = await _create(client)
    fields = _fields(created)
    fields[2] = {"name": "Number of Employees", "type": "text"}  # number → text: unsafe
    fields.append({"name": "Region", "type": "text", "renamed_from": "Nowhere"})
    status, body = await _patch(client, created["id"], {"fields": fields, "colour": "red"})
    assert status == 422
    assert body["error"] == "invalid_definition"
    problems = " | ".join(body["problems"])
    assert "'Number of Employees' cannot change from number to text" in problems
    assert "renamed from 'Nowhere', which is no field of this workflow" in problems
    assert "'colour' is not a key of a definition" in problems
    # Nothing changed.
    shown = await (await client.get(f"{WORKFLOWS}/{created['id']}", headers=ADMIN)).json()
    assert shown["version"] == 1


async def test_malformed_unknown_and_unauthorised_changes_are_refused(client):
    created = await _create(client)
    path = f"{WORKFLOWS}/{created['id']}"
    not_object = await client.patch(path, json=[1], headers=ADMIN)
    assert not_object.status == 400
    assert (await client.patch(f"{WORKFLOWS}/nope", json={}, headers=ADMIN)).status == 404
    assert (await client.patch(path, json={"name": "x"})).status == 401
    assert (await client.delete(path)).status == 401
    nul = await client.patch(f"{WORKFLOWS}/a%00b", json={}, headers=ADMIN)
    assert nul.status == 404
    too_many = [{"name": f"f{n}", "type": "text"} for n in range(1001)]
    status, body = await _patch(client, created["id"], {"fields": too_many})
    assert status == 422
    assert "at most 1000" in " ".join(body["problems"])


# ------------------------------------------------------------------------ If-Match (lost updates)


async def _patch_if(client: Any, workflow_id: str, change: Any, tag: str) -> tuple[int, Any]:
    response = await client.patch(
        f"{WORKFLOWS}/{workflow_id}", json=change, headers={**ADMIN, "If-Match": tag}
    )
    return response.status, await response.json()


async def test_a_change_made_from_an_older_version_is_refused_with_412(client):
    """Two admins read version 1; A adds a field; B's field list, built from version 1, would
    remove it. With If-Match, B is refused and A's field stays."""
    created = await _create(client)
    read = await client.get(f"{WORKFLOWS}/{created['id']}", headers=ADMIN)
    assert read.headers["ETag"] == '"1"'
    fields_v1 = _fields(await read.json())

    status, a = await _patch_if(
        client, created["id"], {"fields": [*fields_v1, {"name": "Region", "type": "text"}]}, '"1"'
    )
    assert (status, a["version"]) == (200, 2)
    status, b = await _patch_if(
        client, created["id"], {"fields": [*fields_v1, {"name": "Owner", "type": "text"}]}, '"1"'
    )
    assert status == 412
    assert b["error"] == "precondition_failed"
    assert "at version 2 now" in b["message"]
    shown = await client.get(f"{WORKFLOWS}/{created['id']}", headers=ADMIN)
    assert shown.headers["ETag"] == '"2"'
    assert [spec["name"] for spec in (await shown.json())["fields"]][-1] == "Region"
    # Made again from version 2 (quoted or not), it applies; the answer carries the new ETag.
    again = await client.patch(
        f"{WORKFLOWS}/{created['id']}",
        json={"fields": [*_fields(await shown.json()), {"name": "Owner", "type": "text"}]},
        headers={**ADMIN, "If-Match": "2"},
    )
    assert (again.status, again.headers["ETag"]) == (200, '"3"')


async def test_concurrent_changes_made_from_one_version_apply_once(client):
    created = await _create(client)
    answers = await asyncio.gather(
        *(_patch_if(client, created["id"], {"name": f"Name {n}"}, '"1"') for n in range(10))
    )
    assert sorted(status for status, _ in answers) == [200] + [412] * 9


async def test_if_match_is_read_as_rfc_9110_says(client):
    created = await _create(client)
    path, change = created["id"], {"stages": ["Lead"]}
    assert (await _patch_if(client, path, change, '"7", "1"'))[0] == 200  # any of a list
    assert (await _patch_if(client, path, {"stages": ["Won"]}, "*"))[0] == 200  # any version
    version = 3
    # A weak tag never matches (preconditions compare strongly); nor does a tag no version has.
    for tag in (f'W/"{version}"', '"abc"', '""', "9" * 5000, f'"{version}.0"'):
        status, body = await _patch_if(client, path, {"name": "Never"}, tag)
        assert (status, body["error"]) == (412, "precondition_failed"), tag
    for malformed in ("abc", '"3', "3,,", " ", '"3" "4"'):
        status, body = await _patch_if(client, path, {"name": "Never"}, malformed)
        assert (status, body["error"]) == (400, "invalid_header"), malformed
        assert "If-Match" in body["message"]
    # An unknown workflow is 404, whatever If-Match says; nothing above changed the name.
    assert (await _patch_if(client, "nope", {"name": "x"}, '"1"'))[0] == 404
    shown = await (await client.get(f"{WORKFLOWS}/{path}", headers=ADMIN)).json()
    assert (shown["version"], shown["name"]) == (version, SALES["name"])


async def test_the_document_describes_if_match_etag_and_412(client):
    document = await (await client.get("/api/v1/openapi.json")).json()
    operations = document["paths"]["/api/v1/admin/workflows/{workflow_id}"]
    parameters = [
        document["components"]["parameters"][p["$ref"].rsplit("/", 1)[1]]
        for p in operations["patch"]["parameters"]
        if "$ref" in p
    ]
    assert any(p["name"] == "If-Match" and p["in"] == "header" for p in parameters)
    assert "412" in operations["patch"]["responses"]
    for method in ("get", "patch"):
        assert "ETag" in operations[method]["responses"]["200"]["headers"]


# -------------------------------------------------------------------------------- existing tasks


async def test_existing_tasks_render_under_the_new_definition(client, worker):
    created, token = await _seeded(client, worker)
    fields = _fields(created)
    fields[1] = {"name": "Name", "type": "text", "required": True, "renamed_from": "Company Name"}
    fields[2] = {**fields[2], "type": "currency"}  # Number of Employees: number → currency
    del fields[3]  # Contract Value is removed
    fields.append({"name": "Region", "type": "singleSelect", "options": ["EU", "US"]})
    change = {"fields": fields, "stages": ["Not Started", "Won"]}  # "In Progress" is gone
    status, changed = await _patch(client, created["id"], change)
    assert status == 200, changed
    assert (
        _by_name(changed["fields"], "Name")["id"]
        == _by_name(created["fields"], "Company Name")["id"]
    )
    assert "renamed_from" not in orjson.dumps(changed).decode()

    task = await wait_until(lambda: _task_once(client, token, "42", lambda t: "Name" in t), 3)
    assert task["Name"] == "Acme Corp"
    assert task["Number of Employees"] == "10"
    assert task["Region"] is None
    assert task["Stage"] == "In Progress"  # no longer listed, shown as stored
    assert "Contract Value" not in task
    assert "Company Name" not in task
    assert list(task) == [
        "Stage",
        "Assigned To",
        "Task URL",
        "Company ID",
        "Name",
        "Number of Employees",
        "Expected Close Date",
        "International?",
        "Region",
    ]
    # Written under the new version: the new field and stage are taken, the old name is not.
    tasks = f"/api/v1/workflows/{token}/tasks"
    update = {"Company ID": "42", "Region": "EU", "Stage": "Won"}
    response = await client.post(tasks, json=update)
    assert response.status == 200, await response.text()
    assert (await response.json())["Region"] == "EU"
    refused = await client.post(tasks, json={"Company ID": "42", "Contract Value": 1})
    assert refused.status == 422
    assert (await refused.json())["errors"] == {
        "Contract Value": ["is not a field of this workflow"]
    }


async def test_a_removed_field_never_shows_again_even_under_its_old_name(client, worker, pool):
    created, token = await _seeded(client, worker)
    fields = _fields(created)
    value = _by_name(fields, "Contract Value")
    without = [spec for spec in fields if spec["name"] != "Contract Value"]
    assert (await _patch(client, created["id"], {"fields": without}))[0] == 200
    status, readded = await _patch(
        client,
        created["id"],
        {"fields": [*without, {"name": "Contract Value", "type": "currency"}]},
    )
    assert status == 200
    assert _by_name(readded["fields"], "Contract Value")["id"] > max(s["id"] for s in fields)

    task = await wait_until(
        lambda: _task_once(client, token, "42", lambda t: t.get("Contract Value", 0) is None), 3
    )
    assert task["Contract Value"] is None
    # The old value is still stored, under the removed field's id, which nothing shows.
    stored = await pool.fetchval(
        "SELECT fields::text FROM tasks WHERE unique_key = '42' AND workflow_id ="
        " (SELECT id FROM workflows WHERE public_id = $1)",
        created["id"],
    )
    assert orjson.loads(stored)[str(value["id"])] == 10000


async def test_list_filters_follow_the_new_definition(client, worker):
    created, token = await _seeded(client, worker)
    fields = _fields(created)
    fields[1] = {"name": "Name", "type": "text", "renamed_from": "Company Name"}
    fields[2] = {**fields[2], "type": "currency"}
    fields.append({"name": "Region", "type": "text"})
    assert (await _patch(client, created["id"], {"fields": fields}))[0] == 200
    tasks = f"/api/v1/workflows/{token}/tasks"

    async def listed(query: dict[str, str]) -> list[str] | None:
        response = await client.get(tasks, params=query)
        if response.status != 200:
            return None
        return [task["Company ID"] for task in await response.json()]

    assert await wait_until(lambda: listed({"Name": "Acme Corp"}), 3) == ["42"]
    assert await listed({"Number of Employees": "3.0"}) == ["43"]
    assert await listed({"Region": ""}) == ["42", "43"]  # a new field: unset in every old task
    old_name = await client.get(tasks, params={"Company Name": "Acme Corp"})
    assert old_name.status == 400
    assert "is not a field of this workflow" in (await old_name.json())["message"]


async def test_the_workflows_own_openapi_document_follows_the_new_version(client):
    created = await _create(client)
    path = f"/api/v1/workflows/{created['token']}/openapi.json"
    before = await (await client.get(path)).json()
    assert "Region" not in before["components"]["schemas"]["TaskPayload"]["properties"]
    fields = [*_fields(created), {"name": "Region", "type": "text"}]
    assert (await _patch(client, created["id"], {"fields": fields}))[0] == 200

    async def has_region() -> bool:
        document = await (await client.get(path)).json()
        return "Region" in document["components"]["schemas"]["TaskPayload"]["properties"]

    await wait_until(has_region, 3)
    document = await (await client.get(path)).json()
    assert "version 2" in document["info"]["description"]


async def test_requests_accepted_under_the_old_version_are_applied_under_the_new_one(
    client, stopped_worker
):
    """The worker validates against the newest version it knows: a request sent before a rename
    that uses the old name is refused as naming no field; one using kept fields applies."""
    created = await _create(client)
    tasks = f"/api/v1/workflows/{created['token']}/tasks"
    later = {"Prefer": "respond-async"}
    old_name = await client.post(tasks, json=SEED_REQUEST, headers=later)
    kept_only = await client.post(
        tasks, json={"Company ID": "43", "Stage": "Done", "Number of Employees": 3}, headers=later
    )
    assert old_name.status == kept_only.status == 202
    fields = _fields(created)
    fields[1] = {"name": "Name", "type": "text", "renamed_from": "Company Name"}
    assert (await _patch(client, created["id"], {"fields": fields}))[0] == 200

    await stopped_worker.start()
    await stopped_worker.drain()

    async def final(accepted: Any) -> dict[str, Any] | None:
        url = (await accepted.json())["status_url"].split("://", 1)[1].split("/", 1)[1]
        document: dict[str, Any] = await (await client.get(f"/{url}")).json()
        return document if document["status"] != "pending" else None

    refused = await wait_until(lambda: final(old_name), 5)
    assert refused["http_status"] == 422
    assert refused["errors"]["Company Name"] == ["is not a field of this workflow"]
    applied = await wait_until(lambda: final(kept_only), 5)
    assert applied["http_status"] == 201
    assert applied["task"]["Name"] is None
    assert applied["task"]["Number of Employees"] == "3"


# --------------------------------------------------------------------------------------- Unique ID


async def test_the_unique_id_can_change_only_while_the_workflow_has_no_tasks(client, worker):
    empty = await _create(client)
    status, changed = await _patch(client, empty["id"], {"unique_id": "Company Name"})
    assert (status, changed["unique_id"]) == (200, "Company Name")

    created, _ = await _seeded(client, worker)
    status, body = await _patch(client, created["id"], {"unique_id": "Company Name"})
    assert status == 409
    assert body["error"] == "conflict"
    assert "this workflow has tasks" in body["message"]
    assert (await _patch(client, created["id"], {"unique_id": None}))[0] == 409
    # Renaming the Unique ID field keeps the keys: allowed, and the Unique ID follows.
    fields = _fields(created)
    fields[0] = {"name": "Company Key", "type": "text", "renamed_from": "Company ID"}
    status, renamed = await _patch(client, created["id"], {"fields": fields})
    assert (status, renamed["unique_id"]) == (200, "Company Key")


# ------------------------------------------------------------------------------------------ delete


async def test_delete_removes_the_workflow_with_what_it_holds(client, worker, pool):
    created, token = await _seeded(client, worker)
    kept = await _create(client)  # another workflow, untouched
    source = await client.post(
        "/api/v1/admin/sources",
        json={
            "name": "Leads",
            "workflow": created["id"],
            "verify": {"scheme": "none"},
            "map": {"Company ID": "id"},
        },
        headers=ADMIN,
    )
    assert source.status == 201, await source.text()
    tasks = f"/api/v1/workflows/{token}/tasks"
    assert (await client.get(tasks)).status == 200  # the edge has the token cached
    workflow_id = await pool.fetchval(
        "SELECT id FROM workflows WHERE public_id = $1", created["id"]
    )

    response = await client.delete(f"{WORKFLOWS}/{created['id']}", headers=ADMIN)
    assert response.status == 204
    for table in ("tasks", "request_results", "sources"):
        left = await pool.fetchval(
            f"SELECT count(*) FROM {table} WHERE workflow_id = $1", workflow_id
        )
        assert left == 0, table
    assert (await client.get(f"{WORKFLOWS}/{created['id']}", headers=ADMIN)).status == 404
    assert (await client.delete(f"{WORKFLOWS}/{created['id']}", headers=ADMIN)).status == 404

    async def token_refused() -> bool:
        return (await client.get(tasks)).status == 404

    await wait_until(token_refused, 3)
    assert (await client.get(f"{WORKFLOWS}/{kept['id']}", headers=ADMIN)).status == 200


async def test_requests_of_a_deleted_workflow_in_the_queue_do_not_stop_the_worker(
    client, stopped_worker, pool
):
    created = await _create(client)
    tasks = f"/api/v1/workflows/{created['token']}/tasks"
    accepted = await client.post(tasks, json=SEED_REQUEST, headers={"Prefer": "respond-async"})
    assert accepted.status == 202
    assert (await client.delete(f"{WORKFLOWS}/{created['id']}", headers=ADMIN)).status == 204
    await stopped_worker.start()
    await stopped_worker.drain()
    assert await pool.fetchval("SELECT count(*) FROM dead_letters") == 0
    assert await pool.fetchval("SELECT count(*) FROM tasks") == 0
    other = await _create(client)  # the worker still applies what comes next
    response = await client.post(f"/api/v1/workflows/{other['token']}/tasks", json=SEED_REQUEST)
    assert response.status == 201


async def _fill(pool: Any, public_id: str, count: int) -> int:
    """Give the workflow `count` tasks (Unique IDs 00000, 00001, …) with a result each, and a
    result of no task; its id."""
    workflow_id: int = await pool.fetchval(
        "SELECT id FROM workflows WHERE public_id = $1", public_id
    )
    await pool.execute(
        "INSERT INTO tasks (workflow_id, public_id, unique_key, stage, fields)"
        " SELECT $1, $2 || n, lpad(n::text, 5, '0'), 'Done', jsonb_build_object('1', n::text)"
        " FROM generate_series(0, $3 - 1) AS n",
        workflow_id,
        public_id,
        count,
    )
    await pool.execute(
        "INSERT INTO request_results (request_id, workflow_id, http_status, outcome, task_id,"
        " body, received_at) SELECT gen_random_uuid(), $1, 201, 'created', id, '{}', now()"
        " FROM tasks WHERE workflow_id = $1"
        " UNION ALL SELECT gen_random_uuid(), $1, 422, 'invalid', NULL, '{}'::json, now()",
        workflow_id,
    )
    return workflow_id


@asynccontextmanager
async def _task_held(settings: Any, pool: Any, workflow_id: int, key: str) -> AsyncIterator[None]:
    """Hold one task of the workflow locked, as a long transaction of another client would: a
    delete reaching it waits (`_lock_awaited` tells when)."""
    conn = await asyncpg.connect(settings.database_url)
    try:
        async with conn.transaction():
            await conn.execute(
                "SELECT 1 FROM tasks WHERE workflow_id = $1 AND unique_key = $2 FOR UPDATE",
                workflow_id,
                key,
            )
            yield
    finally:
        await conn.close()


async def _lock_awaited(pool: Any) -> bool:
    return bool(
        await pool.fetchval(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE datname = current_database() AND wait_event_type = 'Lock'"
        )
    )


async def _left_of(pool: Any, workflow_id: int) -> dict[str, int]:
    return {
        table: await pool.fetchval(f"SELECT count(*) FROM {table} WHERE {column} = $1", workflow_id)
        for table, column in (
            ("workflows", "id"),
            ("tasks", "workflow_id"),
            ("request_results", "workflow_id"),
        )
    }


async def test_writes_of_other_workflows_go_on_while_a_large_workflow_is_deleted(
    client, stopped_worker, pool, settings
):
    """A delete stuck (here on a task another transaction holds) in the middle of a workflow of
    20,000 tasks: the workflow is gone at once, a request of it still in the queue is answered
    404 without waiting for its tasks, and a worker applies another workflow's writes in the
    same moment, each in well under a second. (One long DELETE held every task it had reached,
    and the worker waited for it with the other workflow's writes in hand.)"""
    doomed, other = await _create(client), await _create(client)
    workflow_id = await _fill(pool, doomed["id"], 20_000)
    tasks = f"/api/v1/workflows/{doomed['token']}/tasks"
    queued = await client.post(
        tasks, json={"Company ID": "00001", "Stage": "Done"}, headers={"Prefer": "respond-async"}
    )
    assert queued.status == 202

    async with _task_held(settings, pool, workflow_id, "19999"):
        deleting = asyncio.create_task(client.delete(f"{WORKFLOWS}/{doomed['id']}", headers=ADMIN))
        await wait_until(lambda: _lock_awaited(pool), 10)
        assert (await client.get(f"{WORKFLOWS}/{doomed['id']}", headers=ADMIN)).status == 404
        await stopped_worker.start()
        others = f"/api/v1/workflows/{other['token']}/tasks"
        for n in range(5):
            started = time.monotonic()
            written = await client.post(others, json={**SEED_REQUEST, "Company ID": str(n)})
            assert written.status == 201, await written.text()
            assert time.monotonic() - started < 1.0
        await stopped_worker.drain()  # the deleted workflow's request is answered too
        assert not deleting.done()

    assert (await deleting).status == 204
    assert await _left_of(pool, workflow_id) == {
        "workflows": 0,
        "tasks": 0,
        "request_results": 0,
    }
    assert await pool.fetchval("SELECT count(*) FROM dead_letters") == 0


async def test_a_delete_cut_short_is_hidden_at_once_and_finished_by_the_purge(
    client, pool, settings
):
    created = await _create(client)
    token_path = f"/api/v1/workflows/{created['token']}/tasks"
    assert (await client.get(token_path)).status == 200  # the edge has the token cached
    workflow_id = await _fill(pool, created["id"], 5000)
    async with _task_held(settings, pool, workflow_id, "04999"):
        deleting = asyncio.create_task(deletions.delete_workflow(pool, created["id"]))
        await wait_until(lambda: _lock_awaited(pool), 10)
        deleting.cancel()  # as when its process dies mid-way
        await asyncio.gather(deleting, return_exceptions=True)
    left = await _left_of(pool, workflow_id)
    assert left["workflows"] == 1  # marked, and half deleted
    assert 0 < left["tasks"] < 5000

    # Nothing of it is visible: not to the admin API, the CLI's reads, nor its token.
    path = f"{WORKFLOWS}/{created['id']}"
    assert (await client.get(path, headers=ADMIN)).status == 404
    assert (await _patch(client, created["id"], {"name": "Back"}))[0] == 404
    assert (await client.delete(path, headers=ADMIN)).status == 404
    listed = await (await client.get(WORKFLOWS, headers=ADMIN)).json()
    assert created["id"] not in [w["id"] for w in listed]
    assert await store.workflow_by_id(pool, workflow_id) is None
    assert await store.workflow_by_token(pool, created["token"]) is None

    async def token_refused() -> bool:
        return (await client.get(token_path)).status == 404

    await wait_until(token_refused, 3)

    # Two purges at once (two workers) take turns, and finish it.
    kept = retention.Retention.from_settings(settings)
    await asyncio.gather(retention.purge(pool, kept), retention.purge(pool, kept))
    assert await _left_of(pool, workflow_id) == {
        "workflows": 0,
        "tasks": 0,
        "request_results": 0,
    }


# --------------------------------------------------------------------------------------------- CLI


def test_cli_updates_and_deletes_a_workflow(settings, tmp_path):
    definition = tmp_path / "sales.json"
    definition.write_bytes(orjson.dumps(SALES))
    created = orjson.loads(run_cli(settings, "workflow", "create", str(definition)))
    change = tmp_path / "change.yaml"
    change.write_text(
        "fields:\n"
        "  - {name: Company ID, type: text, required: true}\n"
        "  - {name: Name, type: text, renamed_from: Company Name}\n"
        "stages: [Lead, Won]\n"
    )
    updated = orjson.loads(run_cli(settings, "workflow", "update", created["id"], str(change)))
    assert updated["version"] == 2
    assert [spec["name"] for spec in updated["fields"]] == ["Company ID", "Name"]
    assert updated["fields"][1]["id"] == created["fields"][1]["id"]

    bad = tmp_path / "bad.json"
    bad.write_text('{"fields": [{"name": "Company ID", "type": "checkbox"}]}')
    refused = cli(settings, "workflow", "update", created["id"], str(bad))
    assert refused.returncode == 2
    assert "cannot change from text to checkbox" in refused.stderr

    deleted = cli(settings, "workflow", "delete", created["id"])
    assert deleted.returncode == 0, deleted.stderr
    assert f"deleted workflow {created['id']}" in deleted.stdout
    again = cli(settings, "workflow", "delete", created["id"])
    assert again.returncode == 1
    assert "no workflow has the id" in again.stderr
    missing = cli(settings, "workflow", "update", created["id"], str(change))
    assert missing.returncode == 1


def test_cli_updates_only_the_version_named_by_if_version(settings, tmp_path):
    definition = tmp_path / "sales.json"
    definition.write_bytes(orjson.dumps(SALES))
    created = orjson.loads(run_cli(settings, "workflow", "create", str(definition)))
    change = tmp_path / "change.yaml"
    change.write_text("stages: [Lead, Won]\n")
    update = ("workflow", "update", created["id"], str(change))
    updated = orjson.loads(run_cli(settings, *update, "--if-version", "1"))
    assert updated["version"] == 2
    change.write_text("stages: [Lead]\n")
    stale = cli(settings, *update, "--if-version", "1")
    assert stale.returncode == 1
    assert "at version 2 now" in stale.stderr
    assert "--if-version 2" in stale.stderr
    assert orjson.loads(run_cli(settings, *update, "--if-version", "2"))["version"] == 3


# ------------------------------------------------------------------------------------- migration


async def test_migration_0007_keeps_existing_workflows_revisable(settings):
    """On a database with workflows, tasks and results from before it: every workflow can be
    revised, and new fields get ids above the ones its definition holds."""
    dsn = settings.database_url + "_0006"
    await migrations.ensure_database(dsn, 10)
    conn = await asyncpg.connect(dsn)
    try:
        await migrations.apply(conn, up_to=6)
        definition = WorkflowDefinition.parse(SALES)
        workflow_id = await conn.fetchval(
            "INSERT INTO workflows (public_id, token_hash, name, definition)"
            " VALUES ('wf', $1, 'Sales', $2::jsonb) RETURNING id",
            b"\x01" * 32,
            orjson.dumps(definition.model_dump(mode="json")).decode(),
        )
        await conn.execute(
            "INSERT INTO tasks (workflow_id, public_id, unique_key, stage, fields)"
            " VALUES ($1, 't1', '42', 'Done', '{\"1\": \"42\"}')",
            workflow_id,
        )
        await conn.execute(
            "INSERT INTO request_results (request_id, workflow_id, http_status, outcome, task_id,"
            " body, received_at) SELECT gen_random_uuid(), $1, 201, 'created', id, '{}', now()"
            " FROM tasks",
            workflow_id,
        )

        applied = await migrations.apply(conn, up_to=7)

        assert [m.version for m in applied] == [7]
        assert await conn.fetchval("SELECT last_field_id FROM workflows") == 0
        # A deleted task's results are found by it (any table size: scans are off to ask).
        await conn.execute("SET enable_seqscan = off")
        plan = await conn.fetchval(
            "EXPLAIN (FORMAT JSON) UPDATE request_results SET task_id = NULL WHERE task_id = $1", 1
        )
        await conn.execute("RESET enable_seqscan")
        assert "request_results_task" in str(plan)
        async with store.open_pool(settings.model_copy(update={"database_url": dsn})) as pool:
            fields = [
                *definition.model_dump(mode="json")["fields"],
                {"name": "New", "type": "text"},
            ]
            revised = await store.update_workflow(pool, "wf", {"fields": fields})
        assert revised is not None
        assert (revised.version, revised.definition.fields[-1].id) == (2, 7)
        assert await conn.fetchval("SELECT last_field_id FROM workflows") == 7
    finally:
        await conn.close()
        admin = await asyncpg.connect(settings.database_url)
        await admin.execute(f'DROP DATABASE IF EXISTS "{dsn.rsplit("/", 1)[1]}" WITH (FORCE)')
        await admin.close()
