"""The admin API of sources (SPEC §6, §8), behind the admin token: create, list, get, update
(its id and URL kept), delete. A source is shown with its URL and never with its secrets."""

from __future__ import annotations

from aiohttp import web

from ingest import store
from ingest.edge.admin import require_admin
from ingest.edge.bodies import accept_json_object, check_content_type, read_within_deadline
from ingest.edge.keys import EDGE, SETTINGS
from ingest.edge.paths import path_id
from ingest.edge.responses import json_response
from ingest.errors import NotFound
from ingest.messages import parse_payload
from ingest.sources import Source

_UNKNOWN = "no source has this id"


async def create_source(request: web.Request) -> web.Response:
    require_admin(request)
    settings, edge = request.app[SETTINGS], request.app[EDGE]
    check_content_type(request)
    body = await accept_json_object(await read_within_deadline(request, settings))
    source = await store.create_source(edge.pool, parse_payload(body))
    return json_response(source.summary(settings.base_url), 201)


async def list_sources(request: web.Request) -> web.Response:
    require_admin(request)
    settings, edge = request.app[SETTINGS], request.app[EDGE]
    sources = await store.list_sources(edge.pool)
    return json_response([source.summary(settings.base_url) for source in sources])


async def get_source(request: web.Request) -> web.Response:
    source = await _admin_source(request)
    return json_response(source.summary(request.app[SETTINGS].base_url))


async def update_source(request: web.Request) -> web.Response:
    """A new definition for a source, its id and URL kept: the keys sent replace theirs."""
    require_admin(request)
    settings, edge = request.app[SETTINGS], request.app[EDGE]
    check_content_type(request)
    body = await accept_json_object(await read_within_deadline(request, settings))
    changes = parse_payload(body)
    source = await store.update_source(edge.pool, _source_id(request), changes)
    if source is None:
        raise NotFound(_UNKNOWN)
    return json_response(source.summary(settings.base_url))


async def delete_source(request: web.Request) -> web.Response:
    require_admin(request)
    if not await store.delete_source(request.app[EDGE].pool, _source_id(request)):
        raise NotFound(_UNKNOWN)
    return web.Response(status=204)


async def _admin_source(request: web.Request) -> Source:
    require_admin(request)
    source = await store.source_by_public_id(request.app[EDGE].pool, _source_id(request))
    if source is None:
        raise NotFound(_UNKNOWN)
    return source


def _source_id(request: web.Request) -> str:
    try:
        return path_id(request, "source_id")
    except NotFound:
        raise NotFound(_UNKNOWN) from None
