"""Request status: where an accepted task request stands, by its signed public id."""

from __future__ import annotations

import time

import orjson
from aiohttp import web

from ingest.edge.context import Edge
from ingest.edge.documents import StatusDocument
from ingest.edge.keys import EDGE
from ingest.edge.paths import workflow_of
from ingest.edge.request_ids import IssuedRequest
from ingest.edge.responses import json_response
from ingest.errors import NotFound
from ingest.results import Outcome, RequestStatus, Result, fetch_result, is_note
from ingest.retention import Retention
from ingest.settings import Settings


async def request_status(request: web.Request) -> web.Response:
    workflow = await workflow_of(request)
    public_id = request.match_info["request_id"]
    return json_response(await status_of(request.app[EDGE], public_id, workflow.id))


async def status_of(edge: Edge, public_id: str, workflow_id: int) -> StatusDocument:
    """Where the request `public_id` names stands. NotFound when no request of this workflow has
    that id, or when its result is gone: none is stored, and the request was issued longer ago
    than its result would have been kept (a request still in the queue by then is 404 too,
    until a worker applies it)."""
    issued = edge.request_ids.read(public_id, workflow_id)
    if issued is None:
        raise NotFound("no request has this id")
    result = await fetch_result(edge.pool, issued.request_id, workflow_id)
    if result is None and _purged(edge.settings, issued):
        raise NotFound(
            "this request's result is no longer kept (results are purged after"
            " INGEST_RESULT_RETENTION)"
        )
    return status_document(public_id, result)


def _purged(settings: Settings, issued: IssuedRequest) -> bool:
    if issued.keyed is None or issued.issued_by is None:
        return False  # an id of the older form: when it was issued is unknown
    retention = Retention.from_settings(settings)
    return retention.result_purged(issued.keyed, issued.issued_by, time.time())


def status_document(public_id: str, result: Result | None) -> StatusDocument:
    """The body of a status URL: pending, or the final status code, outcome and task or errors."""
    if result is None:
        return {"id": public_id, "status": RequestStatus.PENDING}
    document: StatusDocument = {
        "id": public_id,
        "status": result.status,
        "http_status": result.http_status,
        "outcome": result.outcome,
    }
    body = orjson.loads(result.body) if result.body else None
    if body is None:
        pass  # 204: nothing to show
    elif result.outcome is Outcome.BATCH:
        document["results"] = body["results"]
    elif result.http_status < 300 and not is_note(body):
        document["task"] = body
    else:
        # {"errors": {...}} for 422; {"error", "message"} otherwise, or for a result too large
        # to keep (whose Task URL comes along).
        document.update(body)
    if result.completed_at is not None:
        document["completed_at"] = result.completed_at.isoformat()
    return document
