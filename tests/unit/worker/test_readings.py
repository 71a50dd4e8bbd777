"""What a task request asks, read (worker.readings): one reading for a task request, one per item
for a batch import, each item read as the body of an upsert of its own."""

from __future__ import annotations

import uuid

import orjson

from ingest.batches import ITEM_NOT_AN_OBJECT
from ingest.messages import Operation, TaskRequest, delete_body
from ingest.workflows import Workflow, WorkflowDefinition
from tests.conftest import SALES, SEED_REQUEST
from worker.readings import NOT_AN_OBJECT, read_request
from worker.validation import TaskValidator

VALIDATOR = TaskValidator(
    Workflow(id=1, public_id="w", version=1, definition=WorkflowDefinition.parse(SALES))
)


def _request(operation: Operation, body: str) -> TaskRequest:
    return TaskRequest(uuid.uuid4(), 1, 1, operation, body, 0.0)


def test_a_task_request_is_one_reading_of_its_own_operation() -> None:
    read = read_request(_request(Operation.UPDATE, orjson.dumps(SEED_REQUEST).decode()), VALIDATOR)
    assert not read.batch
    (reading,) = read.readings
    assert (reading.operation, reading.unique_value) == (Operation.UPDATE, "42")
    assert reading.parsed is not None
    assert not reading.parsed.errors


def test_a_delete_names_its_task_without_validation() -> None:
    (reading,) = read_request(_request(Operation.DELETE, delete_body("42")), VALIDATOR).readings
    assert (reading.parsed, reading.unique_value) == (None, "42")


def test_a_batch_is_one_upsert_reading_per_item_in_order() -> None:
    items = [SEED_REQUEST, 7, {**SEED_REQUEST, "Company ID": "43", "Stage": "Shipped"}]
    read = read_request(_request(Operation.BATCH, orjson.dumps(items).decode()), VALIDATOR)
    assert read.batch
    first, second, third = read.readings
    assert {r.operation for r in read.readings} == {Operation.UPSERT}
    assert first.unique_value == "42"
    assert (second.payload, second.problem) == (None, ITEM_NOT_AN_OBJECT)
    # An item with an invalid field still names its task, as a task request does.
    assert third.unique_value == "43"
    assert third.parsed is not None
    assert "Stage" in third.parsed.errors


def test_a_body_that_is_no_object_is_one_malformed_reading() -> None:
    (reading,) = read_request(_request(Operation.UPSERT, "[1]"), VALIDATOR).readings
    assert (reading.payload, reading.problem) == (None, NOT_AN_OBJECT)


def test_a_batch_text_that_is_no_array_is_answered_as_one_malformed_body() -> None:
    read = read_request(_request(Operation.BATCH, "{}"), VALIDATOR)
    assert not read.batch
    (reading,) = read.readings
    assert reading.payload is None
    assert "JSON array" in reading.problem
