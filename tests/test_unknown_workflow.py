"""A request whose workflow the database does not have gets a final 404 and is acked once: it never
travels the poison path (isolation, redeliveries, the delivery limit, a dead letter)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aio_pika
import asyncpg
import orjson
import pytest

from ingest.edge.keys import EDGE
from ingest.messages import Operation, Reply, TaskBatch, TaskRequest, decode_replies
from ingest.results import DEAD_STATUS, UNKNOWN_WORKFLOW_BODY, Outcome, dead_lettered, fetch_result
from ingest.settings import Settings
from tests.conftest import SEED_REQUEST
from worker.consumer import Consumer
from worker.culprits import Verdict
from worker.upsert import BatchApplier


@pytest.fixture
async def replies(settings: Settings) -> AsyncIterator[aio_pika.abc.AbstractQueue]:
    """A reply queue standing for a waiting edge."""
    connection = await aio_pika.connect(settings.amqp_url, timeout=10)
    async with connection:
        channel = await connection.channel()
        yield await channel.declare_queue(exclusive=True)  # gone with its connection


def _request(workflow_id: int, version: int) -> TaskRequest:
    body = orjson.dumps(SEED_REQUEST).decode()
    return TaskRequest(uuid.uuid4(), workflow_id, version, Operation.UPSERT, body, 0.0)


async def _publish(settings: Settings, *requests: TaskRequest, reply_to: str = "") -> None:
    """One broker message carrying `requests`."""
    connection = await aio_pika.connect(settings.amqp_url, timeout=10)
    async with connection:
        channel = await connection.channel()
        exchange = await channel.get_exchange(settings.queue)
        body = TaskBatch(requests, reply_to=reply_to or None).encode()
        await exchange.publish(aio_pika.Message(body, delivery_mode=2), routing_key=settings.queue)


async def _reply(queue: aio_pika.abc.AbstractQueue) -> Reply:
    async with asyncio.timeout(10), queue.iterator(no_ack=True) as messages:
        async for message in messages:
            (reply,) = decode_replies(message.body)
            return reply
    raise AssertionError("the reply queue closed")


def _retries(consumer: Consumer, kind: str) -> float:
    value = consumer.metrics.registry.get_sample_value(
        "ingest_worker_retries_total", {"kind": kind}
    )
    return value or 0.0


async def _settled_once(consumer: Consumer, pool: asyncpg.Pool, batches: int) -> None:
    """Every message was settled by one ack: none isolated, nacked, redelivered or dead."""
    await consumer.drain()
    assert consumer.batches == batches
    assert _retries(consumer, "isolate") == _retries(consumer, "transient") == 0
    assert await pool.fetchval("SELECT count(*) FROM dead_letters") == 0


async def test_a_workflow_id_the_database_does_not_have_is_answered_404_and_acked(
    settings: Settings, consumer: Consumer, replies: Any, pool: asyncpg.Pool
) -> None:
    request = _request(workflow_id=987_654, version=1)
    await _publish(settings, request, reply_to=replies.name)
    reply = await _reply(replies)
    assert (reply.request_id, reply.http_status) == (request.id, 404)
    assert orjson.loads(reply.body) == {
        "error": "not_found",
        "message": "the workflow of this request no longer exists",
    }
    await _settled_once(consumer, pool, batches=1)
    # A result references its workflow: with no workflow row, the reply is the only answer (and
    # no status URL can name a request of a workflow that has no token).
    assert await pool.fetchval("SELECT count(*) FROM request_results") == 0


async def test_a_workflow_version_the_database_does_not_have_gets_a_stored_404(
    settings: Settings,
    consumer: Consumer,
    replies: Any,
    pool: asyncpg.Pool,
    make_workflow: Any,
    client: Any,
) -> None:
    workflow, token = await make_workflow()
    request = _request(workflow.id, workflow.version + 1)
    await _publish(settings, request, reply_to=replies.name)
    assert (await _reply(replies)).http_status == 404
    await _settled_once(consumer, pool, batches=1)
    stored = await fetch_result(pool, request.id, workflow.id)
    assert stored is not None
    assert (stored.http_status, stored.outcome, stored.body) == (
        404,
        Outcome.NOT_FOUND,
        UNKNOWN_WORKFLOW_BODY,
    )
    public_id = client.app[EDGE].request_ids.public(request.id, workflow.id)
    response = await client.get(f"/api/v1/workflows/{token}/requests/{public_id}")
    document = await response.json()
    assert (document["status"], document["http_status"], document["outcome"]) == (
        "failed",
        404,
        "not_found",
    )
    assert document["error"] == "not_found"


async def test_a_workflow_deleted_after_the_worker_cached_it_is_answered_404_and_acked(
    settings: Settings, consumer: Consumer, replies: Any, pool: asyncpg.Pool, make_workflow: Any
) -> None:
    workflow, _ = await make_workflow()
    await _publish(settings, _request(workflow.id, workflow.version), reply_to=replies.name)
    assert (await _reply(replies)).http_status == 201  # the worker now caches the workflow
    await pool.execute("DELETE FROM workflows WHERE id = $1", workflow.id)
    later = _request(workflow.id, workflow.version)
    await _publish(settings, later, reply_to=replies.name)
    reply = await _reply(replies)
    assert (reply.request_id, reply.http_status) == (later.id, 404)
    await _settled_once(consumer, pool, batches=2)
    # The batch reads its workflows' rows (locked) before it writes: this one is gone, no retry.
    assert _retries(consumer, "race") == 0


async def test_a_batch_applies_the_versions_the_database_has_and_answers_404_to_the_others(
    settings: Settings, consumer: Consumer, pool: asyncpg.Pool, make_workflow: Any
) -> None:
    workflow, _ = await make_workflow()
    known = _request(workflow.id, workflow.version)
    ahead = _request(workflow.id, workflow.version + 1)
    await _publish(settings, known, ahead)
    await _settled_once(consumer, pool, batches=1)
    answers = {
        row["request_id"]: (row["http_status"], row["outcome"])
        for row in await pool.fetch("SELECT request_id, http_status, outcome FROM request_results")
    }
    assert answers == {known.id: (201, "created"), ahead.id: (404, "not_found")}


async def test_a_verdict_on_a_request_of_a_deleted_workflow_is_answered_not_retried_for_ever(
    pool: asyncpg.Pool,
) -> None:
    """A request that killed workers is judged alone; if its workflow is gone by then, its dead
    verdict cannot be stored (a result references its workflow): it is answered, and the batch
    commits instead of failing on the foreign key again and again."""
    request = _request(workflow_id=987_654, version=1)
    dead = Verdict(dead_lettered(request), "killed its worker 3 times")
    async with pool.acquire() as conn:
        (answer,) = await BatchApplier("http://x").apply(conn, [request], settled={0: dead})
    assert (answer.http_status, answer.outcome) == (DEAD_STATUS, Outcome.DEAD)
    assert await pool.fetchval("SELECT count(*) FROM request_results") == 0
    assert await pool.fetchval("SELECT count(*) FROM dead_letters") == 1
