"""Logs: JSON lines with request id, workflow and outcome; tokens and secrets never appear."""

from __future__ import annotations

import json
import signal

import aiohttp

from tests.conftest import SEED_REQUEST, service_env, spawn, wait_until


async def test_access_log_is_json_and_never_shows_a_token(
    settings, make_workflow, worker, tmp_path
):
    workflow, token = await make_workflow()
    env = service_env(settings, INGEST_LOG_LEVEL="DEBUG", INGEST_LOG_FORMAT="json")
    edge = spawn(["-m", "ingest", "serve"], env, tmp_path / "edge.log")
    base = settings.public_url
    try:

        async def ready():
            try:
                async with aiohttp.ClientSession() as s, s.get(f"{base}/readyz") as r:
                    return r.status == 200
            except aiohttp.ClientError:
                return False

        await wait_until(ready, within=30)
        async with aiohttp.ClientSession() as session:
            tasks = f"{base}/api/v1/workflows/{token}/tasks"
            headers = {"X-Request-Id": "req-123"}
            async with session.post(tasks, json=SEED_REQUEST, headers=headers) as response:
                assert response.status == 201
                assert response.headers["X-Request-Id"] == "req-123"
            near = token[:-1] + ("A" if token[-1] != "A" else "B")
            async with session.post(f"{base}/api/v1/workflows/{near}/tasks", json={}) as response:
                assert response.status == 404
            async with session.get(f"{base}/api/v1/workflows/x/tasks?token={token}") as response:
                assert response.status == 404
    finally:
        edge.send_signal(signal.SIGTERM)
        edge.wait(20)
    text = (tmp_path / "edge.log").read_text()
    assert token not in text
    assert near not in text
    lines = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
    access = [line for line in lines if line["logger"] == "ingest.access"]
    created = next(line for line in access if line.get("request_id") == "req-123")
    assert created["status"] == 201
    assert created["workflow"] == workflow.public_id
    assert created["outcome"] == "answered"
    assert created["msg"] == "POST /api/v1/workflows/<token>/tasks 201"
    assert all("level" in line and "ts" in line for line in lines)
