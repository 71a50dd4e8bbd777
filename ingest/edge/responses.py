"""JSON answers, the one shape every response body of the edge takes."""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

from ingest.edge.documents import Error

JSON = "application/json"


def json_response(
    body: Any, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    return web.Response(body=orjson.dumps(body), status=status, content_type=JSON, headers=headers)


def error_response(
    status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> web.Response:
    body: Error = {"error": code, "message": message}
    return json_response(body, status, headers)


def final_response(status: int, body: str) -> web.Response:
    """A worker's answer (sync reply or stored result), whose body is JSON already."""
    if status == 204:
        return web.Response(status=204)
    return web.Response(body=body.encode(), status=status, content_type=JSON)
