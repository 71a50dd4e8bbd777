"""Logs: JSON lines with request id, workflow and outcome; tokens and secrets never appear."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import secrets
import signal

import aiohttp
import pytest

from ingest.logs import AccessLog, JsonFormatter, LogWriter, RedactingFormatter, redact
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


def test_a_field_that_is_not_utf8_is_escaped_and_the_line_kept():
    formatter = JsonFormatter()
    record = logging.makeLogRecord(
        {"msg": "GET %s", "args": ("/a\udcff",), "request_id": "id-\udcfe", "n": 1}
    )
    line = json.loads(formatter.format(record))
    assert (line["msg"], line["request_id"], line["n"]) == ("GET /a\\xff", "id-\\xfe", 1)


def test_a_record_whose_arguments_do_not_format_still_makes_a_line():
    record = logging.makeLogRecord({"msg": "%d requests", "args": ("many",), "levelname": "INFO"})
    line = json.loads(JsonFormatter().format(record))
    assert "%d requests" in line["msg"]
    assert line["level"] == "INFO"


@pytest.mark.parametrize(
    "line",
    [
        "b'/api/v1/workflows/{dots}{token}...'",
        "b'/api/v1/workflows/{dots}{cut}...'",
        "bytearray(b'/api/v1/workflows/{dots}{cut}...')",
        "/api/v1/workflows//./../{token}/tasks",
        "/api/v1/workflows/%2E%2E%2F%2e/{token}/tasks",
        "/api/v1/workflows%2F{token}/tasks",
        "/api/v2/Workflows/\\{token}/tasks",
        "b'/x/{cut}...'",
    ],
)
def test_a_token_is_hidden_however_the_path_reaches_it_and_wherever_it_is_cut(line):
    token = secrets.token_urlsafe(32)
    text = line.format(dots="./" * 22, token=token, cut=token[:20])
    hidden = redact(text)
    assert token[:16] not in hidden, hidden
    assert token[-16:] not in hidden, hidden
    assert "<token>" in hidden or "<redacted>" in hidden


def test_ids_and_module_paths_stay_readable():
    line = (
        "request 0123456789abcdef0123456789abcdef applied by ingest.workflows.WorkflowDefinition "
        "at /workflows/abcd1234/tasks/5"
    )
    assert redact(line) == line


def test_text_lines_hide_tokens_too():
    token = secrets.token_urlsafe(32)
    record = logging.makeLogRecord({"msg": "GET /API/v1/workflows/%s/tasks", "args": (token,)})
    text = RedactingFormatter("%(message)s").format(record)
    assert text == "GET /API/v1/workflows/<token>/tasks"


def _record(n: int, token: str = "") -> logging.LogRecord:
    return logging.makeLogRecord(
        {"name": "ingest.test", "msg": "line %d /api/v1/workflows/%s/tasks", "args": (n, token)}
    )


def test_the_log_writer_writes_every_queued_line_redacted_when_closed():
    token = secrets.token_urlsafe(32)
    stream = io.StringIO()
    writer = LogWriter(stream, JsonFormatter())
    writer.start()
    for n in range(5000):
        writer.handle(_record(n, token))
    writer.close()
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [line["msg"] for line in lines] == [
        f"line {n} /api/v1/workflows/<token>/tasks" for n in range(5000)
    ]
    assert token not in stream.getvalue()
    assert writer.dropped == 0


def test_a_full_log_queue_drops_lines_counts_them_and_says_so():
    stream = io.StringIO()
    writer = LogWriter(stream, JsonFormatter(), limit=10)  # not started: nothing drains it
    for n in range(25):
        writer.handle(_record(n))
    assert writer.dropped == 15
    writer.close()
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [line["msg"].split()[1] for line in lines[:10]] == [str(n) for n in range(10)]
    assert lines[10]["level"] == "WARNING"
    assert "dropped 15 log lines" in lines[10]["msg"]


@pytest.mark.parametrize(
    "formatter",
    [
        JsonFormatter(),
        RedactingFormatter("%(asctime)s %(levelname)s %(process)d %(name)s: %(message)s"),
        # what other handlers (pytest's, say) print: fields an access line does not carry
        logging.Formatter("%(levelname)s %(name)s:%(filename)s:%(lineno)d %(message)s"),
    ],
)
def test_an_access_line_formats_like_any_record(formatter):
    token = secrets.token_urlsafe(32)
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    logger = logging.getLogger("ingest.test_access")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        AccessLog(name="ingest.test_access")(
            "POST", f"/api/v1/workflows/{token}/tasks", 202, "id-1", 1.5, "abcd1234", "accepted"
        )
    finally:
        logger.removeHandler(handler)
    text = stream.getvalue()
    assert "POST /api/v1/workflows/" in text
    assert " 202" in text
    if not isinstance(formatter, JsonFormatter | RedactingFormatter):
        return
    assert token not in text
    if isinstance(formatter, JsonFormatter):
        line = json.loads(text)
        fields = {
            k: line[k] for k in ("request_id", "status", "duration_ms", "workflow", "outcome")
        }
        assert fields == {
            "request_id": "id-1",
            "status": 202,
            "duration_ms": 1.5,
            "workflow": "abcd1234",
            "outcome": "accepted",
        }


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


def test_an_access_line_handed_to_the_writer_reads_as_one_through_the_logger(caplog):
    caplog.set_level(logging.INFO, logger="ingest.access")
    token = secrets.token_urlsafe(32)
    fields = ("POST", f"/api/v1/workflows/{token}/tasks", 202, "id-1", 1.5, "abcd1234", "accepted")
    queued = io.StringIO()
    writer = LogWriter(queued, JsonFormatter())
    writer.start()
    AccessLog(writer)(*fields)
    writer.close()
    AccessLog(writer)(*fields)  # after close: written at once, not lost
    logged = io.StringIO()
    handler = logging.StreamHandler(logged)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("ingest.access")
    logger.addHandler(handler)
    try:
        AccessLog()(*fields)
    finally:
        logger.removeHandler(handler)
    lines = [json.loads(line) for line in (queued.getvalue() + logged.getvalue()).splitlines()]
    assert len(lines) == 3
    assert token not in queued.getvalue()
    for line in lines:
        del line["ts"]
    assert lines[0] == lines[1] == lines[2]


def test_an_access_line_with_undecodable_bytes_is_escaped_by_the_writer_too():
    stream = io.StringIO()
    writer = LogWriter(stream, JsonFormatter())
    writer.put(("ingest.access", 1, 0.0, "GET", "/a\udcff", 200, "id", 0.1, None, None))
    writer.close()
    line = json.loads(stream.getvalue())
    assert (line["msg"], line["status"], line["workflow"]) == ("GET /a\\xff 200", 200, None)
