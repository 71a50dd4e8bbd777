"""HTTP handlers. The only place errors become statuses (see `error_middleware`)."""

from __future__ import annotations

import asyncio
import hmac
import itertools
import logging
import os
import time
import uuid
from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import hdrs, web
from aiohttp.typedefs import Handler, Middleware
from multidict import istr

from ingest import filters, openapi, store
from ingest.app_keys import EDGE, METRICS, SETTINGS
from ingest.bodies import (
    accept_json_object,
    buffered_body,
    check_content_encoding,
    check_content_type,
    read_body,
)
from ingest.errors import (
    BodyTimeout,
    BodyTooLarge,
    ClientDisconnected,
    DefinitionError,
    Forbidden,
    IngestError,
    InvalidHeader,
    MalformedBody,
    NotFound,
    RateLimited,
    Unauthorized,
    Unavailable,
    UnreadableBody,
    UnsupportedContentEncoding,
    UnsupportedMediaType,
)
from ingest.fields import unique_key_from_text
from ingest.logs import AccessLog, escape_undecodable, redact_path
from ingest.messages import Operation, TaskRequest, idempotent_request_id, parse_payload
from ingest.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from ingest.metrics import EdgeMetrics, exposition
from ingest.preferences import parse_prefer
from ingest.results import Result, fetch_result, status_document
from ingest.tasks import render
from ingest.workflows import CURSOR, Workflow, WorkflowDefinition, example, import_url

if TYPE_CHECKING:
    from ingest.app import Edge

log = logging.getLogger(__name__)

#: Per-request facts the access log reports.
REQUEST_ID = web.RequestKey("request_id", str)
WORKFLOW = web.RequestKey("workflow", str)
OUTCOME = web.RequestKey("outcome", str)

JSON = "application/json"
_X_REQUEST_ID = istr("X-Request-Id")
_PREFER = istr("Prefer")
_PREFERENCE_APPLIED = istr("Preference-Applied")
_IDEMPOTENCY_KEY = istr("Idempotency-Key")
_UNKNOWN_TOKEN = "no workflow has this token"


def json_response(
    body: Any, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    return web.Response(body=orjson.dumps(body), status=status, content_type=JSON, headers=headers)


def error_response(
    status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> web.Response:
    return json_response({"error": code, "message": message}, status, headers)


_STATUS_OF: list[tuple[type[IngestError], int, str]] = [
    (MalformedBody, 400, "malformed_body"),
    (BodyTooLarge, 413, "body_too_large"),
    (UnsupportedContentEncoding, 415, "unsupported_content_encoding"),
    (UnsupportedMediaType, 415, "unsupported_media_type"),
    (NotFound, 404, "not_found"),
    (Forbidden, 403, "admin_api_disabled"),
    (InvalidHeader, 400, "invalid_header"),
    (BodyTimeout, 408, "request_timeout"),
    (filters.InvalidFilter, 400, "invalid_filter"),
    (DefinitionError, 422, "invalid_definition"),
    # Nobody reads this answer; it is what the request counts as in metrics and the access log.
    (ClientDisconnected, 400, "client_disconnected"),
]
#: Errors after which the connection cannot carry another request: its body was not read to the
#: end (and aiohttp's parser may have stopped in it). Their answers close the connection.
_CLOSING = (UnreadableBody, BodyTimeout, ClientDisconnected)


def observe_requests(metrics: EdgeMetrics, access: AccessLog | None) -> Middleware:
    """A middleware that counts, times and logs (with `access`) every request by its route
    pattern, never by its token-bearing path, and gives it a request id."""
    fresh_ids = FreshIds()

    @web.middleware
    async def observe(request: web.Request, handler: Handler) -> web.StreamResponse:
        started = time.monotonic()
        request_id = _request_id(request) or fresh_ids.next()
        request[REQUEST_ID] = request_id
        response = await handler(request)
        response.headers[_X_REQUEST_ID] = request_id
        elapsed = time.monotonic() - started
        status = response.status
        metrics.answered(_route_of(request), request.method, status, elapsed)
        if access is not None:
            access(
                request.method,
                request.path,
                status,
                request_id,
                round(elapsed * 1000, 2),
                request.get(WORKFLOW),
                request.get(OUTCOME),
            )
        return response

    return observe


class FreshIds:
    """Ids for requests that bring no `X-Request-Id`: one random prefix per process and a count,
    unique without a system call per request (they correlate log lines; they guard nothing)."""

    def __init__(self) -> None:
        self._prefix = os.urandom(8).hex()
        self._count = itertools.count()

    def next(self) -> str:
        return f"{self._prefix}{next(self._count):016x}"


def _request_id(request: web.Request) -> str:
    """The client's `X-Request-Id`, fit to log and echo (at most 64 ASCII characters), or ''."""
    given = request.headers.get(_X_REQUEST_ID)
    if not given:
        return ""
    # Bytes that are not UTF-8 arrive as lone surrogates: escaped (`\xff`), the id can be logged
    # and echoed like any other.
    return escape_undecodable(given).encode("ascii", "backslashreplace").decode()[:64]


def _route_of(request: web.Request) -> str:
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else "unmatched"


@web.middleware
async def error_middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    """Every error leaves as JSON with a status; nothing a client sends becomes a 500."""
    try:
        response: web.StreamResponse = await handler(request)
    except Unavailable as exc:
        retry = str(exc.retry_after)
        return error_response(503, "unavailable", str(exc), {"Retry-After": retry})
    except RateLimited as exc:
        retry = str(exc.retry_after)
        return error_response(429, "rate_limited", str(exc), {"Retry-After": retry})
    except store.DATABASE_UNAVAILABLE as exc:
        log.warning(
            "database unavailable in %s %s: %r", request.method, redact_path(request.path), exc
        )
        return error_response(
            503, "unavailable", "the database is unavailable", {"Retry-After": "1"}
        )
    except DefinitionError as exc:
        return json_response({"error": "invalid_definition", "problems": exc.problems}, 422)
    except Unauthorized as exc:
        challenge = {"WWW-Authenticate": 'Bearer realm="ingest-admin"'}
        return error_response(401, "unauthorized", str(exc), challenge)
    except IngestError as exc:
        for kind, status, code in _STATUS_OF:
            if isinstance(exc, kind):
                return _request_error(exc, status, code)
        raise
    except web.HTTPNotFound:
        # Under the token prefix every miss looks alike, so guesses learn nothing from the body.
        message = (
            _UNKNOWN_TOKEN if request.path.startswith("/api/v1/workflows/") else "no such route"
        )
        return error_response(404, "not_found", message)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return error_response(
            exc.status, exc.reason.lower().replace(" ", "_"), exc.reason, _allow(exc)
        )
    except Exception:
        log.exception("unhandled error in %s %s", request.method, redact_path(request.path))
        return error_response(500, "internal_error", "the server failed; the error is logged")
    return response


def _request_error(exc: IngestError, status: int, code: str) -> web.Response:
    headers = None
    if isinstance(exc, UnsupportedContentEncoding):
        headers = {"Accept-Encoding": ", ".join(exc.accepted)}
    response = error_response(status, code, str(exc), headers)
    if isinstance(exc, _CLOSING):
        response.force_close()
    return response


def _allow(exc: web.HTTPException) -> dict[str, str] | None:
    allow = exc.headers.get("Allow")
    return {"Allow": allow} if allow else None


# ---------------------------------------------------------------------------------------- task API


async def _workflow_of(request: web.Request) -> Workflow:
    workflow = await request.app[EDGE].workflows.by_token(request.match_info["token"])
    if workflow is None:
        raise NotFound(_UNKNOWN_TOKEN)
    request[WORKFLOW] = workflow.public_id
    return workflow


async def post_task(request: web.Request) -> web.Response:
    workflow = await _admitted_workflow(request)
    return await _submit(request, workflow, Operation.UPSERT, await _task_body(request))


async def put_task(request: web.Request) -> web.Response:
    workflow = await _admitted_workflow(request)
    return await _submit(request, workflow, Operation.UPDATE, await _task_body(request))


async def delete_task(request: web.Request) -> web.Response:
    """Deletes go through the queue like every write, so they serialise with upserts."""
    workflow = await _admitted_workflow(request)
    key = _canonical_key(workflow, request.match_info["task_id"])
    return await _submit(request, workflow, Operation.DELETE, orjson.dumps({"key": key}).decode())


async def _admitted_workflow(request: web.Request) -> Workflow:
    workflow = await _workflow_of(request)
    if wait := request.app[EDGE].rate_limiter.retry_after(workflow.id):
        raise RateLimited(wait)
    return workflow


async def _task_body(request: web.Request) -> str:
    check_content_type(request)
    return await accept_json_object(await _read_within_deadline(request))


async def _submit(
    request: web.Request, workflow: Workflow, operation: Operation, body: str
) -> web.Response:
    edge = request.app[EDGE]
    key = _idempotency_key(request)
    preferences = parse_prefer(request.headers.getall(_PREFER, ()))
    budget = preferences.budget(edge.settings.sync_timeout)
    task_request = TaskRequest(
        id=idempotent_request_id(workflow.id, key) if key else uuid.uuid4(),
        workflow_id=workflow.id,
        workflow_version=workflow.version,
        operation=operation,
        body=body,
        received_at=time.time(),
        keyed=key is not None,
        wants_reply=budget > 0,
    )
    if key is not None:
        # Unreachable database: publish anyway; the worker applies one id at most once.
        stored = await _stored_if_reachable(edge.pool, task_request.id, workflow.id)
        if stored is not None:
            request[OUTCOME] = "replayed"
            return _replayed(stored, task_request)
    if budget > 0:
        answer = await _publish_and_answer(request, edge, task_request, budget)
        if answer is not None:
            return answer
    else:
        await _publish(edge, task_request)
    request[OUTCOME] = "accepted"
    return _accepted(request, edge, workflow, task_request.id, preferences.respond_async)


async def _publish(edge: Edge, task_request: TaskRequest) -> None:
    await edge.publisher.publish(task_request)
    edge.metrics.accept.observe(time.time() - task_request.received_at)


async def _publish_and_answer(
    request: web.Request, edge: Edge, task_request: TaskRequest, budget: float
) -> web.Response | None:
    """Publish, then wait up to `budget` seconds for the answer: the worker's reply, or its stored
    result when the reply was lost; None when neither came in time."""
    waiter = edge.inbox.expect(task_request.id, task_request.fingerprint)
    try:
        await _publish(edge, task_request)
    except BaseException:
        edge.inbox.forget(task_request.id, waiter)
        raise
    confirmed = time.monotonic()
    reply = await edge.inbox.wait(task_request.id, waiter, budget)
    waited = edge.metrics.sync_replied if reply is not None else edge.metrics.sync_timed_out
    waited.observe(time.monotonic() - confirmed)
    if reply is not None:
        request[OUTCOME] = "answered"
        return _final(reply.http_status, reply.body)
    # The reply is only a wake-up: the result may be committed with its reply lost.
    stored = await _stored_if_reachable(edge.pool, task_request.id, task_request.workflow_id)
    if stored is not None:
        request[OUTCOME] = "answered"
        return _replayed(stored, task_request)
    return None


async def _read_within_deadline(request: web.Request) -> bytes:
    """The body, read against a deadline so slow senders cannot hold a connection for ever.
    Every route that reads a body reads it here, so its Content-Encoding is checked here."""
    settings = request.app[SETTINGS]
    check_content_encoding(request)
    body = buffered_body(request, settings.max_body_bytes)
    if body is not None:
        return body
    try:
        async with asyncio.timeout(settings.body_read_timeout):
            return await read_body(request, settings.max_body_bytes)
    except TimeoutError:
        raise BodyTimeout(
            f"the body did not arrive within {settings.body_read_timeout:g}s"
        ) from None


async def _stored_if_reachable(
    pool: store.Pool, request_id: uuid.UUID, workflow_id: int
) -> Result | None:
    """The stored result, or None when there is none or the database cannot say so now.

    After a confirm, a database error must not become a 503, which would invite a retry (and a
    second effect): the client gets 202 and a status URL. Before publishing a keyed request, the
    worker's dedupe by request id makes publishing without the look-up safe.
    """
    try:
        async with asyncio.timeout(1.0):
            return await fetch_result(pool, request_id, workflow_id)
    except store.DATABASE_UNAVAILABLE:
        return None


def _idempotency_key(request: web.Request) -> str | None:
    """The Idempotency-Key header (a string, quoted or not), or None when absent."""
    given = request.headers.getall(_IDEMPOTENCY_KEY, ())
    if not given:
        return None
    if len(set(given)) > 1:
        raise InvalidHeader("send one Idempotency-Key, not several")
    raw = given[0]
    key = raw.strip()
    if len(key) >= 2 and key[0] == key[-1] == '"':
        key = key[1:-1]
    if not 1 <= len(key) <= 255 or not (key.isascii() and key.isprintable()):
        raise InvalidHeader("Idempotency-Key must be 1 to 255 printable ASCII characters")
    return key


def _replayed(stored: Result, request: TaskRequest) -> web.Response:
    """A stored result answers again, unless its key was reused for a different request."""
    if stored.fingerprint is not None and stored.fingerprint != request.fingerprint:
        message = "this Idempotency-Key was already used with a different request body"
        return error_response(422, "idempotency_key_reused", message)
    return _final(stored.http_status, stored.body)


def _final(status: int, body: str) -> web.Response:
    """A worker's answer (sync reply or stored result) as the HTTP response."""
    if status == 204:
        return web.Response(status=204)
    return web.Response(body=body.encode(), status=status, content_type=JSON)


def _accepted(
    request: web.Request,
    edge: Edge,
    workflow: Workflow,
    request_id: uuid.UUID,
    respond_async: bool,
) -> web.Response:
    public_id = edge.request_ids.public(request_id, workflow.id)
    token = request.match_info["token"]
    url = f"{edge.settings.base_url}/api/v1/workflows/{token}/requests/{public_id}"
    headers = {hdrs.CONTENT_TYPE: JSON, hdrs.LOCATION: url}
    if respond_async:
        headers[_PREFERENCE_APPLIED] = "respond-async"
    body = orjson.dumps({"id": public_id, "status": "pending", "status_url": url})
    return web.Response(body=body, status=202, headers=headers)


async def request_status(request: web.Request) -> web.Response:
    edge = request.app[EDGE]
    workflow = await _workflow_of(request)
    public_id = request.match_info["request_id"]
    request_id = edge.request_ids.parse(public_id, workflow.id)
    if request_id is None:
        raise NotFound("no request has this id")
    result = await fetch_result(edge.pool, request_id, workflow.id)
    return json_response(status_document(public_id, result))


async def get_task(request: web.Request) -> web.Response:
    """One task by its Unique ID value (or its task id where the workflow has none)."""
    settings, edge = request.app[SETTINGS], request.app[EDGE]
    workflow = await _workflow_of(request)
    wanted = request.match_info["task_id"]
    task = await store.task_by_key(edge.pool, workflow.id, _canonical_key(workflow, wanted))
    if task is None:
        raise NotFound("no task has this id")
    return json_response(render(workflow, task, settings.base_url))


def _canonical_key(workflow: Workflow, value: str) -> str:
    """The stored form of a Unique ID given in a URL; a value no task can have raises NotFound."""
    key = unique_key_from_text(workflow.unique_field, value, workflow.definition.members)
    if key is None:
        raise NotFound("no task has this id")
    return key


def _path_id(request: web.Request, name: str) -> str:
    """A public id from the path; one that cannot exist (NUL, absurd length) is simply unknown."""
    value = request.match_info[name]
    if "\x00" in value or len(value) > 200:
        raise NotFound(f"no {name.removesuffix('_id')} has this id")
    return value


async def list_tasks(request: web.Request) -> web.Response:
    """Flowdash's list: a JSON array; the next page's cursor travels in `Link` (rel="next")."""
    settings, edge = request.app[SETTINGS], request.app[EDGE]
    workflow = await _workflow_of(request)
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
        workflow_id, task_id = _path_id(request, "workflow_id"), _path_id(request, "task_id")
    except NotFound:
        raise NotFound("no task has this URL") from None
    workflow = await store.workflow_by_public_id(edge.pool, workflow_id)
    task = None
    if workflow is not None:
        task = await store.task_by_public_id(edge.pool, workflow.id, task_id)
    if workflow is None or task is None:
        raise NotFound("no task has this URL")
    return json_response(render(workflow, task, settings.base_url))


# --------------------------------------------------------------------------------------- admin API


def _require_admin(request: web.Request) -> None:
    expected = request.app[SETTINGS].admin_token
    if not expected:
        raise Forbidden("the admin API is disabled: set INGEST_ADMIN_TOKEN to enable it")
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    given_bytes = given.strip().encode("utf-8", "surrogateescape")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given_bytes, expected.encode()):
        raise Unauthorized("send the admin token as 'Authorization: Bearer <token>'")


async def create_workflow(request: web.Request) -> web.Response:
    _require_admin(request)
    settings, edge = request.app[SETTINGS], request.app[EDGE]
    check_content_type(request)
    raw = parse_payload(await accept_json_object(await _read_within_deadline(request)))
    definition = WorkflowDefinition.parse(raw)
    workflow, token = await store.create_workflow(edge.pool, definition)
    return json_response(created_document(workflow, token, settings.base_url), 201)


def created_document(workflow: Workflow, token: str, base_url: str) -> dict[str, Any]:
    """What creating a workflow answers: the workflow, its token (shown once) and the example."""
    url = import_url(base_url, token)
    return {**workflow.summary(base_url), "token": token, **example(workflow.definition, url)}


async def list_workflows(request: web.Request) -> web.Response:
    _require_admin(request)
    settings, edge = request.app[SETTINGS], request.app[EDGE]
    workflows = await store.list_workflows(edge.pool)
    return json_response([w.summary(settings.base_url) for w in workflows])


async def _admin_workflow(request: web.Request) -> Workflow:
    _require_admin(request)
    workflow = await store.workflow_by_public_id(
        request.app[EDGE].pool, _path_id(request, "workflow_id")
    )
    if workflow is None:
        raise NotFound("no workflow has this id")
    return workflow


async def get_workflow(request: web.Request) -> web.Response:
    workflow = await _admin_workflow(request)
    return json_response(workflow.summary(request.app[SETTINGS].base_url))


async def workflow_example(request: web.Request) -> web.Response:
    workflow = await _admin_workflow(request)
    url = import_url(request.app[SETTINGS].base_url, "<token>")
    return json_response(example(workflow.definition, url))


# ------------------------------------------------------------------------------------------ health


async def openapi_document(request: web.Request) -> web.Response:
    return json_response(openapi.spec(request.app[SETTINGS].base_url))


async def openapi_docs(request: web.Request) -> web.Response:
    page = openapi.docs_html(openapi.spec(request.app[SETTINGS].base_url))
    return web.Response(text=page, content_type="text/html")


async def metrics_page(request: web.Request) -> web.Response:
    metrics = request.app[METRICS]
    if EDGE in request.app:
        pool = request.app[EDGE].pool
        metrics.pool_size.set(pool.get_size())
        metrics.pool_idle.set(pool.get_idle_size())
    response = web.Response(body=exposition(metrics.registry))
    response.headers["Content-Type"] = METRICS_CONTENT_TYPE
    return response


_OK = orjson.dumps({"status": "ok"})


async def healthz(request: web.Request) -> web.Response:
    return web.Response(body=_OK, content_type=JSON)


async def readyz(request: web.Request) -> web.Response:
    problems = await request.app[EDGE].problems()
    if problems:
        return json_response({"status": "unavailable", "problems": problems}, 503)
    return web.Response(body=_OK, content_type=JSON)


def add_routes(app: web.Application) -> None:
    app.router.add_post("/api/v1/workflows/{token}/tasks", post_task)
    app.router.add_put("/api/v1/workflows/{token}/tasks", put_task)
    app.router.add_get("/api/v1/workflows/{token}/tasks", list_tasks)
    app.router.add_get("/api/v1/workflows/{token}/tasks/{task_id}", get_task)
    app.router.add_delete("/api/v1/workflows/{token}/tasks/{task_id}", delete_task)
    app.router.add_get("/api/v1/workflows/{token}/requests/{request_id}", request_status)
    app.router.add_get("/workflows/{workflow_id}/tasks/{task_id}", task_by_url)
    app.router.add_post("/api/v1/admin/workflows", create_workflow)
    app.router.add_get("/api/v1/admin/workflows", list_workflows)
    app.router.add_get("/api/v1/admin/workflows/{workflow_id}", get_workflow)
    app.router.add_get("/api/v1/admin/workflows/{workflow_id}/example", workflow_example)
    app.router.add_get("/api/v1/openapi.json", openapi_document)
    app.router.add_get("/api/v1/docs", openapi_docs)
    app.router.add_get("/metrics", metrics_page)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
