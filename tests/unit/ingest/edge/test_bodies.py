"""The edge's body checks (ingest.edge.bodies): JSON content types only, codings aiohttp decodes
only, one JSON object only; what `inspect_values` refuses is refused whether or not the quick
byte scans let the edge skip walking the value."""

from __future__ import annotations

import pytest
from aiohttp.test_utils import make_mocked_request
from multidict import CIMultiDict

from ingest.edge.bodies import (
    EXACT_PARSE_ON_LOOP_BYTES,
    accept_json_object,
    check_content_encoding,
    check_content_type,
)
from ingest.errors import MalformedBody, UnsupportedContentEncoding, UnsupportedMediaType
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


def _request(*headers: tuple[str, str]):
    return make_mocked_request("POST", "/", headers=CIMultiDict(headers))


@pytest.mark.parametrize(
    "content_type",
    [
        None,
        "application/json",
        "application/json; charset=utf-8",
        "Application/JSON; Charset=UTF8",
        "application/vnd.api+json",
        "application/merge-patch+json; charset=utf-8",
    ],
)
def test_json_content_types_in_utf8_are_accepted(content_type):
    headers = [] if content_type is None else [("Content-Type", content_type)]
    check_content_type(_request(*headers))


@pytest.mark.parametrize(
    "content_type",
    [
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        "application/jsonx",
        "text/json+json",
        "application/json; charset=latin-1",
        "application/json; charset=utf-16",
    ],
)
def test_other_content_types_or_charsets_are_refused(content_type):
    with pytest.raises(UnsupportedMediaType):
        check_content_type(_request(("Content-Type", content_type)))


@pytest.mark.parametrize("coding", ["", "identity", "gzip", "GZIP", " deflate\t"])
def test_a_body_in_a_coding_aiohttp_decodes_is_accepted(coding):
    check_content_encoding(_request(("Content-Encoding", coding)))
    check_content_encoding(_request())


@pytest.mark.parametrize(
    "codings",
    [["br"], ["x-gzip"], ["gzip, deflate"], ["gzip", "gzip"], ["gzİp"], ["compress"]],
)
def test_a_body_in_any_other_coding_is_refused(codings):
    with pytest.raises(UnsupportedContentEncoding):
        check_content_encoding(_request(*(("Content-Encoding", c) for c in codings)))


@pytest.mark.parametrize("body", [b"", b"  \r\n\t", b"[]", b'"x"', b"1", b"null", b"{", b"\xff{}"])
async def test_anything_but_one_json_object_is_refused(body):
    with pytest.raises(MalformedBody):
        await accept_json_object(body)
