"""Batch imports in the worker: a batch is one request to the culprit search (it fails or commits
as a whole, never harming its neighbours), batch imports are cut into transactions by their items,
and a batch's answer stays whole and the same, live and stored, up to its bound."""

from __future__ import annotations

import asyncio
import io
import uuid
from typing import Any

import orjson
import pytest
from aiohttp.test_utils import TestClient, TestServer

from ingest.edge.app import create_app
from ingest.messages import Operation, TaskRequest
from ingest.results import MAX_BATCH_BODY_BYTES, is_note
from tests.conftest import SEED_REQUEST, WorkerHandle, publish_batches, wait_until
from worker.consumer import Consumer


def _company(n: int, **fields: Any) -> dict[str, Any]:
    return {**SEED_REQUEST, "Company ID": str(n), "Company Name": f"Company {n}", **fields}


def _batch(workflow: Any, items: list[Any]) -> TaskRequest:
    body = orjson.dumps(items).decode()
    return TaskRequest(
        uuid.uuid4(), workflow.id, workflow.version, Operation.BATCH, body, 0.0, items=len(items)
    )


def _single(workflow: Any, item: dict[str, Any]) -> TaskRequest:
    body = orjson.dumps(item).decode()
    return TaskRequest(uuid.uuid4(), workflow.id, workflow.version, Operation.UPSERT, body, 0.0)


async def _results(pool: Any, requests: list[TaskRequest]) -> dict[uuid.UUID, Any] | None:
    rows = await pool.fetch(
        "SELECT request_id, http_status, outcome, body::text AS body FROM request_results"
        " WHERE request_id = ANY($1::uuid[])",
        [r.id for r in requests],
    )
    return {row["request_id"]: row for row in rows} if len(rows) == len(requests) else None


@pytest.fixture
async def poisoned(settings):
    """A worker whose handler crashes on any request that mentions POISON (a bug stand-in)."""
    handle = WorkerHandle(settings.model_copy(update={"fault_points": "poison:POISON"}))
    await handle.start()
    yield handle
    await handle.stop()


async def test_a_batch_postgres_refuses_fails_whole_and_its_neighbours_commit(
    settings, poisoned, make_workflow, pool
):
    """Values are bounded before Postgres, so this takes a check constraint to happen: the batch
    holding the refused value is the client's 422 as a whole (none of its items is applied), and
    a batch that crashes the handler is dead-lettered alone; the requests beside them commit."""
    sales, _ = await make_workflow()
    await pool.execute(
        "ALTER TABLE tasks ADD CONSTRAINT refuses_evil"
        " CHECK (position('\"EVIL\"' in fields::text) = 0)"
    )
    refused = _batch(sales, [_company(1), _company(2, **{"Company Name": "EVIL"})])
    crashing = _batch(sales, [_company(3), _company(4, **{"Company Name": "POISON"})])
    healthy = [_single(sales, _company(n)) for n in range(10, 20)]
    good_batch = _batch(sales, [_company(n) for n in range(20, 30)])
    mixed = [*healthy[:5], refused, good_batch, crashing, *healthy[5:]]
    await publish_batches(settings, mixed)

    results = await wait_until(lambda: _results(pool, mixed), within=30)
    assert {results[r.id]["http_status"] for r in healthy} == {201}
    assert results[good_batch.id]["http_status"] == 200
    assert orjson.loads(results[refused.id]["body"])["error"] == "unstorable_value"
    assert results[refused.id]["http_status"] == 422
    assert (results[crashing.id]["http_status"], results[crashing.id]["outcome"]) == (500, "dead")
    letters = await pool.fetch("SELECT request_ids FROM dead_letters")
    assert [list(letter["request_ids"]) for letter in letters] == [[crashing.id]]
    keys = {row["unique_key"] for row in await pool.fetch("SELECT unique_key FROM tasks")}
    assert keys == {str(n) for n in range(10, 30)}  # no item of the refused or dead batch


async def test_batch_imports_are_cut_into_transactions_by_their_items(
    settings, make_workflow, pool
):
    sales, _ = await make_workflow()
    small = settings.model_copy(update={"worker_batch_max": 5})
    requests = [
        _batch(sales, [_company(n) for n in range(0, 3)]),
        _single(sales, _company(3)),
        _batch(sales, [_company(n) for n in range(4, 7)]),
        _batch(sales, [_company(n) for n in range(7, 14)]),  # more than the bound: never cut
    ]
    async with _consumer(small, pool) as consumer:
        await publish_batches(settings, requests)  # one message
        await consumer.drain()
        registry = consumer.metrics.registry
        commits = registry.get_sample_value("ingest_worker_batch_duration_seconds_count")
    assert commits == 3  # [3 items, 1 task], [3 items], [7 items]
    transactions = await pool.fetchval("SELECT count(DISTINCT xmin::text) FROM tasks")
    assert transactions == 3
    assert await pool.fetchval("SELECT count(*) FROM tasks") == 14


class _consumer:
    """A consumer with settings of the test's own, running while the block runs."""

    def __init__(self, settings: Any, pool: Any) -> None:
        self._consumer = Consumer(settings, pool)
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Consumer:
        self._task = asyncio.create_task(self._consumer.run())
        await asyncio.wait_for(self._consumer.consuming.wait(), 10)
        return self._consumer

    async def __aexit__(self, *exc_info: object) -> None:
        self._consumer.stop()
        assert self._task is not None
        await asyncio.wait_for(self._task, 10)


NOTES = {
    "name": "Notes",
    "fields": [
        {"name": "Ref", "type": "text", "required": True},
        {"name": "Text", "type": "longText"},
    ],
    "unique_id": "Ref",
}


async def test_an_answer_past_its_bound_keeps_notes_and_is_the_same_live_and_stored(
    settings, worker, make_workflow
):
    """45 tasks of 100,000 characters: their answers pass MAX_BATCH_BODY_BYTES, so each becomes a
    note with its Task URL; the other items stay whole; a retry gets the same bytes."""
    _, token = await make_workflow(NOTES)
    large = settings.model_copy(update={"max_body_bytes": 8 * 1024 * 1024})
    items = [{"Ref": str(n), "Text": "x" * 100_000} for n in range(45)] + [{"Ref": "small"}]
    body = orjson.dumps(items)
    headers = {"Content-Type": "application/json", "Idempotency-Key": "large"}
    async with TestClient(TestServer(create_app(large), port=large.port)) as client:
        url = f"/api/v1/workflows/{token}/tasks/batch"
        live = await client.post(url, data=io.BytesIO(body), headers=headers)
        assert live.status == 200
        answer = await live.read()
        replayed = await client.post(url, data=io.BytesIO(body), headers=headers)
        assert await replayed.read() == answer
    assert len(answer) <= MAX_BATCH_BODY_BYTES
    results = orjson.loads(answer)["results"]
    assert [r["status"] for r in results] == [201] * 46
    assert all(is_note(r["body"]) and r["body"]["Task URL"] for r in results[:45])
    assert results[45]["body"]["Ref"] == "small"
