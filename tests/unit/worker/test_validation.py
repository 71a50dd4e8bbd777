"""Task validation (worker.validation): a payload becomes the values to store, or the Rails-style
422 errors, each key its own; the answer stays small whatever the body holds."""

from __future__ import annotations

import time
from decimal import Decimal
from typing import Any

import orjson
import pytest

from ingest.messages import parse_payload
from ingest.values import INVALID, MAX_UNIQUE_VALUE_BYTES, NOT_A_MEMBER, NOT_A_NUMBER, NOT_IN_LIST
from ingest.workflows import Workflow, WorkflowDefinition
from tests.conftest import SALES
from worker.validation import (
    NOT_A_FIELD,
    TaskValidator,
    ValidatorCache,
    is_blank,
)


def _workflow(definition: dict[str, Any]) -> Workflow:
    return Workflow(id=1, public_id="w", version=1, definition=WorkflowDefinition.parse(definition))


EVERY_KIND = {
    "name": "Kinds",
    "fields": [
        {"name": "Code", "type": "text"},
        {"name": "Amount", "type": "number"},
        {"name": "Notes", "type": "longText"},
    ],
    "unique_id": "Code",
}


@pytest.mark.parametrize(
    ("field", "message"),
    [("Amount", NOT_A_NUMBER), ("Notes", INVALID), ("Code", INVALID), ("Elsewhere", NOT_A_FIELD)],
)
@pytest.mark.parametrize("literal", ["-1e-9999999999999999999", "1E+9999999999999999999"])
def test_an_out_of_range_number_anywhere_is_its_keys_own_422(field, message, literal):
    validator = TaskValidator(_workflow(EVERY_KIND))
    payload = parse_payload(f'{{"Code": "k", "{field}": {literal}}}')
    assert validator.parse(payload).errors == {field: [message]}


@pytest.mark.parametrize(
    ("key", "fits"),
    [
        ("k" * MAX_UNIQUE_VALUE_BYTES, True),
        ("k" * (MAX_UNIQUE_VALUE_BYTES + 1), False),
        ("é" * (MAX_UNIQUE_VALUE_BYTES // 2), True),
        ("€" * (MAX_UNIQUE_VALUE_BYTES // 3 + 1), False),
        ("k" * 2700, False),
    ],
)
def test_a_unique_id_is_invalid_when_its_utf8_bytes_exceed_the_key_bound(key, fits):
    validator = TaskValidator(_workflow(EVERY_KIND))
    parsed = validator.parse({"Code": key})
    assert parsed.errors == ({} if fits else {"Code": [INVALID]})
    assert (validator.unique_value({"Code": key}) is not None) is fits


def test_a_422_names_at_most_twenty_unknown_keys_and_counts_the_rest():
    validator = TaskValidator(_workflow(EVERY_KIND))
    payload = {"Code": "k", "Amount": "many", **{f"key {n}": n for n in range(60_000)}}
    started = time.monotonic()
    errors = validator.parse(payload).errors
    assert time.monotonic() - started < 2
    assert errors["Amount"] == [NOT_A_NUMBER]
    assert [name for name in errors if name.startswith("key ")] == [f"key {n}" for n in range(20)]
    assert errors["base"] == ["and 59980 more keys are not fields of this workflow"]
    assert len(orjson.dumps({"errors": errors})) < 2000


def test_long_unknown_keys_are_cut_short_in_the_answer():
    validator = TaskValidator(_workflow(EVERY_KIND))
    errors = validator.parse({"x" * 5000: 1, **{f"k{n}": 1 for n in range(20)}}).errors
    assert errors["x" * 99 + "…"] == [NOT_A_FIELD]
    assert errors["base"] == ["and 1 more key is not a field of this workflow"]


def _sales(version: int = 1, workflow_id: int = 1) -> Workflow:
    definition = WorkflowDefinition.parse(SALES)
    return Workflow(id=workflow_id, public_id="w", version=version, definition=definition)


def test_a_valid_payload_gives_each_supplied_value_by_field_id():
    workflow = _sales()
    ids = {spec.name: spec.id for spec in workflow.definition.fields}
    parsed = TaskValidator(workflow).parse(
        parse_payload(
            '{"Company ID": 42, "Contract Value": "10000.50", "International?": "TRUE",'
            ' "Expected Close Date": null, "Stage": "Done", "Assigned To": "USER@example.com"}'
        )
    )
    assert parsed.errors == {}
    assert parsed.values == {
        ids["Company ID"]: "42",
        ids["Contract Value"]: Decimal("10000.50"),
        ids["International?"]: True,
        ids["Expected Close Date"]: None,
    }
    assert parsed.supplied == set(parsed.values)  # a null is supplied: it clears the value
    assert (parsed.stage, parsed.stage_supplied) == ("Done", True)
    assert (parsed.assigned_to, parsed.assigned_to_supplied) == ("user@example.com", True)


def test_built_ins_left_out_are_not_supplied():
    parsed = TaskValidator(_sales()).parse({"Company ID": "1"})
    assert not parsed.stage_supplied
    assert not parsed.assigned_to_supplied
    assert parsed.stage is None


def test_every_wrong_key_gets_its_own_message_at_once():
    errors = (
        TaskValidator(_sales())
        .parse(
            {
                "Number of Employees": "many",
                "Stage": "Lost",
                "Assigned To": "eve@example.com",
                "Expected Close Date": "31/01/2020",
                "Colour": "red",
            }
        )
        .errors
    )
    assert errors == {
        "Number of Employees": [NOT_A_NUMBER],
        "Stage": [NOT_IN_LIST],
        "Assigned To": [NOT_A_MEMBER],
        "Expected Close Date": [INVALID],
        "Colour": [NOT_A_FIELD],
    }


def test_a_null_stage_is_refused_but_a_null_assignee_unassigns():
    validator = TaskValidator(_sales())
    assert validator.parse({"Stage": None}).errors == {"Stage": [NOT_IN_LIST]}
    parsed = validator.parse({"Assigned To": None})
    assert parsed.errors == {}
    assert (parsed.assigned_to, parsed.assigned_to_supplied) == (None, True)


@pytest.mark.parametrize(
    ("payload", "key"),
    [
        ({"Company ID": "42"}, "42"),
        ({"Company ID": 42}, "42"),
        ({"Company ID": " "}, None),
        ({"Company ID": None}, None),
        ({"Company ID": True}, None),
        ({"Company ID": "k" * (MAX_UNIQUE_VALUE_BYTES + 1)}, None),
        ({"Company Name": "Acme"}, None),
    ],
)
def test_the_unique_id_of_a_payload_is_its_canonical_text_or_none(payload, key):
    assert TaskValidator(_sales()).unique_value(payload) == key


def test_a_numeric_unique_id_has_one_text_however_it_is_written():
    definition = {"name": "n", "fields": [{"name": "N", "type": "number"}], "unique_id": "N"}
    validator = TaskValidator(_workflow(definition))
    keys = {validator.unique_value(parse_payload(f'{{"N": {n}}}')) for n in ("42", "42.0", "4.2e1")}
    assert keys == {"42"}


@pytest.mark.parametrize(
    ("value", "blank"),
    [
        (None, True),
        ("", True),
        (" \t\n", True),
        ([], True),
        ("x", False),
        (0, False),
        (False, False),
        ([""], False),
        ({}, False),
    ],
)
def test_blank_is_rails_blank(value, blank):
    assert is_blank(value) is blank


def test_the_cache_compiles_once_per_version_and_forgets_the_oldest():
    cache = ValidatorCache(size=2)
    first = cache.get(_sales(version=1))
    assert cache.get(_sales(version=1)) is first
    second = cache.get(_sales(version=2))
    assert second is not first
    cache.get(_sales(version=1, workflow_id=2))  # a third: the oldest is forgotten
    assert cache.get(_sales(version=1)) is not first
    assert cache.get(_sales(version=1, workflow_id=2)) is not None
