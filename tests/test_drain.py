"""`Consumer.drain` returns once the queue is empty and every result is committed: a test can
assert right after it, with no polling."""

from __future__ import annotations

import uuid
from typing import Any

import aio_pika
import asyncpg
import orjson
import pytest

from ingest.messages import Operation, TaskRequest
from ingest.settings import Settings
from tests.conftest import publish_batches
from worker.consumer import Consumer


def _requests(workflow: Any, first: int, count: int) -> list[TaskRequest]:
    return [
        TaskRequest(
            uuid.uuid4(),
            workflow.id,
            workflow.version,
            Operation.UPSERT,
            orjson.dumps({"Company ID": str(n), "Company Name": f"Company {n}"}).decode(),
            0.0,
        )
        for n in range(first, first + count)
    ]


async def test_drain_returns_once_every_published_request_is_committed(
    settings: Settings, consumer: Consumer, pool: asyncpg.Pool, make_workflow: Any
) -> None:
    workflow, _ = await make_workflow()
    batches = [_requests(workflow, n * 50, 50) for n in range(20)]
    await publish_batches(settings, *batches)
    await consumer.drain()
    assert await pool.fetchval("SELECT count(*) FROM request_results") == 1000
    assert await pool.fetchval("SELECT count(*) FROM tasks") == 1000
    # Drained again at once, and again after more work.
    await consumer.drain(timeout=2)
    await publish_batches(settings, _requests(workflow, 1000, 3))
    await consumer.drain()
    assert await pool.fetchval("SELECT count(*) FROM request_results") == 1003


async def test_drain_counts_what_the_dead_letter_queue_holds(
    settings: Settings, consumer: Consumer, pool: asyncpg.Pool
) -> None:
    connection = await aio_pika.connect(settings.amqp_url, timeout=10)
    async with connection:
        channel = await connection.channel()
        exchange = await channel.get_exchange(settings.queue)
        await exchange.publish(aio_pika.Message(b"not a task batch"), routing_key=settings.queue)
    await consumer.drain()
    # Rejected at once, dead-lettered by the broker, and recorded by the consumer.
    assert await pool.fetchval("SELECT count(*) FROM dead_letters") == 1


async def test_drain_times_out_while_no_consumer_is_attached(
    settings: Settings, pool: asyncpg.Pool
) -> None:
    idle = Consumer(settings, pool)  # never run: not attached to the queue
    with pytest.raises(TimeoutError):
        await idle.drain(timeout=0.2)
