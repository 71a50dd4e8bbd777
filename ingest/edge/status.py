"""Request status: where an accepted task request stands, by its signed public id."""

from __future__ import annotations

import orjson
from aiohttp import web

from ingest.edge.documents import StatusDocument
from ingest.edge.keys import EDGE
from ingest.edge.paths import workflow_of
from ingest.edge.responses import json_response
from ingest.errors import NotFound
from ingest.results import Outcome, RequestStatus, Result, fetch_result, is_note


async def request_status(request: web.Request) -> web.Response:
    edge = request.app[EDGE]
    workflow = await workflow_of(request)
    public_id = request.match_info["request_id"]
    request_id = edge.request_ids.parse(public_id, workflow.id)
    if request_id is None:
        raise NotFound("no request has this id")
    result = await fetch_result(edge.pool, request_id, workflow.id)
    return json_response(status_document(public_id, result))


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
