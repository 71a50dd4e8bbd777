"""Pure unit tests (no services): the number bounds, `parse_payload`, the value converters, the
Unique ID and 422 size bounds, stored-result bounds and the bounds of workflow definitions."""

from __future__ import annotations

import contextlib
import random
import time
from decimal import Decimal
from typing import Any

import orjson
import pytest
from pydantic_core import PydanticCustomError

from ingest.errors import DefinitionError, MalformedBody
from ingest.fields import (
    INVALID,
    MAX_KEY_BYTES,
    MAX_NUMBER_DIGITS,
    MAX_NUMBER_EXPONENT,
    NOT_A_NUMBER,
    canonical_number,
    is_email,
    key_fits,
    read_number,
    to_datetime,
    to_email,
    to_number,
    to_phone,
    to_url,
)
from ingest.messages import MAX_DEPTH, OutOfRangeNumber, may_hold_refused_values, parse_payload
from ingest.results import MAX_STORED_BODY_BYTES, storable_body
from ingest.workflows import (
    MAX_FIELD_ID,
    MAX_OPTION_CHARS,
    MAX_STAGE_CHARS,
    Workflow,
    WorkflowDefinition,
)
from worker.validation import (
    NOT_A_FIELD,
    TaskValidator,
)

OUT_OF_RANGE_LITERALS = [
    "-1e-9999999999999999999",
    "1E+9999999999999999999",
    "1e1001",
    "1e-1001",
    "9" * (MAX_NUMBER_DIGITS + 1),
    "-" + "9" * 5000,
    "1." + "0" * MAX_NUMBER_DIGITS,
]


def _rejects(convert: Any, value: Any) -> str:
    with pytest.raises(PydanticCustomError) as caught:
        convert(value)
    return str(caught.value)


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


# ------------------------------------------------------------------------------------ numbers


@pytest.mark.parametrize("literal", OUT_OF_RANGE_LITERALS)
def test_a_number_literal_beyond_the_bounds_is_parsed_as_out_of_range(literal):
    payload = parse_payload(f'{{"a": {literal}, "b": [{literal}]}}')
    assert payload["a"] == OutOfRangeNumber(literal)
    assert payload["b"] == [OutOfRangeNumber(literal)]


@pytest.mark.parametrize(
    ("literal", "number"),
    [
        ("1e1000", Decimal("1E+1000")),
        ("-1e-1000", Decimal("-1E-1000")),
        ("0.0", Decimal("0.0")),
        ("9" * MAX_NUMBER_DIGITS, int("9" * MAX_NUMBER_DIGITS)),
        ("-12", -12),
    ],
)
def test_a_number_literal_within_the_bounds_is_parsed_exactly(literal, number):
    assert parse_payload(f'{{"a": {literal}}}')["a"] == number


@pytest.mark.parametrize(
    "text",
    [
        "1e-9999999999999999999",
        "1E+9999999999999999999",
        "1e1001",
        "Infinity",
        "NaN",
        "sNaN",
        "١٢",
        "",
        "1" * 1001,
    ],
)
def test_number_text_beyond_the_bounds_or_not_a_number_is_not_a_number(text):
    assert read_number(text) is None
    assert _rejects(to_number, text) == NOT_A_NUMBER


@pytest.mark.parametrize(
    "value",
    [
        OutOfRangeNumber("1e-9999999999999999999"),
        True,
        [1],
        {"a": 1},
        10 ** (MAX_NUMBER_DIGITS + 1),
    ],
)
def test_values_that_are_not_numbers_within_the_bounds_are_not_a_number(value):
    assert _rejects(to_number, value) == NOT_A_NUMBER


def test_the_widest_numbers_within_the_bounds_fit_a_unique_id_key():
    widest = [
        Decimal(f"-{'9' * MAX_NUMBER_DIGITS}E+{MAX_NUMBER_EXPONENT}"),
        Decimal(f"-{'9' * MAX_NUMBER_DIGITS}E-{MAX_NUMBER_EXPONENT}"),
    ]
    for number in widest:
        assert to_number(number) == number
        assert key_fits(canonical_number(number))


# -------------------------------------------------------------------------------- parse_payload


HOSTILE_BODIES: list[str | bytes] = [
    b"",
    b"\xff\xfe{}",
    b"\xef\xbb\xbf{}",
    "[1, 2]",
    '"text"',
    '{"a": NaN}',
    '{"a": -Infinity}',
    '{"a": 1e}',
    '{"a": "\\u0000"}',
    '{"\\u0000": 1}',
    '{"a": "\\ud800"}',
    '{"a":' * 65 + "1" + "}" * 65,
    "[" * 100_000 + "]" * 100_000,
    '{"a": ' + "[" * 100_000 + "]" * 100_000 + "}",
]


@pytest.mark.parametrize("body", HOSTILE_BODIES)
def test_parse_payload_refuses_what_cannot_be_stored_with_malformed_body_only(body):
    with pytest.raises(MalformedBody):
        parse_payload(body)


def test_parse_payload_raises_nothing_but_malformed_body_for_any_bytes():
    rng = random.Random(8)
    pieces = [
        b"{",
        b"}",
        b"[",
        b"]",
        b'"a"',
        b":",
        b",",
        b"-",
        b"1",
        b"e",
        b"E",
        b"+",
        b".",
        b"9" * 30,
        b"e-99999999999999999999",
        b"\\u",
        b"d800",
        b"\xff",
        b"null",
        b" ",
    ]
    for _ in range(5000):
        body = b"".join(rng.choice(pieces) for _ in range(rng.randint(1, 12)))
        with contextlib.suppress(MalformedBody):
            parse_payload(body)


@pytest.mark.parametrize(
    "body",
    [
        b'{"Company ID": "x", "Contract Value": -1e-9999999999999999999}',
        b'{"a": 1.' + b"0" * 5000 + b"1}",
        b'{"a": 1e-400, "b": 123456789012345678901234567890}',
        b'{"a": {"b": [1, 2.5, -0.0, 1E+2]}}',
    ],
)
def test_every_body_orjson_reads_the_worker_parser_reads(body):
    orjson.loads(body)
    assert isinstance(parse_payload(body), dict)


# ------------------------------------------------------------------------------ the validator


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
        ("k" * MAX_KEY_BYTES, True),
        ("k" * (MAX_KEY_BYTES + 1), False),
        ("é" * (MAX_KEY_BYTES // 2), True),
        ("€" * (MAX_KEY_BYTES // 3 + 1), False),
        ("k" * 2700, False),
    ],
)
def test_a_unique_id_is_invalid_when_its_utf8_bytes_exceed_the_key_bound(key, fits):
    validator = TaskValidator(_workflow(EVERY_KIND))
    parsed = validator.parse({"Code": key})
    assert parsed.errors == ({} if fits else {"Code": [INVALID]})
    assert (validator.unique_key({"Code": key}) is not None) is fits


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


# ------------------------------------------------------------------------------ the converters


@pytest.mark.parametrize(
    ("value", "valid"),
    [
        ("user@example.com", True),
        ("ü@exämple.com", True),
        ("a\n@b.c", False),
        ("a@b..c", False),
        ("a b@c.de", False),
        ("user@example.com ", False),
        ("bob", False),
        ("a@localhost", False),
        ("a@\ud800.com", False),
        ("a@" + "x" * 320 + ".com", False),
    ],
)
def test_emails_are_checked_by_email_validator_without_dns(value, valid):
    assert is_email(value) is valid
    if valid:
        assert to_email(value) == value
    else:
        assert _rejects(to_email, value) == INVALID


@pytest.mark.parametrize(
    ("value", "valid"),
    [
        ("http://example.com", True),
        ("https://example.com/path?q=1#f", True),
        ("HTTPS://EXAMPLE.COM", True),
        ("http://[::1]:8080/x", True),
        ("https://例え.jp/パス", True),
        ("http:example.com", False),
        ("http://exa\nmple.com", False),
        ("http://exa mple.com", False),
        (" http://example.com", False),
        ("ftp://example.com", False),
        ("http://", False),
        ("http://example.com:99999", False),
        ("https://example.com/" + "a" * 2048, False),
    ],
)
def test_urls_are_absolute_http_with_a_host_and_no_whitespace(value, valid):
    if valid:
        assert to_url(value) == value
    else:
        assert _rejects(to_url, value) == INVALID


def test_url_checks_take_linear_time():
    values = ["http://example.com/" + "a/" * 1000, "http://" + "a" * 2040, "http://a" + " " * 2000]
    started = time.monotonic()
    for _ in range(100):
        for value in values:
            with contextlib.suppress(PydanticCustomError):
                to_url(value)
    assert time.monotonic() - started < 0.5  # the old pattern took 45 ms for one such value


@pytest.mark.parametrize(
    ("value", "valid"),
    [
        ("+1 555 0100", True),
        ("555-0100", True),
        ("(555) 010-0100", True),
        ("+44 20 7946 0958", True),
        ("+1.555.010.0100 ext. 12", True),
        ("555 0100 x9", True),
        ("555 0100 #123456", True),
        ("123456789012345", True),
        ("abc", False),
        ("12345", False),
        ("1234567890123456", False),
        ("+1-800-FLOWERS", False),
        ("++15550100", False),
        ("5550100-", False),
        ("555 0100 ext", False),
        ("555\n0100", False),
        ("1" * 70, False),
        (15550100, False),
    ],
)
def test_phones_follow_the_documented_rule(value, valid):
    if valid:
        assert to_phone(value) == value
    else:
        assert _rejects(to_phone, value) == INVALID


@pytest.mark.parametrize(
    ("value", "valid"),
    [
        ("2020-01-31T09:30:00Z", True),
        ("2020-01-31t09:30:00z", True),
        ("2020-01-31T09:30:00.123456+02:00", True),
        ("2020-01-31T09:30:00-00:00", True),
        ("2020-W01-1T00:00Z", False),
        ("2020-031T09:30:00Z", False),
        ("20200131T093000Z", False),
        ("2020-01-31T09:30:00.1234567Z", False),
        ("2020-01-31T09:30Z", False),
        ("2020-01-31T09:30:00", False),
        ("2020-01-31 09:30:00Z", False),
        ("2020-01-31T09:30:00+0200", False),
        ("2020-02-30T00:00:00Z", False),
        ("2020-01-31T09:30:60Z", False),
        ("0001-01-01T00:00:00+05:00", False),
    ],
)
def test_datetimes_are_rfc3339_with_an_offset_and_at_most_microseconds(value, valid):
    if valid:
        moment = to_datetime(value)
        assert moment.utcoffset() is not None
    else:
        assert _rejects(to_datetime, value) == INVALID


def test_a_microsecond_fraction_is_kept_exactly():
    assert to_datetime("2020-01-31T09:30:00.000001Z").microsecond == 1


# --------------------------------------------------------------------------- stored results


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


# ---------------------------------------------------------------------- definition bounds


def _problems(definition: dict[str, Any]) -> str:
    with pytest.raises(DefinitionError) as caught:
        WorkflowDefinition.parse(definition)
    return " | ".join(caught.value.problems)


def test_a_given_field_id_that_pushes_numbering_past_the_bound_is_refused():
    fields = [{"name": "a", "type": "text", "id": MAX_FIELD_ID}, {"name": "b", "type": "text"}]
    assert "field 'b' has id 100001, beyond the largest field id" in _problems(
        {"name": "x", "fields": fields}
    )


def test_the_largest_field_id_itself_is_accepted():
    fields = [{"name": "b", "type": "text"}, {"name": "a", "type": "text", "id": MAX_FIELD_ID}]
    definition = WorkflowDefinition.parse({"name": "x", "fields": fields[1:]})
    assert [spec.id for spec in definition.fields] == [MAX_FIELD_ID]


@pytest.mark.parametrize(
    ("definition", "problem"),
    [
        ({"stages": ["s" * (MAX_STAGE_CHARS + 1)]}, "is longer than 200 characters"),
        ({"stages": [f"s{n}" for n in range(101)]}, "'stages' lists 101; at most 100"),
        ({"members": [f"m{n}@example.com" for n in range(1001)]}, "'members' lists 1001"),
        ({"members": ["a\n@b.c"]}, "is not an email address"),
        ({"members": ["a@b..c"]}, "is not an email address"),
        ({"members": [""]}, "member '' is not an email address"),
        (
            {"fields": [{"name": "R", "type": "singleSelect", "options": ["o" * 501]}]},
            f"is longer than {MAX_OPTION_CHARS} characters",
        ),
        (
            {
                "fields": [
                    {"name": "R", "type": "singleSelect", "options": [str(n) for n in range(1001)]}
                ]
            },
            "field 'R' lists 1001 options; at most 1000",
        ),
        ({"fields": [{"name": "R", "type": "singleSelect", "options": [" "]}]}, "is blank"),
        ({"stages": ["a\x00b"]}, "contains a NUL character"),
        ({"fields": [{"name": "a\x00", "type": "text"}]}, "cannot contain NUL"),
        ({"fields": [{"name": "a", "type": "text", "id": 2**31}]}, "less than or equal to"),
    ],
)
def test_new_definitions_keep_count_and_length_bounds(definition, problem):
    assert problem in _problems({"name": "x", **definition})


def test_a_stored_definition_beyond_todays_bounds_still_loads():
    stored = {
        "name": "Old",
        "fields": [{"name": "a", "type": "text", "id": MAX_FIELD_ID + 1}],
        "stages": ["s" * 3200],
        "members": ["bob@localhost"],
    }
    definition = WorkflowDefinition.model_validate(stored)
    assert definition.fields[0].id == MAX_FIELD_ID + 1
    with pytest.raises(DefinitionError):
        WorkflowDefinition.parse(stored)


def test_what_parse_accepts_is_what_is_stored_and_reads_back():
    definition = WorkflowDefinition.parse(
        {
            "name": "x",
            "fields": [{"name": "a", "type": "text", "id": 7}, {"name": "b", "type": "number"}],
        }
    )
    stored = definition.model_dump(mode="json")
    assert WorkflowDefinition.model_validate(stored) == definition
    assert [spec.id for spec in definition.fields] == [7, 8]


@pytest.mark.parametrize(
    "text",
    [
        '{"a": "lone \ud800 surrogate, raw in a str"}',
        '{"a": "escaped \\ud800 surrogate"}',
        '{"a": "nul \\u0000 inside"}',
        '{"a": ' + "[" * 70 + "]" * 70 + "}",
    ],
)
def test_what_the_text_scan_lets_through_the_walk_still_refuses(text):
    with pytest.raises(MalformedBody):
        parse_payload(text)


def test_a_plain_body_skips_the_walk_and_keeps_its_values():
    body = '{"a": "naïve ☃", "b": [1, {"c": 2.50}], "d": "a \\\\ backslash"}'
    assert not may_hold_refused_values(body)
    assert parse_payload(body) == {
        "a": "naïve ☃",
        "b": [1, {"c": Decimal("2.50")}],
        "d": "a \\ backslash",
    }


def _nested(levels: int, escape: bool) -> str:
    """A body whose innermost value lies `levels` deep (the top object is level 1)."""
    inner = '"\\u00e9"' if escape else "1"
    return '{"a": ' + "[" * (levels - 2) + inner + "]" * (levels - 2) + "}"


@pytest.mark.parametrize("escape", [False, True])
def test_the_text_scan_and_the_walk_agree_at_the_depth_limit(escape):
    assert parse_payload(_nested(MAX_DEPTH, escape))
    with pytest.raises(MalformedBody):
        parse_payload(_nested(MAX_DEPTH + 1, escape))
