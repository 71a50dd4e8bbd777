"""Results (ingest.results): what a stored result keeps, where a request stands, and the
Idempotency-Key reuse rule."""

from __future__ import annotations

import uuid

import orjson
import pytest

from ingest.messages import Operation, TaskRequest
from ingest.results import (
    MAX_STORED_BODY_BYTES,
    RequestStatus,
    Result,
    answer_to,
    is_note,
    result_of,
    storable_body,
)


def _request(body: str = '{"Company ID": "42"}', idempotent: bool = True) -> TaskRequest:
    return TaskRequest(
        id=uuid.UUID(int=5),
        workflow_id=1,
        workflow_version=1,
        operation=Operation.UPSERT,
        body=body,
        received_at=1.0,
        idempotent=idempotent,
    )


def test_a_result_body_within_the_bound_is_stored_as_it_is():
    body = orjson.dumps({"Task URL": "http://x/t", "Notes": "n" * 1000}).decode()
    assert storable_body(body) == body


def test_an_oversized_task_body_is_stored_as_a_note_pointing_at_the_task():
    body = orjson.dumps({"Task URL": "http://x/t", "Notes": "é" * MAX_STORED_BODY_BYTES}).decode()
    note = orjson.loads(storable_body(body))
    assert note["error"] == "result_too_large"
    assert note["Task URL"] == "http://x/t"
    assert str(len(body.encode())) in note["message"]


def test_an_oversized_body_without_a_task_is_stored_as_a_note():
    body = orjson.dumps({"errors": {"x": ["y" * MAX_STORED_BODY_BYTES]}}).decode()
    note = orjson.loads(storable_body(body))
    assert note["error"] == "result_too_large"
    assert "Task URL" not in note


def test_a_body_exactly_at_the_bound_is_kept_and_one_byte_more_is_not():
    padding = MAX_STORED_BODY_BYTES - len('{"a":""}')
    exact = orjson.dumps({"a": "x" * padding}).decode()
    assert len(exact.encode()) == MAX_STORED_BODY_BYTES
    assert storable_body(exact) == exact
    over = orjson.dumps({"a": "x" * (padding + 1)}).decode()
    assert is_note(orjson.loads(storable_body(over)))


def test_a_note_is_told_apart_from_a_task():
    assert is_note({"error": "result_too_large", "message": "m"})
    assert not is_note({"error": "result_too_large", "Stage": "Done"})
    assert not is_note({"error": "invalid"})
    assert not is_note("result_too_large")


@pytest.mark.parametrize(
    ("http_status", "status"),
    [
        (200, RequestStatus.SUCCEEDED),
        (201, RequestStatus.SUCCEEDED),
        (399, RequestStatus.SUCCEEDED),
        (400, RequestStatus.FAILED),
        (404, RequestStatus.FAILED),
        (422, RequestStatus.FAILED),
        (500, RequestStatus.FAILED),
    ],
)
def test_a_result_succeeded_exactly_when_its_answer_is_not_an_error(http_status, status):
    assert Result(uuid.uuid4(), 1, http_status, "x", "{}").status is status


def test_an_idempotent_result_keeps_the_fingerprint_and_any_other_none():
    assert result_of(_request(), 201, "created", "{}").fingerprint == _request().fingerprint
    assert result_of(_request(idempotent=False), 201, "created", "{}").fingerprint is None


def test_a_retry_with_the_same_body_gets_the_stored_answer():
    stored = result_of(_request(), 201, "created", '{"Stage": "Done"}')
    assert answer_to(_request(), stored) is stored


def test_a_key_reused_with_another_body_is_refused_and_the_stored_answer_kept():
    stored = result_of(_request(), 201, "created", '{"Stage": "Done"}')
    refused = answer_to(_request(body='{"Company ID": "43"}'), stored)
    assert refused.http_status == 422
    assert orjson.loads(refused.body)["error"] == "idempotency_key_reused"
    assert refused.request_id == stored.request_id


def test_a_stored_answer_without_a_fingerprint_answers_any_body():
    stored = result_of(_request(idempotent=False), 201, "created", "{}")
    assert answer_to(_request(body="{}"), stored) is stored
