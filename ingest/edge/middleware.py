"""The edge's middlewares: every request observed (counted, timed, logged, given an id), and the
one place errors become statuses."""

from __future__ import annotations

import itertools
import logging
import os
import time
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware
from multidict import istr

from ingest import store
from ingest.edge import ledger
from ingest.edge.documents import definition_problems
from ingest.edge.filters import InvalidFilter
from ingest.edge.keys import OUTCOME, REQUEST_ID, WORKFLOW
from ingest.edge.metrics import EdgeMetrics
from ingest.edge.paths import UNKNOWN_TOKEN
from ingest.edge.responses import error_response, json_response
from ingest.errors import (
    BodyTimeout,
    BodyTooLarge,
    ClientDisconnected,
    Conflict,
    DefinitionError,
    Forbidden,
    IngestError,
    InvalidHeader,
    InvalidSignature,
    MalformedBody,
    MappingFailed,
    NotFound,
    PreconditionFailed,
    RateLimited,
    Unauthorized,
    Unavailable,
    UnreadableBody,
    UnsupportedContentEncoding,
    UnsupportedMediaType,
)
from ingest.logs import AccessLog, escape_undecodable, redact_path

log = logging.getLogger(__name__)

_X_REQUEST_ID = istr("X-Request-Id")


#: Each error the edge answers, with its status and `error` code; the first that matches wins.
#: The OpenAPI document reads its answers from here (`ingest.edge.openapi_terms`).
STATUS_OF: list[tuple[type[IngestError], int, str]] = [
    (Unavailable, 503, "unavailable"),
    (RateLimited, 429, "rate_limited"),
    (Unauthorized, 401, "unauthorized"),
    (InvalidSignature, 401, "invalid_signature"),
    (MappingFailed, 422, "mapping_failed"),
    (MalformedBody, 400, "malformed_body"),
    (BodyTooLarge, 413, "body_too_large"),
    (UnsupportedContentEncoding, 415, "unsupported_content_encoding"),
    (UnsupportedMediaType, 415, "unsupported_media_type"),
    (NotFound, 404, "not_found"),
    (Conflict, 409, "conflict"),
    (PreconditionFailed, 412, "precondition_failed"),
    (Forbidden, 403, "admin_api_disabled"),
    (InvalidHeader, 400, "invalid_header"),
    (BodyTimeout, 408, "request_timeout"),
    (InvalidFilter, 400, "invalid_filter"),
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
        if 400 <= status < 500:
            ledger.note(request, response, elapsed)
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


def status_of(error: type[IngestError]) -> tuple[int, str]:
    """The status and `error` code the edge answers `error` with."""
    for kind, status, code in STATUS_OF:
        if issubclass(error, kind):
            return status, code
    raise LookupError(f"the edge has no answer for {error.__name__}")


@web.middleware
async def error_middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    """Every error leaves as JSON with a status; nothing a client sends becomes a 500."""
    try:
        response: web.StreamResponse = await handler(request)
    except store.DATABASE_UNAVAILABLE as exc:
        log.warning(
            "database unavailable in %s %s: %r", request.method, redact_path(request.path), exc
        )
        return error_response(
            503, "unavailable", "the database is unavailable", {"Retry-After": "1"}
        )
    except DefinitionError as exc:
        return json_response(definition_problems(exc.problems), 422)
    except IngestError as exc:
        if any(isinstance(exc, kind) for kind, _, _ in STATUS_OF):
            return _request_error(exc)
        log.exception("unanswered error in %s %s", request.method, redact_path(request.path))
        return error_response(500, "internal_error", "the server failed; the error is logged")
    except web.HTTPNotFound:
        # Under the token prefix every miss looks alike, so guesses learn nothing from the body.
        message = (
            UNKNOWN_TOKEN if request.path.startswith("/api/v1/workflows/") else "no such route"
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


def _request_error(exc: IngestError) -> web.Response:
    status, code = status_of(type(exc))
    response = error_response(status, code, str(exc), _headers_for(exc))
    if isinstance(exc, _CLOSING):
        response.force_close()
    return response


def _headers_for(exc: IngestError) -> dict[str, str] | None:
    """What an answer to `exc` tells beyond its body: when to retry, what to send instead."""
    if isinstance(exc, Unavailable | RateLimited):
        return {"Retry-After": str(exc.retry_after)}
    if isinstance(exc, Unauthorized):
        return {"WWW-Authenticate": 'Bearer realm="ingest-admin"'}
    if isinstance(exc, UnsupportedContentEncoding):
        return {"Accept-Encoding": ", ".join(exc.accepted)}
    return None


def _allow(exc: web.HTTPException) -> dict[str, str] | None:
    allow = exc.headers.get("Allow")
    return {"Allow": allow} if allow else None
