"""The edge's body checks: what `inspect_values` refuses is refused whether or not the quick byte
scans let the edge skip walking the value."""

from __future__ import annotations

import pytest

from ingest.edge.bodies import EXACT_PARSE_ON_LOOP_BYTES, accept_json_object
from ingest.errors import MalformedBody
from ingest.messages import MAX_DEPTH


def _nested(levels: int) -> bytes:
    """An object whose deepest value sits `levels` deep (the object itself is level 1)."""
    return b'{"a":' + b"[" * (levels - 2) + b"1" + b"]" * (levels - 2) + b"}"


async def test_a_body_nested_to_the_limit_is_accepted_and_one_level_more_refused():
    assert await accept_json_object(_nested(MAX_DEPTH))
    with pytest.raises(MalformedBody, match="deeper"):
        await accept_json_object(_nested(MAX_DEPTH + 1))


@pytest.mark.parametrize(
    "body",
    [b'{"a": "x\\u0000"}', b'{"a\\u0000": 1}', b'{"a": ["\\u0000"]}', b'{"a": {"b": "\\u0000"}}'],
)
async def test_a_nul_anywhere_is_refused(body):
    with pytest.raises(MalformedBody, match="u0000"):
        await accept_json_object(body)


@pytest.mark.parametrize(
    "body",
    [
        b'{"a": "' + b"[" * 200 + b'"}',  # brackets in text: the value is walked, and fits
        b'{"a": "\\\\u0000"}',  # an escaped backslash, then the letters u0000: no NUL
        b'{"Company ID": "42", "Contract Value": 10000.50, "Stage": "In Progress"}',
    ],
)
async def test_bodies_that_only_look_suspect_are_accepted(body):
    assert await accept_json_object(body) == body.decode()


#: Numbers orjson refuses (beyond a double), so the exact parser reads the body.
_BEYOND_ORJSON = b"1e400"


@pytest.mark.parametrize("padding", [0, EXACT_PARSE_ON_LOOP_BYTES])
async def test_bodies_orjson_refuses_are_read_exactly_on_the_loop_or_on_a_thread(padding):
    filler = b"1.5," * (padding // 4)
    body = b'{"zz": [' + filler + _BEYOND_ORJSON + b"]}"
    assert await accept_json_object(body) == body.decode()
    too_deep = b'{"a": ' + b"[" * 70 + filler + _BEYOND_ORJSON + b"]" * 70 + b"}"
    with pytest.raises(MalformedBody, match="deeper"):
        await accept_json_object(too_deep)
