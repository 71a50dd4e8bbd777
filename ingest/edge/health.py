"""Health, metrics and the API's own description: what probes, Prometheus and people read."""

from __future__ import annotations

import orjson
from aiohttp import web

from ingest.edge.documents import HEALTHY, unready
from ingest.edge.keys import EDGE, METRICS
from ingest.edge.openapi import DOCUMENTS
from ingest.edge.paths import workflow_of
from ingest.edge.responses import JSON, json_response
from ingest.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from ingest.metrics import exposition

_OK = orjson.dumps(HEALTHY)


async def openapi_document(request: web.Request) -> web.Response:
    return web.Response(body=request.app[DOCUMENTS].api(), content_type=JSON)


async def openapi_docs(request: web.Request) -> web.Response:
    return web.Response(text=request.app[DOCUMENTS].page(), content_type="text/html")


async def workflow_openapi_document(request: web.Request) -> web.Response:
    """The document with this workflow's own task schema and examples."""
    workflow = await workflow_of(request)
    return web.Response(body=request.app[DOCUMENTS].of_workflow(workflow), content_type=JSON)


async def metrics_page(request: web.Request) -> web.Response:
    metrics = request.app[METRICS]
    if EDGE in request.app:
        pool = request.app[EDGE].pool
        metrics.pool_size.set(pool.get_size())
        metrics.pool_idle.set(pool.get_idle_size())
    response = web.Response(body=exposition(metrics.exposed))
    response.headers["Content-Type"] = METRICS_CONTENT_TYPE
    return response


async def healthz(request: web.Request) -> web.Response:
    return web.Response(body=_OK, content_type=JSON)


async def readyz(request: web.Request) -> web.Response:
    problems = await request.app[EDGE].problems()
    if problems:
        return json_response(unready(problems), 503)
    return web.Response(body=_OK, content_type=JSON)
