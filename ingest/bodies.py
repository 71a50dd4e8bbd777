"""Reading request bodies at the edge within limits, and accepting only JSON objects."""

from __future__ import annotations

import orjson
from aiohttp import web
from aiohttp.web_protocol import RequestPayloadError

from ingest.errors import BodyTooLarge, MalformedBody, UnsupportedMediaType
from ingest.inflight import settle_body
from ingest.messages import inspect_values, parse_payload

_CHUNK = 64 * 1024


def check_content_type(request: web.Request) -> None:
    """JSON only; a missing content type is taken as JSON (many webhook senders omit it)."""
    if "Content-Type" not in request.headers:
        return
    mime = request.content_type.lower()
    if mime != "application/json" and not (
        mime.startswith("application/") and mime.endswith("+json")
    ):
        raise UnsupportedMediaType(f"content type {mime!r} is not supported; send application/json")
    charset = (request.charset or "utf-8").lower()
    if charset not in ("utf-8", "utf8"):
        raise UnsupportedMediaType(f"charset {charset!r} is not supported; send UTF-8")


def buffered_body(request: web.Request, limit: int) -> bytes | None:
    """The body when it has already arrived whole (the usual small JSON body), else None."""
    if not request.content.is_eof():
        return None
    body = request.content.read_nowait()
    if len(body) > limit:
        raise BodyTooLarge(limit)
    settle_body(request, len(body))
    return body


async def read_body(request: web.Request, limit: int) -> bytes:
    """The whole body, refusing to read past `limit` bytes (chunked or not)."""
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
            chunks.append(chunk)
    except RequestPayloadError as exc:
        raise MalformedBody(f"request body could not be read: {exc}") from None
    settle_body(request, size)
    return b"".join(chunks)


def accept_json_object(body: bytes) -> str:
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
        parse_payload(text)
    else:
        if not isinstance(value, dict):
            raise MalformedBody("request body must be a JSON object")
        text = body.decode("utf-8")
        inspect_values(value, strict_strings=False)  # orjson refuses lone surrogates itself
    return text
