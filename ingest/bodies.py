"""Reading request bodies at the edge within limits, and accepting only JSON objects."""

from __future__ import annotations

import orjson
from aiohttp import web
from aiohttp.web_protocol import RequestPayloadError

from ingest.errors import BodyTooLarge, MalformedBody, UnsupportedMediaType
from ingest.messages import parse_payload

_CHUNK = 64 * 1024
#: Deepest nesting a task body may have: the worker's parser must read whatever the edge accepts.
MAX_DEPTH = 64


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
    return b"".join(chunks)


def _inspect(value: object, limit: int, strict_strings: bool) -> None:
    """Refuse nesting deeper than `limit`, NUL characters, and (when the parser let them through)
    lone surrogates, which Postgres and every JSON encoder downstream would refuse."""
    stack: list[tuple[object, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > limit:
            raise MalformedBody(f"JSON nesting deeper than {limit} levels is not accepted")
        if isinstance(item, dict):
            stack.extend((key, depth + 1) for key in item)
            stack.extend((child, depth + 1) for child in item.values())
        elif isinstance(item, list):
            stack.extend((child, depth + 1) for child in item)
        elif isinstance(item, str):
            _check_string(item, strict_strings)


def _check_string(text: str, strict: bool) -> None:
    if "\x00" in text:
        raise MalformedBody("strings cannot contain \\u0000")
    if strict:
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise MalformedBody("strings cannot contain lone surrogates") from None


def accept_json_object(body: bytes) -> str:
    """The body as text when it is one well-formed JSON object ingest can store; else raise."""
    if not body.strip():
        raise MalformedBody("request body is empty; send a JSON object")
    try:
        value = orjson.loads(body)
        strict = False  # orjson refuses invalid UTF-8 and lone surrogates itself
    except orjson.JSONDecodeError:
        # orjson refuses integers beyond 64 bits; the exact parser decides those (and errors).
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            raise MalformedBody("request body is not valid UTF-8") from None
        value, strict = parse_payload(text), True
    else:
        if not isinstance(value, dict):
            raise MalformedBody("request body must be a JSON object")
        text = body.decode("utf-8")
    _inspect(value, MAX_DEPTH, strict)
    return text
