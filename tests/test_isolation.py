"""One request's failure stays its own: poison requests share broker messages with healthy ones,
yet every healthy request commits once and only the culprit is dead-lettered."""

from __future__ import annotations

import json
import uuid

import aio_pika
import orjson
import pytest

from ingest.messages import Operation, TaskBatch, TaskRequest
from tests.conftest import (
    SEED_REQUEST,
    WorkerHandle,
    publish_batches,
    run_cli,
    wait_until,
)
from worker.culprits import forget_attempts, mark_attempt, request_key

OTHER = {
    "name": "Other",
    "fields": [{"name": "Ref", "type": "text", "required": True}],
    "unique_id": "Ref",
}


def _request(workflow, body: dict) -> TaskRequest:
    return TaskRequest(
        uuid.uuid4(),
        workflow.id,
        workflow.version,
        Operation.UPSERT,
        orjson.dumps(body).decode(),
        0.0,
    )


@pytest.fixture
async def poisoned(settings):
    """A worker whose handler crashes on any request that mentions POISON (a bug stand-in)."""
    handle = WorkerHandle(settings.model_copy(update={"fault_points": "poison:POISON"}))
    await handle.start()
    yield handle
    await handle.stop()


async def _results(pool, requests):
    rows = await pool.fetch(
        "SELECT request_id, http_status, outcome, body FROM request_results"
        " WHERE request_id = ANY($1::uuid[])",
        [r.id for r in requests],
    )
    return {row["request_id"]: row for row in rows}


async def test_poison_requests_get_their_own_answers_and_their_neighbours_commit(
    settings, poisoned, make_workflow, pool
):
    sales, _ = await make_workflow()
    other, _ = await make_workflow(OTHER)
    # A value Postgres refuses, whatever validation let through (here: a check constraint).
    await pool.execute(
        "ALTER TABLE tasks ADD CONSTRAINT refuses_evil"
        " CHECK (position('\"EVIL\"' in fields::text) = 0)"
    )
    healthy = [
        _request(sales, {**SEED_REQUEST, "Company ID": f"h{n}", "Company Name": f"Co {n}"})
        for n in range(40)
    ] + [_request(other, {"Ref": f"r{n}"}) for n in range(40)]
    crashing = _request(sales, {**SEED_REQUEST, "Company ID": "p", "Company Name": "POISON"})
    refused = _request(other, {"Ref": "EVIL"})
    mixed = [*healthy[:20], crashing, *healthy[20:50], refused, *healthy[50:]]
    await publish_batches(settings, mixed[:45], mixed[45:])

    async def settled():
        found = await _results(pool, mixed)
        return found if len(found) == len(mixed) else None

    results = await wait_until(settled, within=30)
    assert {results[r.id]["http_status"] for r in healthy} == {201}
    assert await pool.fetchval("SELECT count(*) FROM tasks") == len(healthy)
    assert results[refused.id]["http_status"] == 422
    assert json.loads(results[refused.id]["body"])["error"] == "unstorable_value"
    assert (results[crashing.id]["http_status"], results[crashing.id]["outcome"]) == (500, "dead")
    letters = await pool.fetch("SELECT request_ids, reason FROM dead_letters")
    assert [list(letter["request_ids"]) for letter in letters] == [[crashing.id]]
    assert letters[0]["reason"].startswith("PoisonFault")


async def test_a_dead_lettered_message_keeps_only_its_unfinished_requests(
    settings, worker, make_workflow, pool
):
    """A message the broker dead-letters (a worker died on it at every delivery) becomes one
    letter per request still without a result; requests that were applied stay applied."""
    sales, _ = await make_workflow()
    applied = _request(sales, {**SEED_REQUEST, "Company ID": "done"})
    await publish_batches(settings, [applied])

    async def applied_done():
        return len(await _results(pool, [applied])) == 1

    await wait_until(applied_done)
    unfinished = [_request(sales, {**SEED_REQUEST, "Company ID": f"u{n}"}) for n in range(2)]
    # Marks its attempts left (a worker died on it): they go with the message.
    async with pool.acquire() as conn:
        for request in unfinished:
            await mark_attempt(conn, request_key(request.id), uuid.uuid4())
    connection = await aio_pika.connect(settings.amqp_url)
    async with connection:
        channel = await connection.channel()
        exchange = await channel.get_exchange(f"{settings.queue}.dead")
        body = TaskBatch((applied, *unfinished)).encode()
        death = {"x-death": [{"reason": "delivery_limit", "queue": settings.queue}]}
        await exchange.publish(aio_pika.Message(body, headers=death), routing_key="")

    async def recorded():
        return await pool.fetch("SELECT request_ids, reason FROM dead_letters ORDER BY id")

    letters = await wait_until(recorded)
    assert [list(letter["request_ids"]) for letter in letters] == [[r.id] for r in unfinished]

    async def marks_gone():
        return await pool.fetchval("SELECT count(*) FROM attempts") == 0

    await wait_until(marks_gone)
    results = await _results(pool, [applied, *unfinished])
    assert results[applied.id]["http_status"] == 201
    assert {results[r.id]["outcome"] for r in unfinished} == {"dead"}

    replay = run_cli(settings, "dlq", "replay")
    assert "replayed 2" in replay

    async def replayed():
        found = await _results(pool, unfinished)
        return {row["http_status"] for row in found.values()} == {201}

    await wait_until(replayed)
    assert await pool.fetchval("SELECT count(*) FROM tasks") == 3


async def test_only_other_processes_marking_a_request_count_as_deaths(pool):
    """A worker retrying its own apply after an outage marks again: that is no death."""
    key = request_key(uuid.uuid4())
    first, second = uuid.uuid4(), uuid.uuid4()
    async with pool.acquire() as conn:
        assert [await mark_attempt(conn, key, first) for _ in range(3)] == [0, 0, 0]
        assert await mark_attempt(conn, key, second) == 1
        assert await mark_attempt(conn, key, uuid.uuid4()) == 2
        await forget_attempts(conn, [key])
        assert await mark_attempt(conn, key, second) == 0
