"""Batch import (`POST /api/v1/workflows/{token}/tasks/batch`): a JSON array of task bodies,
published as one task request (`ingest.batches`) and answered with one result per item."""

from __future__ import annotations

import asyncio

import orjson
from aiohttp import web

from ingest.batches import check_items
from ingest.edge.bodies import EXACT_PARSE_ON_LOOP_BYTES, check_content_type, read_within_deadline
from ingest.edge.keys import SETTINGS
from ingest.edge.paths import workflow_of
from ingest.edge.writes import admit, submit_write
from ingest.errors import MalformedBody
from ingest.messages import Operation, parse_exactly


async def post_batch(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS]
    workflow = await workflow_of(request)
    check_content_type(request)
    body = await read_within_deadline(request, settings)
    text, items = await accept_json_array(body, settings.batch_max_items)
    await admit(request, workflow, items)  # the rate limit counts tasks: a batch costs its items
    return await submit_write(request, workflow, Operation.BATCH, text, items)


async def accept_json_array(body: bytes, max_items: int) -> tuple[str, int]:
    """The body as text, and its number of items, when it is a batch the edge accepts
    (`ingest.batches.check_items`); else raise MalformedBody or TooManyItems.

    As for a single body (`ingest.edge.bodies.accept_json_object`), orjson reads it first, and
    the exact parser reads what orjson refuses (numbers beyond its range, lone surrogates), on a
    thread when the body is large.
    """
    if not body.strip():
        raise MalformedBody("request body is empty; send a JSON array of task bodies")
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError:
        text = _utf8(body)
        if len(body) > EXACT_PARSE_ON_LOOP_BYTES:
            value = await asyncio.to_thread(parse_exactly, text)
        else:
            value = parse_exactly(text)
        return text, check_items(value, text, max_items, strict_strings=True)
    text = body.decode("utf-8")
    # orjson refuses lone surrogates itself.
    return text, check_items(value, text, max_items, strict_strings=False)


def _utf8(body: bytes) -> str:
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError:
        raise MalformedBody("request body is not valid UTF-8") from None
