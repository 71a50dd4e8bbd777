"""The admin API: workflows, behind the admin token."""

from __future__ import annotations

import hmac
import re

from aiohttp import web

from ingest import deletions, store
from ingest.edge.bodies import accept_json_object, check_content_type, read_within_deadline
from ingest.edge.keys import EDGE, SETTINGS
from ingest.edge.paths import path_id
from ingest.edge.responses import json_response
from ingest.errors import Forbidden, InvalidHeader, NotFound, Unauthorized
from ingest.messages import parse_payload
from ingest.workflows import Workflow, WorkflowDefinition, created_document, example, import_url

_NO_SUCH_WORKFLOW = "no workflow has this id"
#: One entity tag of If-Match: `"3"` as ETag gives it, `W/"3"` (weak, so it never matches: a
#: precondition compares strongly, RFC 9110 §13.1.1), or the version unquoted, for people.
_ENTITY_TAG = re.compile(r'(W/)?"([\x21\x23-\x7e]*)"|([0-9]+)')
#: What a stored version looks like (a Postgres integer); any other tag matches none.
_VERSION = re.compile(r"[0-9]{1,10}")


def require_admin(request: web.Request) -> None:
    """Refuse the request unless it carries the admin token (403 while none is configured)."""
    expected = request.app[SETTINGS].admin_token
    if not expected:
        raise Forbidden("the admin API is disabled: set INGEST_ADMIN_TOKEN to enable it")
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    given_bytes = given.strip().encode("utf-8", "surrogateescape")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given_bytes, expected.encode()):
        raise Unauthorized("send the admin token as 'Authorization: Bearer <token>'")


async def create_workflow(request: web.Request) -> web.Response:
    require_admin(request)
    settings, edge = request.app[SETTINGS], request.app[EDGE]
    check_content_type(request)
    body = await accept_json_object(await read_within_deadline(request, settings))
    definition = WorkflowDefinition.parse(parse_payload(body))
    workflow, token = await store.create_workflow(edge.pool, definition)
    return json_response(created_document(workflow, token, settings.base_url), 201)


async def list_workflows(request: web.Request) -> web.Response:
    require_admin(request)
    settings, edge = request.app[SETTINGS], request.app[EDGE]
    workflows = await store.list_workflows(edge.pool)
    return json_response([w.summary(settings.base_url) for w in workflows])


async def _admin_workflow(request: web.Request) -> Workflow:
    require_admin(request)
    workflow = await store.workflow_by_public_id(
        request.app[EDGE].pool, path_id(request, "workflow_id")
    )
    if workflow is None:
        raise NotFound(_NO_SUCH_WORKFLOW)
    return workflow


def _tagged(workflow: Workflow, base_url: str) -> web.Response:
    """The workflow as GET shows it, with its version as ETag: what If-Match names."""
    return json_response(workflow.summary(base_url), headers={"ETag": f'"{workflow.version}"'})


async def get_workflow(request: web.Request) -> web.Response:
    workflow = await _admin_workflow(request)
    return _tagged(workflow, request.app[SETTINGS].base_url)


async def workflow_example(request: web.Request) -> web.Response:
    workflow = await _admin_workflow(request)
    url = import_url(request.app[SETTINGS].base_url, "<token>")
    return json_response(example(workflow.definition, url))


async def update_workflow(request: web.Request) -> web.Response:
    """PATCH: the next version of a workflow (`ingest.revisions`), answered as GET shows it;
    with If-Match, only if the stored version is the one named (412 otherwise)."""
    require_admin(request)
    settings, edge = request.app[SETTINGS], request.app[EDGE]
    public_id = path_id(request, "workflow_id")
    made_from = _made_from(request)
    check_content_type(request)
    body = await accept_json_object(await read_within_deadline(request, settings))
    workflow = await store.update_workflow(edge.pool, public_id, parse_payload(body), made_from)
    if workflow is None:
        raise NotFound(_NO_SUCH_WORKFLOW)
    return _tagged(workflow, settings.base_url)


def _made_from(request: web.Request) -> frozenset[int] | None:
    """The versions a change was made from, as its If-Match header names them; None when it sets
    no precondition (no header, or `*`: whatever the version)."""
    given = request.headers.getall("If-Match", [])
    if not given:
        return None
    versions: set[int] = set()
    for element in ",".join(given).split(","):
        tag = element.strip(" \t")
        if tag == "*":
            return None
        match = _ENTITY_TAG.fullmatch(tag)
        if match is None:
            raise InvalidHeader(
                "If-Match must name the version the change was made from, as GET's ETag "
                'gives it: If-Match: "3"'
            )
        weak, quoted, bare = match.groups()
        text = quoted if bare is None else bare
        if weak is None and _VERSION.fullmatch(text):
            versions.add(int(text))
    return frozenset(versions)


async def delete_workflow(request: web.Request) -> web.Response:
    """DELETE: a workflow with its tasks, results, sources and tokens (`ingest.deletions`),
    answered once all are gone."""
    require_admin(request)
    if not await deletions.delete_workflow(request.app[EDGE].pool, path_id(request, "workflow_id")):
        raise NotFound(_NO_SUCH_WORKFLOW)
    return web.Response(status=204)
