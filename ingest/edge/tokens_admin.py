"""The admin API of workflow tokens (SPEC §8), behind the admin token: issue, list, revoke. A token
is shown once, when issued; afterwards only its prefix names it."""

from __future__ import annotations

from aiohttp import web

from ingest import store, tokens
from ingest.edge.admin import require_admin
from ingest.edge.keys import EDGE
from ingest.edge.paths import path_id
from ingest.edge.responses import json_response
from ingest.errors import NotFound
from ingest.workflows import Workflow

_UNKNOWN_WORKFLOW = "no workflow has this id"
_UNKNOWN_TOKEN = "this workflow has no token with this prefix (or this whole token)"


async def issue_token(request: web.Request) -> web.Response:
    workflow = await _workflow(request)
    issued = await tokens.issue(request.app[EDGE].pool, workflow.id)
    if issued is None:  # deleted since it was read
        raise NotFound(_UNKNOWN_WORKFLOW)
    return json_response(issued.model_dump(), 201)


async def list_tokens(request: web.Request) -> web.Response:
    workflow = await _workflow(request)
    listed = await tokens.tokens_of(request.app[EDGE].pool, workflow.id)
    return json_response([token.model_dump(mode="json") for token in listed])


async def revoke_token(request: web.Request) -> web.Response:
    workflow = await _workflow(request)
    try:
        handle = path_id(request, "prefix")
    except NotFound:
        raise NotFound(_UNKNOWN_TOKEN) from None
    if not await tokens.revoke(request.app[EDGE].pool, workflow.id, handle):
        raise NotFound(_UNKNOWN_TOKEN)
    return web.Response(status=204)


async def _workflow(request: web.Request) -> Workflow:
    require_admin(request)
    try:
        public_id = path_id(request, "workflow_id")
    except NotFound:
        raise NotFound(_UNKNOWN_WORKFLOW) from None
    workflow = await store.workflow_by_public_id(request.app[EDGE].pool, public_id)
    if workflow is None:
        raise NotFound(_UNKNOWN_WORKFLOW)
    return workflow
