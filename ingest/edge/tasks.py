"""The task API (Flowdash's): write a task through the queue, read tasks from Postgres."""

from __future__ import annotations

from aiohttp import web

from ingest import store
from ingest.edge import filters
from ingest.edge.bodies import accept_json_object, check_content_type, read_within_deadline
from ingest.edge.keys import EDGE, SETTINGS
from ingest.edge.paths import path_id, workflow_of
from ingest.edge.responses import json_response
from ingest.edge.writes import admitted_workflow, submit_write
from ingest.errors import NotFound
from ingest.fields import unique_value_from_text
from ingest.messages import Operation, delete_body
from ingest.tasks import render
from ingest.workflows import CURSOR, Workflow


async def post_task(request: web.Request) -> web.Response:
    workflow = await admitted_workflow(request)
    return await submit_write(request, workflow, Operation.UPSERT, await _task_body(request))


async def put_task(request: web.Request) -> web.Response:
    workflow = await admitted_workflow(request)
    return await submit_write(request, workflow, Operation.UPDATE, await _task_body(request))


async def delete_task(request: web.Request) -> web.Response:
    """Deletes go through the queue like every write, so they serialise with upserts."""
    workflow = await admitted_workflow(request)
    unique_value = _unique_value(workflow, request.match_info["task_id"])
    return await submit_write(request, workflow, Operation.DELETE, delete_body(unique_value))


async def _task_body(request: web.Request) -> str:
    check_content_type(request)
    return await accept_json_object(await read_within_deadline(request, request.app[SETTINGS]))


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
