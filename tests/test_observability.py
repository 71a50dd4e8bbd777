"""Metrics and health: what operators watch."""

from __future__ import annotations

import asyncio

import aiohttp

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
