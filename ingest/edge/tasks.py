"""The task API (Flowdash's): write a task through the queue, read tasks from Postgres."""

from __future__ import annotations

import time
import uuid

import orjson
from aiohttp import hdrs, web
from multidict import istr

from ingest import store
from ingest.edge import filters
from ingest.edge.bodies import accept_json_object, check_content_type, read_within_deadline
from ingest.edge.documents import accepted
from ingest.edge.keys import EDGE, OUTCOME, SETTINGS
from ingest.edge.paths import path_id, workflow_of
from ingest.edge.preferences import parse_prefer
from ingest.edge.responses import JSON, final_response, json_response
from ingest.edge.submit import Final, submit
from ingest.errors import InvalidHeader, NotFound, RateLimited
from ingest.fields import unique_value_from_text
from ingest.messages import Operation, TaskRequest, delete_body, idempotent_request_id
from ingest.tasks import render
from ingest.workflows import CURSOR, Workflow

_PREFER = istr("Prefer")
_PREFERENCE_APPLIED = istr("Preference-Applied")
_IDEMPOTENCY_KEY = istr("Idempotency-Key")
MAX_IDEMPOTENCY_KEY_CHARS = 255


async def post_task(request: web.Request) -> web.Response:
    workflow = await _admitted_workflow(request)
    return await _submit(request, workflow, Operation.UPSERT, await _task_body(request))


async def put_task(request: web.Request) -> web.Response:
    workflow = await _admitted_workflow(request)
    return await _submit(request, workflow, Operation.UPDATE, await _task_body(request))


async def delete_task(request: web.Request) -> web.Response:
    """Deletes go through the queue like every write, so they serialise with upserts."""
    workflow = await _admitted_workflow(request)
    unique_value = _unique_value(workflow, request.match_info["task_id"])
    return await _submit(request, workflow, Operation.DELETE, delete_body(unique_value))


async def _admitted_workflow(request: web.Request) -> Workflow:
    workflow = await workflow_of(request)
    if wait := request.app[EDGE].rate_limiter.retry_after(workflow.id):
        raise RateLimited(wait)
    return workflow


async def _task_body(request: web.Request) -> str:
    check_content_type(request)
    return await accept_json_object(await read_within_deadline(request, request.app[SETTINGS]))


async def _submit(
    request: web.Request, workflow: Workflow, operation: Operation, body: str
) -> web.Response:
    edge = request.app[EDGE]
    idempotency_key = _idempotency_key(request)
    preferences = parse_prefer(request.headers.getall(_PREFER, ()))
    budget = preferences.budget(edge.settings.sync_timeout)
    task_request = TaskRequest(
        id=(
            idempotent_request_id(workflow.id, idempotency_key) if idempotency_key else uuid.uuid4()
        ),
        workflow_id=workflow.id,
        workflow_version=workflow.version,
        operation=operation,
        body=body,
        received_at=time.time(),
        idempotent=idempotency_key is not None,
        wants_reply=budget > 0,
    )
    submitted = await submit(edge, task_request, budget)
    if isinstance(submitted, Final):
        request[OUTCOME] = submitted.how
        return final_response(submitted.http_status, submitted.body)
    request[OUTCOME] = "accepted"
    return _accepted(request, workflow, submitted.request_id, preferences.respond_async)


def _idempotency_key(request: web.Request) -> str | None:
    """The Idempotency-Key header (a string, quoted or not), or None when absent."""
    given = request.headers.getall(_IDEMPOTENCY_KEY, ())
    if not given:
        return None
    if len(set(given)) > 1:
        raise InvalidHeader("send one Idempotency-Key, not several")
    key = given[0].strip()
    if len(key) >= 2 and key[0] == key[-1] == '"':
        key = key[1:-1]
    if not 1 <= len(key) <= MAX_IDEMPOTENCY_KEY_CHARS or not (key.isascii() and key.isprintable()):
        raise InvalidHeader(
            f"Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY_CHARS} printable ASCII characters"
        )
    return key


def _accepted(
    request: web.Request, workflow: Workflow, request_id: uuid.UUID, respond_async: bool
) -> web.Response:
    """202 with the request's status URL."""
    edge = request.app[EDGE]
    public_id = edge.request_ids.public(request_id, workflow.id)
    body = accepted(edge.settings.base_url, request.match_info["token"], public_id)
    headers = {hdrs.CONTENT_TYPE: JSON, hdrs.LOCATION: body["status_url"]}
    if respond_async:
        headers[_PREFERENCE_APPLIED] = "respond-async"
    return web.Response(body=orjson.dumps(body), status=202, headers=headers)


async def get_task(request: web.Request) -> web.Response:
    """One task by its Unique ID value (or its task id where the workflow has none)."""
    settings, edge = request.app[SETTINGS], request.app[EDGE]
    workflow = await workflow_of(request)
    wanted = request.match_info["task_id"]
    task = await store.task_by_unique_value(edge.pool, workflow.id, _unique_value(workflow, wanted))
    if task is None:
        raise NotFound("no task has this id")
    return json_response(render(workflow, task, settings.base_url))


def _unique_value(workflow: Workflow, value: str) -> str:
    """The stored form of a Unique ID given in a URL; a value no task can have raises NotFound."""
    unique_value = unique_value_from_text(workflow.unique_field, value, workflow.definition.members)
    if unique_value is None:
        raise NotFound("no task has this id")
    return unique_value


async def list_tasks(request: web.Request) -> web.Response:
    """Flowdash's list: a JSON array; the next page's cursor travels in `Link` (rel="next")."""
    settings, edge = request.app[SETTINGS], request.app[EDGE]
    workflow = await workflow_of(request)
    page = await filters.list_tasks(edge.pool, workflow, list(request.query.items()), edge.cursors)
    headers = {}
    if page.next_cursor is not None:
        query = [(k, v) for k, v in request.query.items() if k != CURSOR]
        query.append((CURSOR, page.next_cursor))
        next_url = f"{settings.base_url}{request.rel_url.with_query(query)}"
        headers = {"Link": f'<{next_url}>; rel="next"', "X-Next-Cursor": page.next_cursor}
    body = [render(workflow, task, settings.base_url) for task in page.tasks]
    return json_response(body, headers=headers)


async def task_by_url(request: web.Request) -> web.Response:
    """The `Task URL`: an unguessable capability link that never carries the token."""
    settings, edge = request.app[SETTINGS], request.app[EDGE]
    # One answer for every miss: the link must not tell which of its two ids exists.
    try:
        workflow_id, task_id = path_id(request, "workflow_id"), path_id(request, "task_id")
    except NotFound:
        raise NotFound("no task has this URL") from None
    workflow = await store.workflow_by_public_id(edge.pool, workflow_id)
    task = None
    if workflow is not None:
        task = await store.task_by_public_id(edge.pool, workflow.id, task_id)
    if workflow is None or task is None:
        raise NotFound("no task has this URL")
    return json_response(render(workflow, task, settings.base_url))
