"""When the broker will not take a request, the client gets 503 with Retry-After, never a 2xx."""

from __future__ import annotations

import aio_pika
from aiohttp.test_utils import TestClient, TestServer

from ingest.edge.app import create_app
from tests.conftest import SEED_REQUEST


async def test_a_full_queue_rejects_publishes_as_503(settings, make_workflow, pool):
    small = settings.model_copy(update={"queue_max_length": 2})
    _, token = await make_workflow()
    async with TestClient(TestServer(create_app(small), port=small.port)) as client:
        statuses = []
        for n in range(6):
            response = await client.post(
                f"/api/v1/workflows/{token}/tasks",
                json={**SEED_REQUEST, "Company ID": str(n)},
                headers={"Prefer": "respond-async"},
            )
            statuses.append(response.status)
            if response.status == 503:
                assert response.headers["Retry-After"].isdigit()
                assert (await response.json())["error"] == "unavailable"
    # Quorum queues enforce max-length after the fact: one publish may pass the limit.
    assert statuses[:2] == [202, 202]
    assert statuses.count(202) <= 3
    assert statuses[-1] == 503
    # Nothing accepted was lost: every 202 is a message in the queue.
    assert statuses.count(202) == await _queue_depth(settings)


async def _queue_depth(settings):
    connection = await aio_pika.connect(settings.amqp_url)
    async with connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(settings.queue, passive=True)
        return queue.declaration_result.message_count


async def test_an_unroutable_publish_is_503(client, settings, make_workflow):
    _, token = await make_workflow()
    # Warm up: the edge has declared and bound the queue by now.
    assert (await client.get("/readyz")).status == 200
    connection = await aio_pika.connect(settings.amqp_url)
    async with connection:
        channel = await connection.channel()
        queue = await channel.get_queue(settings.queue)
        await queue.unbind(settings.queue, routing_key=settings.queue)
    response = await client.post(f"/api/v1/workflows/{token}/tasks", json=SEED_REQUEST)
    assert response.status == 503
    assert "Retry-After" in response.headers
