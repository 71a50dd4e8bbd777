"""Metrics and health: what operators watch."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator

import aio_pika
import aiohttp

from ingest.broker import ensure_topology
from ingest.edge.metrics import EdgeMetrics
from ingest.edge.publisher import Publisher
from ingest.messages import Operation, TaskRequest
from ingest.settings import Settings
from tests.conftest import SEED_REQUEST, WorkerHandle, free_port


def _sample(text: str, name: str, **labels: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and all(f'{k}="{v}"' in line for k, v in labels.items()):
            head, _, value = line.rpartition(" ")
            if head.split("{")[0] == name:
                total += float(value)
    return total


async def test_edge_metrics_move_under_load(client, worker, make_workflow):
    _, token = await make_workflow()
    before = await (await client.get("/metrics")).text()
    for n in range(5):
        body = {**SEED_REQUEST, "Company ID": str(n)}
        assert (await client.post(f"/api/v1/workflows/{token}/tasks", json=body)).status == 201
    after = await (await client.get("/metrics")).text()
    route = "/api/v1/workflows/{token}/tasks"
    counted = _sample(after, "ingest_http_requests_total", route=route, status="201")
    assert counted - _sample(before, "ingest_http_requests_total", route=route, status="201") == 5
    assert _sample(after, "ingest_publish_confirms_total") >= 5
    assert _sample(after, "ingest_sync_wait_seconds_count", result="replied") >= 5
    assert token not in after


async def test_worker_serves_metrics_and_health_on_its_port(settings, client, make_workflow):
    port = free_port()
    handle = WorkerHandle(settings.model_copy(update={"worker_metrics_port": port}))
    await handle.start()
    try:
        _, token = await make_workflow()
        await client.post(f"/api/v1/workflows/{token}/tasks", json=SEED_REQUEST)
        await client.post(f"/api/v1/workflows/{token}/tasks", json={"Company ID": "x"})
        async with aiohttp.ClientSession() as session:
            async with session.get(f"http://127.0.0.1:{port}/healthz") as response:
                assert response.status == 200
            async with session.get(f"http://127.0.0.1:{port}/metrics") as response:
                text = await response.text()
        assert _sample(text, "ingest_task_outcomes_total", outcome="created") == 1
        assert _sample(text, "ingest_task_outcomes_total", outcome="invalid") == 1
        assert _sample(text, "ingest_worker_consuming") == 1
        assert _sample(text, "ingest_end_to_end_seconds_count") == 2
    finally:
        await handle.stop()
    await asyncio.sleep(0)


async def test_methods_other_than_http_s_own_are_counted_as_one(client):
    """The client chooses the method: one series for all the others keeps their number bounded."""
    for method in ("PROPFIND", "MKCOL", "LOCK"):
        assert (await client.request(method, "/healthz")).status == 405
    text = await (await client.get("/metrics")).text()
    assert _sample(text, "ingest_http_requests_total", method="other", status="405") == 3
    assert "PROPFIND" not in text


def _request(n: int) -> TaskRequest:
    return TaskRequest(
        id=uuid.uuid4(),
        workflow_id=1,
        workflow_version=1,
        operation=Operation.UPSERT,
        body=f'{{"n": {n}}}',
        received_at=time.time(),
        wants_reply=False,
    )


@contextlib.asynccontextmanager
async def _publisher(settings: Settings, metrics: EdgeMetrics) -> AsyncIterator[Publisher]:
    connection = await aio_pika.connect(settings.amqp_url)
    async with connection:
        await ensure_topology(connection, settings)
        channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        exchange = await channel.get_exchange(settings.queue)
        async with Publisher(settings, None, metrics) as publisher:
            publisher.attach(channel, exchange)
            yield publisher


async def test_a_lone_request_goes_at_once_and_later_ones_share_messages(settings):
    """While a message waits for its confirm, requests wait for company: they leave together
    when it is confirmed, not one message each (as they would with a publisher loop idle)."""
    metrics = EdgeMetrics()
    sample = metrics.registry.get_sample_value
    async with _publisher(settings, metrics) as publisher:
        first = asyncio.ensure_future(publisher.publish(_request(0)))
        for _ in range(3):
            await asyncio.sleep(0)
        assert sample("ingest_publish_batch_requests_count") == 1  # on its way, alone
        later = []
        for n in range(1, 11):
            later.append(asyncio.ensure_future(publisher.publish(_request(n))))
            await asyncio.sleep(0)
        await asyncio.wait_for(asyncio.gather(first, *later), 10)
    assert sample("ingest_publish_batch_requests_sum") == 11
    # A confirm may come back between two of them, and let those that wait leave.
    assert sample("ingest_publish_batch_requests_count") <= 4
    assert sample("ingest_publish_batch_requests_bucket", {"le": "1.0"}) >= 1
