"""Batch import's pure parts (ingest.batches): what the edge accepts as a batch, how a worker reads
its items, and the bounded answer; and the batch's place on the wire."""

from __future__ import annotations

import json
import uuid
from decimal import Decimal
from typing import Any

import orjson
import pytest

from ingest import batches
from ingest.batches import (
    EMPTY,
    ITEM_NOT_AN_OBJECT,
    NOT_AN_ARRAY,
    batch_body,
    check_items,
    read_items,
)
from ingest.errors import BodyTooLarge, MalformedBody, TooManyItems
from ingest.messages import MAX_DEPTH, Operation, OutOfRangeNumber, TaskBatch, TaskRequest
from ingest.results import is_note

TASK = {"Company ID": "42", "Company Name": "Acme Corp"}


def _nested(levels: int) -> Any:
    """An object whose values nest `levels` deep, counted as `inspect_values` counts them."""
    value: Any = 1
    for _ in range(levels - 2):
        value = [value]
    return {"Deep": value}


# ------------------------------------------------------------------------------------ the edge


def _check(value: Any, max_items: int, strict_strings: bool = False) -> int:
    """`check_items` of `value` sent as JSON text (non-ASCII and controls as `\\u` escapes)."""
    return check_items(value, json.dumps(value), max_items, strict_strings)


def test_an_array_of_items_is_accepted_with_its_count() -> None:
    assert _check([TASK, 3, "text", None, [TASK]], 5) == 5


@pytest.mark.parametrize(
    ("value", "message"),
    [({"Company ID": "42"}, NOT_AN_ARRAY), ("[]", NOT_AN_ARRAY), (7, NOT_AN_ARRAY), ([], EMPTY)],
)
def test_a_body_that_is_no_array_of_items_is_refused_whole(value: Any, message: str) -> None:
    with pytest.raises(MalformedBody, match=message):
        _check(value, 10)


def test_more_items_than_the_limit_is_too_large_and_says_how_many() -> None:
    with pytest.raises(TooManyItems, match="at most 3 items; this one holds 4") as refused:
        _check([TASK] * 4, 3)
    assert isinstance(refused.value, BodyTooLarge)  # answered 413, as a body over its limit


def test_an_item_nested_too_deep_refuses_the_batch_naming_it() -> None:
    """The worker's parser could not read it: the only item that refuses its whole batch."""
    with pytest.raises(MalformedBody, match=r"^item 1: .*nesting deeper than 64"):
        _check([TASK, _nested(MAX_DEPTH + 1), TASK], 10)


def test_an_item_nested_to_the_limit_is_accepted() -> None:
    assert _check([_nested(MAX_DEPTH)], 10) == 1


@pytest.mark.parametrize("item", [{"Company Name": "a\x00b"}, "\x00", {"Company Name": "\ud800"}])
def test_nul_and_lone_surrogates_are_left_to_their_items_own_400(item: Any) -> None:
    assert _check([TASK, item, TASK], 10, strict_strings=True) == 3


# ---------------------------------------------------------------------------------- the worker


def test_items_are_read_in_order_each_a_task_body_or_why_not() -> None:
    items = read_items(orjson.dumps([TASK, 3, {"Company Name": "a\x00b"}, {"n": 1.5}]).decode())
    assert items[0] == TASK
    assert isinstance(items[1], MalformedBody)
    assert str(items[1]) == ITEM_NOT_AN_OBJECT
    assert isinstance(items[2], MalformedBody)
    assert "\\u0000" in str(items[2])
    assert items[3] == {"n": Decimal("1.5")}  # numbers exactly, as in a single body


def test_numbers_beyond_the_bounds_stay_in_their_item() -> None:
    (item,) = read_items('[{"n": 1e999999}]')
    assert isinstance(item, dict)
    assert isinstance(item["n"], OutOfRangeNumber)


@pytest.mark.parametrize("text", ["{}", "[]", "[1", "7", "[" * 5000 + "]" * 5000])
def test_a_text_that_is_no_array_of_items_is_one_malformed_body(text: str) -> None:
    with pytest.raises(MalformedBody):
        read_items(text)


# ---------------------------------------------------------------------------------- the answer


def test_the_answer_holds_each_items_status_and_body_in_order() -> None:
    answers = [(201, orjson.dumps(TASK).decode()), (422, '{"errors":{"x":["is invalid"]}}')]
    assert orjson.loads(batch_body(answers)) == {
        "results": [
            {"status": 201, "body": TASK},
            {"status": 422, "body": {"errors": {"x": ["is invalid"]}}},
        ]
    }


def test_past_the_bound_only_bodies_over_their_share_become_notes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(batches, "MAX_BATCH_BODY_BYTES", 3000)
    small = orjson.dumps({**TASK, "Task URL": "http://x/t/1"}).decode()
    large = orjson.dumps({**TASK, "Notes": "é" * 2000, "Task URL": "http://x/t/2"}).decode()
    results = orjson.loads(batch_body([(201, small), (200, large), (201, small)]))["results"]
    assert [r["status"] for r in results] == [201, 200, 201]
    assert results[0]["body"] == results[2]["body"] == orjson.loads(small)
    assert is_note(results[1]["body"])
    assert results[1]["body"]["Task URL"] == "http://x/t/2"


def test_within_the_bound_every_body_is_whole(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(batches, "MAX_BATCH_BODY_BYTES", 3000)
    large = orjson.dumps({**TASK, "Notes": "x" * 2500}).decode()
    (result,) = orjson.loads(batch_body([(201, large)]))["results"]
    assert result["body"] == orjson.loads(large)


# ------------------------------------------------------------------------------------ the wire


def test_a_batch_request_keeps_its_operation_and_item_count_on_the_wire() -> None:
    request = TaskRequest(uuid.uuid4(), 1, 1, Operation.BATCH, "[{}, {}]", 1.0, items=2)
    (decoded,) = TaskBatch.decode(TaskBatch((request,)).encode()).requests
    assert decoded == request
    single = TaskRequest(uuid.uuid4(), 1, 1, Operation.UPSERT, "{}", 1.0)
    assert "n" not in single.to_wire()  # the wire of a single request is as it was
