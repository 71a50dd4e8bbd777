"""Logs: JSON lines with request id, workflow and outcome; tokens and secrets never appear."""

from __future__ import annotations

import asyncio
import json
import os
import signal

import aiohttp

from tests.conftest import SEED_REQUEST, service_env, spawn, wait_until
from tests.test_connections import exchange, running_edge


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


async def test_no_log_line_shows_a_token_whatever_the_request(settings, make_workflow, tmp_path):
    """Paths that miss the router, over-long and malformed requests, undecodable header bytes:
    the token never reaches the log, and every request still gets its line."""
    _, token = await make_workflow()
    near = token[:-1] + ("A" if token[-1] != "A" else "B")
    log = tmp_path / "edge.log"
    raw_requests = [
        f"POST //api/v1/workflows/{token}/tasks HTTP/1.1",
        f"POST /api/v2/workflows/{token}/tasks HTTP/1.1",
        f"POST /API/v1/workflows/{token}/tasks HTTP/1.1",
        f"POST /api/v1/Workflows/{token}/tasks HTTP/1.1",
        f"GET /v1/tasks?token={token} HTTP/1.1",
        f"POST /api/v1/workflows/{near}/tasks HTTP/1.1",
        f"GET /api/v1/workflows/{token}/tasks?Company%20ID={'x' * 9000} HTTP/1.1",
        # aiohttp quotes the first 100 bytes of an over-long line: the token is cut there.
        f"GET /api/v1/workflows/{'./' * 22}{token}/tasks?{'a' * 9000} HTTP/1.1",
        f"GET /api/v1/workflows/%2E%2E/{'%2F' * 20}{token}/tasks?{'a' * 9000} HTTP/1.1",
        f"GET /x/{'y' * 75}{token}?{'a' * 9000} HTTP/1.1",
        f"GET /api/v1/workflows/{token}/tasks HTTP/1.1\r\nX-Bad\x01Header: {token}",
        f"G\x01T /api/v1/workflows/{token}/tasks HTTP/1.1",
    ]
    async with running_edge(settings, log, INGEST_LOG_LEVEL="DEBUG"):
        for line in raw_requests:
            status, headers, body = await exchange(
                settings.port, f"{line}\r\nHost: x\r\nContent-Length: 2\r\n\r\n{{}}".encode()
            )
            assert 400 <= status < 500, (line[:60], status)
            assert headers["content-type"].startswith("application/json")
            assert set(json.loads(body)) == {"error", "message"}
        path = f"/api/v1/workflows/{token}/tasks"
        status, headers, _ = await exchange(
            settings.port,
            f"GET {path} HTTP/1.1\r\nHost: x\r\nX-Request-Id: ".encode() + b"id-\xff\xfe\r\n\r\n",
        )
        assert status == 200
        assert headers["x-request-id"] == "id-\\xff\\xfe"
    text = log.read_text()
    for secret in (token, near):
        assert secret not in text
        assert secret[:16] not in text
        assert secret[-16:] not in text
    assert "Logging error" not in text
    lines = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
    listed = next(line for line in lines if line.get("request_id") == "id-\\xff\\xfe")
    assert listed["msg"] == "GET /api/v1/workflows/<token>/tasks 200"
    refused = [line["msg"] for line in lines if line["logger"] == "ingest.edge.connections"]
    assert any("LineTooLong" in message for message in refused), refused


async def test_the_edge_writes_every_access_line_before_it_exits(settings, tmp_path):
    """Lines are written off the event loop, in batches: SIGTERM right after a burst of requests
    still finds every one of them in the log."""
    log = tmp_path / "edge.log"
    async with running_edge(settings, log) as pid:
        async with aiohttp.ClientSession() as session:

            async def get(n: int) -> int:
                headers = {"X-Request-Id": f"burst-{n}"}
                async with session.get(f"{settings.public_url}/healthz", headers=headers) as r:
                    return r.status

            assert set(await asyncio.gather(*(get(n) for n in range(500)))) == {200}
        os.kill(pid, signal.SIGTERM)  # at once; running_edge then waits for the exit
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    burst = {
        line["request_id"] for line in lines if line.get("request_id", "").startswith("burst-")
    }
    assert burst == {f"burst-{n}" for n in range(500)}
    assert any(line["msg"].endswith("stopping") for line in lines)
