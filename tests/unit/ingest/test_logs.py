"""Log lines (ingest.logs): tokens are hidden wherever they appear, lines that cannot be encoded
are escaped rather than lost, and the log writer writes or counts every line."""

from __future__ import annotations

import io
import json
import logging
import secrets

import pytest

from ingest.logs import (
    AccessLog,
    JsonFormatter,
    LogWriter,
    RedactingFormatter,
    escape_undecodable,
    redact,
)


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


@pytest.mark.parametrize(
    ("segment", "hidden"), [("abcd1234", False), ("abcd12345", True), ("A" * 43, True)]
)
def test_a_path_segment_after_workflows_is_hidden_when_longer_than_a_public_id(segment, hidden):
    line = f"GET /workflows/{segment}/tasks/5"
    assert (redact(line) != line) is hidden
    if hidden:
        assert redact(line) == "GET /workflows/<token>/tasks/5"


def test_a_run_of_forty_url_safe_characters_is_hidden_and_thirty_nine_are_not():
    assert redact(f"id {'a' * 39} end") == f"id {'a' * 39} end"
    assert redact(f"id {'a' * 40} end") == "id <redacted> end"
    assert redact(f"cut {'b' * 16}...") == "cut <redacted>..."
    assert redact(f"cut {'b' * 15}...") == f"cut {'b' * 15}..."


@pytest.mark.parametrize(
    ("text", "escaped"),
    [
        ("plain ☃", "plain ☃"),
        (b"/a\xff\xfe".decode("utf-8", "surrogateescape"), "/a\\xff\\xfe"),
        ("lone \ud800", "lone \\ud800"),
    ],
)
def test_text_that_is_not_utf8_is_escaped_so_it_can_be_written(text, escaped):
    assert escape_undecodable(text) == escaped
    escape_undecodable(text).encode("utf-8")
