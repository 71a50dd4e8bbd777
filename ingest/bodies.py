"""Reading request bodies at the edge within limits, and accepting only JSON objects."""

from __future__ import annotations

import orjson
from aiohttp import web

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


async def read_body(request: web.Request, limit: int) -> bytes:
    """The whole body, refusing to read past `limit` bytes (chunked or not)."""
    declared = request.content_length
    if declared is not None and declared > limit:
        raise BodyTooLarge(limit)
    chunks: list[bytes] = []
    size = 0
    while chunk := await request.content.read(_CHUNK):
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(limit)
        chunks.append(chunk)
    return b"".join(chunks)


def _depth(value: object, limit: int) -> int:
    stack: list[tuple[object, int]] = [(value, 1)]
    deepest = 0
    while stack:
        item, depth = stack.pop()
        deepest = max(deepest, depth)
        if deepest > limit:
            break
        if isinstance(item, dict):
            stack.extend((child, depth + 1) for child in item.values())
        elif isinstance(item, list):
            stack.extend((child, depth + 1) for child in item)
    return deepest


def accept_json_object(body: bytes) -> str:
    """The body as text when it is one well-formed JSON object ingest can store; else raise."""
    if not body.strip():
        raise MalformedBody("request body is empty; send a JSON object")
    if b"\\u0000" in body:
        raise MalformedBody("strings cannot contain \\u0000")
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError:
        # orjson refuses integers beyond 64 bits; the exact parser decides those (and errors).
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            raise MalformedBody("request body is not valid UTF-8") from None
        value = parse_payload(text)
    else:
        if not isinstance(value, dict):
            raise MalformedBody("request body must be a JSON object")
        text = body.decode("utf-8")
    if _depth(value, MAX_DEPTH) > MAX_DEPTH:
        raise MalformedBody(f"JSON nesting deeper than {MAX_DEPTH} levels is not accepted")
    return text
