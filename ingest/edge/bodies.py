"""Reading request bodies at the edge within limits, and accepting only JSON objects."""

from __future__ import annotations

import asyncio

import orjson
from aiohttp import hdrs, web
from aiohttp.web_protocol import RequestPayloadError

from ingest.edge.inflight import charge_body
from ingest.edge.keys import BODY
from ingest.errors import (
    BodyTimeout,
    BodyTooLarge,
    ClientDisconnected,
    MalformedBody,
    UnreadableBody,
    UnsupportedContentEncoding,
    UnsupportedMediaType,
)
from ingest.messages import inspect_values, may_hold_refused_values, parse_payload
from ingest.settings import Settings

_CHUNK = 64 * 1024
#: The usual spellings of a JSON content type, accepted without parsing the header.
_PLAIN_JSON = frozenset(
    ["application/json", "application/json; charset=utf-8", "application/json;charset=utf-8"]
)
#: What a client is told when its body could not be read. Never aiohttp's own message: it can
#: quote the request's bytes.
_UNREADABLE = (
    "request body could not be read: its framing is broken or its bytes do not decode from its "
    "Content-Encoding"
)


def check_content_type(request: web.Request) -> None:
    """JSON only; a missing content type is taken as JSON (many webhook senders omit it)."""
    given = request.headers.get(hdrs.CONTENT_TYPE)
    if given is None or given in _PLAIN_JSON:
        return
    mime = request.content_type.lower()
    if mime != "application/json" and not (
        mime.startswith("application/") and mime.endswith("+json")
    ):
        raise UnsupportedMediaType(f"content type {mime!r} is not supported; send application/json")
    charset = (request.charset or "utf-8").lower()
    if charset not in ("utf-8", "utf8"):
        raise UnsupportedMediaType(f"charset {charset!r} is not supported; send UTF-8")


def check_content_encoding(request: web.Request) -> None:
    """The body is sent as is or in one coding aiohttp decodes (gzip or deflate); anything else
    (an unknown coding, `x-gzip`, a list of codings) would reach the JSON parser still encoded.

    aiohttp decodes a body when its one Content-Encoding value, ASCII, lowercased and stripped of
    spaces and tabs, names a coding it knows; it passes any other as is. The same rule here."""
    given = request.headers.getall(hdrs.CONTENT_ENCODING, [])
    if not given:
        return
    coding = given[0].strip(" \t")
    decoded = ("", "identity", *UnsupportedContentEncoding.accepted)
    if len(given) > 1 or not coding.isascii() or coding.lower() not in decoded:
        raise UnsupportedContentEncoding()


def buffered_body(request: web.Request, limit: int) -> bytes | None:
    """The body when it has already arrived whole (the usual small JSON body), else None."""
    if not request.content.is_eof() or request.content.exception() is not None:
        return None
    body = request.content.read_nowait()
    if len(body) > limit:
        raise BodyTooLarge(limit)
    charge_body(request, len(body))
    return body


async def read_body(request: web.Request, limit: int) -> bytes:
    """The whole body, refusing to read past `limit` bytes (chunked or not); each chunk is held
    against the edge's budget of bodies in flight as it arrives."""
    declared = request.content_length
    if declared is not None and declared > limit:
        raise BodyTooLarge(limit)
    chunks: list[bytes] = []
    size = 0
    try:
        while chunk := await request.content.read(_CHUNK):
            size += len(chunk)
            if size > limit:
                raise BodyTooLarge(limit)
            charge_body(request, len(chunk))
            chunks.append(chunk)
    except RequestPayloadError:
        _abandon_body(request)
        raise UnreadableBody(_UNREADABLE) from None
    except ConnectionError:
        raise ClientDisconnected("the client left before its body arrived") from None
    return b"".join(chunks)


def _abandon_body(request: web.Request) -> None:
    """aiohttp's parser stops at a body it cannot read, and would drop every later request on the
    connection. Mark the body finished, so that aiohttp does not try to drain it after the answer
    (and log the error again as unhandled); the answer closes the connection (`UnreadableBody`)."""
    request.content.feed_eof()


#: A body orjson refuses (a number beyond its range) is read by the exact parser, which costs
#: ~0.3 s for 1 MiB of numbers: past this size it runs on a thread, so that such a body slows the
#: event loop (the thread takes the interpreter lock in turns) but never stops it for everyone.
EXACT_PARSE_ON_LOOP_BYTES = 64 * 1024


async def accept_json_object(body: bytes) -> str:
    """The body as text when it is one well-formed JSON object ingest can store; else raise.

    Numbers are not judged here: `parse_payload` reads every literal orjson reads (one beyond the
    bounds as an `OutOfRangeNumber`), so the worker answers such a value with its field's 422.
    """
    if not body.strip():
        raise MalformedBody("request body is empty; send a JSON object")
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError:
        # orjson refuses integers beyond 64 bits and floats beyond double range: the exact parser
        # decides those (a number beyond the bounds is left for validation to answer 422).
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            raise MalformedBody("request body is not valid UTF-8") from None
        if len(body) > EXACT_PARSE_ON_LOOP_BYTES:
            await asyncio.to_thread(parse_payload, text)
        else:
            parse_payload(text)
    else:
        if not isinstance(value, dict):
            raise MalformedBody("request body must be a JSON object")
        text = body.decode("utf-8")
        if may_hold_refused_values(text):
            inspect_values(value, strict_strings=False)  # orjson refuses lone surrogates itself
    return text


async def read_within_deadline(request: web.Request, settings: Settings) -> bytes:
    """The body, read against a deadline so slow senders cannot hold a connection for ever.
    Every route that reads a body reads it here, so its Content-Encoding is checked here."""
    check_content_encoding(request)
    body = buffered_body(request, settings.max_body_bytes)
    if body is None:
        body = await _read_in_time(request, settings)
    request[BODY] = body  # for the ledger of rejections, should the request be refused
    return body


async def _read_in_time(request: web.Request, settings: Settings) -> bytes:
    try:
        async with asyncio.timeout(settings.body_read_timeout):
            return await read_body(request, settings.max_body_bytes)
    except TimeoutError:
        raise BodyTimeout(
            f"the body did not arrive within {settings.body_read_timeout:g}s"
        ) from None
