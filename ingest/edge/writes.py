"""What every route that writes tasks through the queue shares (`ingest.edge.tasks`,
`ingest.edge.batch`): admission (the token, the rate limit), the Idempotency-Key, the `Prefer`
wait budget, and the answer: the final one, or 202 with a status URL."""

from __future__ import annotations

import time
import uuid

import orjson
from aiohttp import hdrs, web
from multidict import istr

from ingest.edge.documents import accepted
from ingest.edge.keys import EDGE, OUTCOME
from ingest.edge.paths import workflow_of
from ingest.edge.preferences import parse_prefer
from ingest.edge.responses import JSON, final_response
from ingest.edge.submit import Final, submit
from ingest.errors import InvalidHeader, RateLimited
from ingest.messages import Operation, TaskRequest, idempotent_request_id
from ingest.workflows import Workflow

_PREFER = istr("Prefer")
_PREFERENCE_APPLIED = istr("Preference-Applied")
_IDEMPOTENCY_KEY = istr("Idempotency-Key")
MAX_IDEMPOTENCY_KEY_CHARS = 255


async def admitted_workflow(request: web.Request) -> Workflow:
    """The workflow the path's token names, once its rate limit lets the request in."""
    workflow = await workflow_of(request)
    await admit(request, workflow)
    return workflow


async def admit(request: web.Request, workflow: Workflow, tasks: int = 1) -> None:
    """Raise RateLimited unless the workflow's rate limit, shared by every edge, lets `tasks`
    more tasks in (`ingest.edge.ratelimit`)."""
    limiter = request.app[EDGE].rate_limiter
    if limiter.limited and (wait := await limiter.retry_after(workflow.id, tasks)):
        raise RateLimited(wait)


async def submit_write(
    request: web.Request, workflow: Workflow, operation: Operation, body: str, items: int = 1
) -> web.Response:
    """Publish a task request and answer it: finally within the wait budget, else 202."""
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
        items=items,
    )
    submitted = await submit(edge, task_request, budget)
    if isinstance(submitted, Final):
        request[OUTCOME] = submitted.how
        return final_response(submitted.http_status, submitted.body)
    request[OUTCOME] = "accepted"
    return _accepted(request, task_request, preferences.respond_async)


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


def _accepted(request: web.Request, task_request: TaskRequest, respond_async: bool) -> web.Response:
    """202 with the request's status URL."""
    edge = request.app[EDGE]
    public_id = edge.request_ids.of(task_request)
    body = accepted(edge.settings.base_url, request.match_info["token"], public_id)
    headers = {hdrs.CONTENT_TYPE: JSON, hdrs.LOCATION: body["status_url"]}
    if respond_async:
        headers[_PREFERENCE_APPLIED] = "respond-async"
    return web.Response(body=orjson.dumps(body), status=202, headers=headers)
