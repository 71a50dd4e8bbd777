"""Poison is dead-lettered alone, at once, and shows as failed; operators replay it."""

from __future__ import annotations

import json

import pytest
from aiohttp.test_utils import TestClient, TestServer

from ingest.edge.app import create_app
from tests.conftest import SEED_REQUEST, WorkerHandle, run_cli, wait_until


@pytest.fixture
def low_limit(settings):
    """Settings whose queue dead-letters a message after two deliveries."""
    return settings.model_copy(update={"delivery_limit": 2})


@pytest.fixture
async def limited_client(low_limit):
    server = TestServer(create_app(low_limit), host="127.0.0.1", port=low_limit.port)
    async with TestClient(server) as client:
        yield client


@pytest.fixture
async def poisoned(low_limit):
    """A worker whose handler crashes on any request that mentions POISON."""
    handle = WorkerHandle(low_limit.model_copy(update={"fault_points": "poison:POISON"}))
    yield handle
    await handle.stop()


async def _status(client, location):
    path = "/" + location.split("://", 1)[1].split("/", 1)[1]
    return await (await client.get(path)).json()


async def test_poison_is_dead_lettered_marked_failed_and_replayable(
    limited_client, low_limit, poisoned, make_workflow, pool
):
    client, settings = limited_client, low_limit
    await poisoned.start()
    _, token = await make_workflow()
    url = f"/api/v1/workflows/{token}/tasks"
    poison = await client.post(
        url, json={**SEED_REQUEST, "Company Name": "POISON"}, headers={"Prefer": "respond-async"}
    )
    healthy = await client.post(url, json={**SEED_REQUEST, "Company ID": "43"})
    assert healthy.status == 201  # the poison message does not take its neighbours down

    async def failed():
        document = await _status(client, poison.headers["Location"])
        return document if document["status"] == "failed" else None

    document = await wait_until(failed, within=30)
    assert document["error"] == "dead_lettered"
    assert "PoisonFault" not in document["message"]  # why is for operators (`dlq list`)
    assert await pool.fetchval("SELECT count(*) FROM tasks") == 1

    letters = json.loads(run_cli(settings, "dlq", "list"))
    assert len(letters) == 1
    assert letters[0]["reason"].startswith("PoisonFault")
    assert len(letters[0]["requests"]) == 1  # the poison request alone, not its message

    await poisoned.stop()
    healed = WorkerHandle(settings)  # the bug is fixed: no fault point any more
    await healed.start()
    try:
        assert "replayed 1" in run_cli(settings, "dlq", "replay")

        async def succeeded():
            document = await _status(client, poison.headers["Location"])
            return document if document["status"] == "succeeded" else None

        document = await wait_until(succeeded, within=30)
        assert document["task"]["Company Name"] == "POISON"
        assert json.loads(run_cli(settings, "dlq", "list")) == []
    finally:
        await healed.stop()


async def test_undecodable_message_is_dead_lettered_at_once(settings, worker, pool):
    import aio_pika

    connection = await aio_pika.connect(settings.amqp_url)
    async with connection:
        channel = await connection.channel()
        exchange = await channel.get_exchange(settings.queue)
        await exchange.publish(aio_pika.Message(b"not a batch", delivery_mode=2), settings.queue)

    async def recorded():
        return await pool.fetchval("SELECT reason FROM dead_letters")

    assert await wait_until(recorded) == "rejected"
