"""The wire contracts (ingest.messages): task batches and replies survive encode/decode exactly
and refuse anything else with DecodeError; `parse_payload` reads a body exactly, within the
number bounds, and refuses with MalformedBody only."""

from __future__ import annotations

import contextlib
import random
import uuid
from decimal import Decimal
from typing import Any

import orjson
import pytest

from ingest.errors import DecodeError, MalformedBody
from ingest.messages import (
    MAX_DEPTH,
    WIRE_VERSION,
    Operation,
    OutOfRangeNumber,
    Reply,
    TaskBatch,
    TaskRequest,
    decode_replies,
    delete_body,
    encode_replies,
    idempotent_request_id,
    may_hold_refused_values,
    parse_payload,
    unique_value_to_delete,
)
from ingest.values import MAX_NUMBER_DIGITS


def _request(**changes: Any) -> TaskRequest:
    fields: dict[str, Any] = {
        "id": uuid.UUID(int=7),
        "workflow_id": 3,
        "workflow_version": 2,
        "operation": Operation.UPDATE,
        "body": '{"Company ID": "42", "Contract Value": 10000.50}',
        "received_at": 1_700_000_000.25,
        "idempotent": True,
        "wants_reply": False,
    }
    return TaskRequest(**{**fields, **changes})


# --------------------------------------------------------------------------------- task batches


@pytest.mark.parametrize("operation", list(Operation))
@pytest.mark.parametrize(("idempotent", "wants_reply"), [(False, True), (True, False)])
def test_a_task_batch_decodes_to_the_batch_it_was_encoded_from(operation, idempotent, wants_reply):
    first = _request(operation=operation, idempotent=idempotent, wants_reply=wants_reply)
    second = _request(id=uuid.uuid4(), workflow_id=2**40, body='{"é": "☃ \\u00e9"}')
    batch = TaskBatch((first, second), reply_to="amq.gen-reply")
    assert TaskBatch.decode(batch.encode()) == batch


@pytest.mark.parametrize(
    "body",
    [
        '{"a": 1.50, "b": 1e400, "c": 123456789012345678901234567890}',
        '{ "spaced" :\n\t[ 1 , 2 ] }',
        '{"a": "\\ud800"}',  # left for the worker to refuse, but carried as written
    ],
)
def test_a_body_travels_as_the_clients_exact_text(body):
    batch = TaskBatch((_request(body=body),))
    assert TaskBatch.decode(batch.encode()).requests[0].body == body


@pytest.mark.parametrize("reply_to", [None, 5, ["q"]])
def test_a_batch_without_a_reply_queue_name_decodes_with_none(reply_to):
    raw = orjson.loads(TaskBatch((_request(),)).encode())
    raw["reply_to"] = reply_to
    assert TaskBatch.decode(orjson.dumps(raw)).reply_to is None


def test_a_request_from_before_the_flags_is_taken_as_idempotent_and_waited_for():
    """Missing flags take the safe side: look for an earlier result, and answer."""
    wire = _request(idempotent=False, wants_reply=False).to_wire()
    del wire["key"], wire["reply"]
    assert TaskRequest.from_wire(wire) == _request(idempotent=True, wants_reply=True)


@pytest.mark.parametrize("flag", [False, True])
def test_the_idempotent_flag_travels_under_the_wire_name_every_worker_reads(flag):
    """The wire is a frozen contract: workers of every version read the flag as `key`."""
    wire = _request(idempotent=flag).to_wire()
    assert wire["key"] is flag
    assert TaskRequest.from_wire(wire).idempotent is flag


@pytest.mark.parametrize("version", [None, 0, WIRE_VERSION + 1, str(WIRE_VERSION)])
def test_a_batch_of_another_wire_version_is_refused(version):
    raw = orjson.loads(TaskBatch((_request(),)).encode())
    assert raw["v"] == WIRE_VERSION
    raw["v"] = version
    with pytest.raises(DecodeError, match="wire version"):
        TaskBatch.decode(orjson.dumps(raw))


def _wire(**changes: Any) -> bytes:
    item = {**_request().to_wire(), **changes}
    return orjson.dumps({"v": WIRE_VERSION, "requests": [item]})


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"not json",
        b"\xff\xfe",
        b"[]",
        b'"text"',
        b"null",
        b'{"v": 1}',
        b'{"v": 1, "requests": []}',
        b'{"v": 1, "requests": 5}',
        b'{"v": 1, "requests": "ab"}',
        b'{"v": 1, "requests": [{}]}',
        b'{"v": 1, "requests": [[1]]}',
        _wire(id="not-hex"),
        _wire(id=uuid.UUID(int=1).hex[:-1]),
        _wire(op="merge"),
        _wire(wf="three"),
        _wire(wv=None),
        _wire(at="soon"),
    ],
)
def test_an_undecodable_batch_raises_decode_error_and_nothing_else(data):
    with pytest.raises(DecodeError):
        TaskBatch.decode(data)


def test_every_truncation_of_a_batch_is_refused():
    data = TaskBatch((_request(), _request(id=uuid.uuid4())), reply_to="r").encode()
    for end in range(len(data)):
        with pytest.raises(DecodeError):
            TaskBatch.decode(data[:end])


def test_random_damage_to_a_batch_raises_nothing_but_decode_error():
    data = TaskBatch((_request(),), reply_to="r").encode()
    rng = random.Random(10)
    for _ in range(3000):
        damaged = bytearray(data)
        for _ in range(rng.randint(1, 4)):
            damaged[rng.randrange(len(damaged))] = rng.randrange(256)
        with contextlib.suppress(DecodeError):
            TaskBatch.decode(bytes(damaged))


def test_a_fingerprint_is_the_operation_and_the_body_only():
    request = _request()
    same = _request(id=uuid.uuid4(), workflow_id=9, received_at=0.0, idempotent=False)
    assert request.fingerprint == same.fingerprint
    assert request.fingerprint != _request(operation=Operation.UPSERT).fingerprint
    assert request.fingerprint != _request(body=request.body + " ").fingerprint
    assert len(request.fingerprint) == 32


def test_an_idempotency_key_stands_for_one_request_id_per_workflow():
    assert idempotent_request_id(1, "k") == idempotent_request_id(1, "k")
    assert idempotent_request_id(1, "k") != idempotent_request_id(2, "k")
    assert idempotent_request_id(1, "k") != idempotent_request_id(1, "K")
    assert idempotent_request_id(1, "k").version == 5


# -------------------------------------------------------------------------------------- replies


def test_replies_decode_to_the_replies_they_were_encoded_from():
    replies = [
        Reply(uuid.uuid4(), 201, '{"Stage": "Done"}', bytes(range(32))),
        Reply(uuid.uuid4(), 422, '{"errors": {"a": ["is invalid"]}}'),
        Reply(uuid.uuid4(), 500, ""),
    ]
    assert decode_replies(encode_replies(replies)) == replies
    assert decode_replies(encode_replies([])) == []


def test_a_reply_without_a_fingerprint_has_an_empty_one():
    request_id = uuid.uuid4()
    data = orjson.dumps({"replies": [{"id": request_id.hex, "status": 200, "body": "{}"}]})
    assert decode_replies(data) == [Reply(request_id, 200, "{}", b"")]


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"[]",
        b"5",
        b'{"v": 1}',
        b'{"replies": [{"id": "x", "status": 200, "body": ""}]}',
        orjson.dumps({"replies": [{"id": uuid.UUID(int=1).hex, "status": "ok", "body": ""}]}),
        orjson.dumps({"replies": [{"id": uuid.UUID(int=1).hex, "status": 200}]}),
        orjson.dumps(
            {"replies": [{"id": uuid.UUID(int=1).hex, "status": 200, "body": "", "fp": "zz"}]}
        ),
        b'{"replies": ["text"]}',
    ],
)
def test_undecodable_replies_raise_decode_error(data):
    with pytest.raises(DecodeError):
        decode_replies(data)


# ---------------------------------------------------------------------- numbers in a task body


OUT_OF_RANGE_LITERALS = [
    "-1e-9999999999999999999",
    "1E+9999999999999999999",
    "1e1001",
    "1e-1001",
    "9" * (MAX_NUMBER_DIGITS + 1),
    "-" + "9" * 5000,
    "1." + "0" * MAX_NUMBER_DIGITS,
]


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


# Messages queued by an older version read the same: the wire keeps its names (`key` for the
# idempotent flag and for a delete's Unique ID value) whatever the code calls them.
def _wire(**members: object) -> bytes:
    request = {
        "id": uuid.uuid4().hex,
        "wf": 1,
        "wv": 1,
        "op": "upsert",
        "body": "{}",
        "at": 0.0,
        **members,
    }
    return orjson.dumps({"v": 1, "reply_to": None, "requests": [request]})


def test_a_message_of_an_older_version_reads_its_idempotent_flag() -> None:
    (old_idempotent,) = TaskBatch.decode(_wire(key=True)).requests
    (old_plain,) = TaskBatch.decode(_wire(key=False)).requests
    assert (old_idempotent.idempotent, old_plain.idempotent) == (True, False)


def test_a_delete_body_names_the_unique_value_as_older_workers_read_it() -> None:
    body = delete_body("42")
    assert orjson.loads(body) == {"key": "42"}  # what a worker of an older version reads
    assert unique_value_to_delete(parse_payload(body)) == "42"
    assert unique_value_to_delete({"key": ""}) is None
    assert unique_value_to_delete({}) is None
