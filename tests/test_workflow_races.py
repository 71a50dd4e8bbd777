"""Races between a workflow's change or delete and the writes that depend on it, against the real
Postgres and RabbitMQ: a worker batch never keys tasks the way a committed change of the Unique
ID replaced, and a source is never made or moved into a workflow being deleted (nor answered 500
for it). Each race is shown once as a fixed interleaving (a transaction held open where the
change or the delete holds one) and once as it happens, over many trials.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import asyncpg
from aiohttp.test_utils import TestClient

from ingest.revisions import revise
from tests.conftest import WorkerHandle, wait_until
from tests.deliveries import ADMIN, create_source, final_status

WORKFLOWS = "/api/v1/admin/workflows"
SOURCES = "/api/v1/admin/sources"
ASYNC = {"Prefer": "respond-async"}
#: A workflow keyed by "A", which the changes below key by "B" instead.
KEYED = {
    "name": "Keyed",
    "fields": [{"name": "A", "type": "text"}, {"name": "B", "type": "text"}],
    "unique_id": "A",
}


async def _lock_waiters(pool: asyncpg.Pool) -> int:
    """How many sessions of the test's database wait for a lock."""
    waiting: int = await pool.fetchval(
        "SELECT count(*) FROM pg_stat_activity"
        " WHERE datname = current_database() AND wait_event_type = 'Lock'"
    )
    return waiting


async def _later(delay: float, send: Any, path: str) -> Any:
    await asyncio.sleep(delay)
    return await send(path, json={"unique_id": "B"}, headers=ADMIN)


async def _keys(pool: asyncpg.Pool, workflow_id: int) -> list[str]:
    rows = await pool.fetch(
        "SELECT unique_key FROM tasks WHERE workflow_id = $1 ORDER BY unique_key", workflow_id
    )
    return [row["unique_key"] for row in rows]


# ------------------------------------------------------------- the Unique ID and worker batches


async def test_a_batch_that_waits_on_a_change_is_keyed_under_the_new_version(
    client: TestClient[Any, Any], worker: WorkerHandle, pool: asyncpg.Pool, make_workflow: Any
) -> None:
    workflow, token = await make_workflow(KEYED)
    tasks = f"/api/v1/workflows/{token}/tasks"
    # The worker reads (and keeps) version 1; an invalid request writes no task.
    assert (await client.post(tasks, json={"B": "b0"})).status == 422
    rekeyed = revise(workflow.definition, 0, {"unique_id": "B"}).definition
    async with pool.acquire() as conn, conn.transaction():
        # What a PATCH holds until it commits: the row locked, the next version written. No
        # notice is sent: the worker may hear of a change after its batch has gone on.
        await conn.execute("SELECT 1 FROM workflows WHERE id = $1 FOR UPDATE", workflow.id)
        await conn.execute(
            "UPDATE workflows SET definition = $2, version = version + 1 WHERE id = $1",
            workflow.id,
            rekeyed.model_dump(mode="json"),
        )
        response = await client.post(tasks, json={"A": "a1", "B": "b1"}, headers=ASYNC)
        assert response.status == 202
        status_url = (await response.json())["status_url"]
        await wait_until(lambda: _lock_waiters(pool))  # the batch waits for the change
    document = await final_status(client, status_url)
    assert (document["status"], document["http_status"]) == ("succeeded", 201)
    assert await _keys(pool, workflow.id) == ["b1"]


async def test_a_unique_id_change_racing_writes_never_leaves_a_task_keyed_the_old_way(
    client: TestClient[Any, Any], worker: WorkerHandle, pool: asyncpg.Pool, make_workflow: Any
) -> None:
    outcomes: Counter[str] = Counter()
    for trial in range(30):
        workflow, token = await make_workflow(KEYED)
        tasks = f"/api/v1/workflows/{token}/tasks"
        assert (await client.post(tasks, json={"B": "b0"})).status == 422  # cached: version 1
        writes = [
            client.post(tasks, json={"A": f"a{n}", "B": f"b{n}"}, headers=ASYNC) for n in range(10)
        ]
        # Sent 0 to 9 ms after the writes: no wait for anything, only where the race falls.
        change = _later(trial % 10 * 0.001, client.patch, f"{WORKFLOWS}/{workflow.public_id}")
        *written, changed = await asyncio.gather(*writes, change)
        assert {response.status for response in written} == {202}
        await worker.drain()
        keys = await _keys(pool, workflow.id)
        assert len(keys) == 10
        if changed.status == 409:  # the change found tasks: they stay keyed by "A"
            outcomes["refused"] += 1
            assert all(key.startswith("a") for key in keys)
            continue
        assert changed.status == 200, await changed.text()
        # Every task was committed after the change, and is keyed by "B".
        assert all(key.startswith("b") for key in keys), keys
        outcomes["changed"] += 1
    # Changes came first, with writes in flight (here about half of the trials; the others found
    # tasks already committed).
    assert outcomes["changed"], outcomes


# -------------------------------------------------------------------- sources and workflow deletes


def _source(workflow: str, name: str = "Leads") -> dict[str, Any]:
    return {"name": name, "workflow": workflow, "verify": {"scheme": "none"}}


def _no_workflow(public_id: str) -> list[str]:
    return [f"workflow: no workflow has the public id {public_id!r}"]


async def _sources_of_marked_workflows(pool: asyncpg.Pool) -> int:
    """Sources whose workflow is marked deleted: a delete removes them as it marks it."""
    found: int = await pool.fetchval(
        "SELECT count(*) FROM sources s JOIN workflows w ON w.id = s.workflow_id"
        " WHERE w.deleted_at IS NOT NULL"
    )
    return found


async def test_a_source_made_or_moved_while_its_workflow_is_marked_deleted_is_refused(
    client: TestClient[Any, Any], pool: asyncpg.Pool, make_workflow: Any
) -> None:
    doomed, _ = await make_workflow()
    other, _ = await make_workflow()
    moved = await create_source(client, _source(other.public_id))
    async with pool.acquire() as conn, conn.transaction():
        # The first step of a delete (ingest.deletions.delete_workflow), held open.
        await conn.execute("UPDATE workflows SET deleted_at = now() WHERE id = $1", doomed.id)
        await conn.execute("DELETE FROM sources WHERE workflow_id = $1", doomed.id)
        racing = [
            asyncio.create_task(
                client.post(SOURCES, json=_source(doomed.public_id), headers=ADMIN)
            ),
            asyncio.create_task(
                client.patch(
                    f"{SOURCES}/{moved['id']}", json={"workflow": doomed.public_id}, headers=ADMIN
                )
            ),
        ]

        async def both_wait_or_one_is_done() -> bool:
            return any(task.done() for task in racing) or await _lock_waiters(pool) >= 2

        await wait_until(both_wait_or_one_is_done)
    for task in racing:
        response = await task
        assert response.status == 422, await response.text()
        assert (await response.json())["problems"] == _no_workflow(doomed.public_id)
    assert await _sources_of_marked_workflows(pool) == 0
    shown = await client.get(f"{SOURCES}/{moved['id']}", headers=ADMIN)
    assert (await shown.json())["workflow"] == other.public_id


async def _race_a_delete(
    client: TestClient[Any, Any], make_workflow: Any, home: str, delay: float
) -> list[tuple[str, int, Any]]:
    """Delete a workflow (`delay` seconds on: only where the race falls) while sources are made
    for it, changed in it and moved into it; what each operation was answered (kind, status,
    body)."""
    doomed, _ = await make_workflow()
    staying = await create_source(client, _source(doomed.public_id))
    moving = await create_source(client, _source(home))

    async def answered(kind: str, call: Any, after: float = 0.0) -> tuple[str, int, Any]:
        await asyncio.sleep(after)
        response = await call
        body = await response.json() if response.status != 204 else None
        return kind, response.status, body

    return await asyncio.gather(
        answered("delete", client.delete(f"{WORKFLOWS}/{doomed.public_id}", headers=ADMIN), delay),
        *(
            answered("create", client.post(SOURCES, json=_source(doomed.public_id), headers=ADMIN))
            for _ in range(4)
        ),
        answered(
            "stay",
            client.patch(f"{SOURCES}/{staying['id']}", json={"name": "Renamed"}, headers=ADMIN),
        ),
        answered(
            "move",
            client.patch(
                f"{SOURCES}/{moving['id']}", json={"workflow": doomed.public_id}, headers=ADMIN
            ),
        ),
    )


async def test_sources_racing_a_workflow_delete_are_refused_or_removed_never_a_500(
    client: TestClient[Any, Any], pool: asyncpg.Pool, make_workflow: Any
) -> None:
    home, _ = await make_workflow()
    seen: list[int] = []
    racing = True

    async def watch() -> None:
        while racing:
            seen.append(await _sources_of_marked_workflows(pool))
            await asyncio.sleep(0.005)

    watcher = asyncio.create_task(watch())
    answers: Counter[tuple[str, int]] = Counter()
    try:
        for _ in range(5):
            rounds = [
                _race_a_delete(client, make_workflow, home.public_id, trial * 0.001)
                for trial in range(5)
            ]
            for trial in await asyncio.gather(*rounds):
                for kind, status, body in trial:
                    answers[kind, status] += 1
                    if status == 422:
                        assert len(body["problems"]) == 1, body
                        assert body["problems"][0].startswith("workflow: no workflow has"), body
    finally:
        racing = False
        await watcher
    allowed = {
        ("delete", 204),
        *(("create", status) for status in (201, 422)),
        *(("stay", status) for status in (200, 404)),
        *(("move", status) for status in (200, 422)),
    }
    assert set(answers) <= allowed, answers
    assert seen
    assert max(seen) == 0, "a source was left in a workflow being deleted"
    assert await pool.fetchval("SELECT count(*) FROM workflows WHERE deleted_at IS NOT NULL") == 0
    # What is left: the sources that stayed home (one a trial, less those moved).
    left = await pool.fetchval("SELECT count(*) FROM sources WHERE workflow_id = $1", home.id)
    assert left == await pool.fetchval("SELECT count(*) FROM sources") == 25 - answers["move", 200]
