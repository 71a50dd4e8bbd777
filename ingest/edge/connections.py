"""Connections at the edge: what one client can hold of an edge process, and aiohttp's own
errors answered in JSON.

Left alone, aiohttp keeps an idle connection for an hour, never cuts headers that arrive slowly,
holds as many connections as the process has descriptors, and answers a malformed request in plain
text while logging its raw request line (workflow token included). `EdgeServer` builds an
`EdgeConnection` for every client instead, which

- is closed after `idle_timeout` without a request (aiohttp's keep-alive timer, which also runs
  before the first request, so a client that never sends a byte is closed too);
- is answered 408 and closed when a request's line and headers take over `header_read_timeout`;
- answers a malformed request in JSON, never quoting aiohttp's message (it quotes the request's
  bytes): 414 for a request line over `REQUEST_LINE_LIMIT` bytes, 431 for a header line over
  `HEADER_LINE_LIMIT` or more than `HEADER_COUNT_LIMIT` headers, 415 for a Content-Encoding aiohttp
  cannot decode, 400 for the rest; and logs one redacted line for it;

and holds at most `connection_cap` connections: past it, the one idle the longest (no request in
progress) is closed, so idle sockets can never lock a new client out. (The bytes of request bodies
in flight are bounded by `ingest.edge.inflight`.)
"""

from __future__ import annotations

import asyncio
import logging
import resource
import time
from collections import OrderedDict
from http import HTTPStatus
from typing import Any

import orjson
from aiohttp import web
from aiohttp.http_exceptions import (
    BadHttpMessage,
    BadHttpMethod,
    ContentEncodingError,
    HttpProcessingError,
    LineTooLong,
)
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest

from ingest.edge.documents import Error
from ingest.edge.responses import error_response
from ingest.errors import UnsupportedContentEncoding
from ingest.logs import escape_undecodable, redact
from ingest.settings import Settings

log = logging.getLogger(__name__)

#: Descriptors an edge needs besides client connections (and its database pool): the broker, the
#: listening socket, the event loop's own, standard streams, logs.
_FD_HEADROOM = 64
#: The longest request line aiohttp reads (its default, and Apache's).
REQUEST_LINE_LIMIT = 8190
#: The longest header line (name and value) aiohttp reads: 8 KiB. It differs from the request
#: line's limit on purpose: aiohttp's `LineTooLong` names only the limit it hit, which tells a
#: request line (414) from a header line (431).
HEADER_LINE_LIMIT = 8192
#: The most header lines a request may have (aiohttp's default).
HEADER_COUNT_LIMIT = 128
#: aiohttp's text for too many headers: it raises a plain `BadHttpMessage`, with no type of its own.
_TOO_MANY_HEADERS = "Too many headers received"
#: aiohttp stops reading a request body once twice this is buffered unread (the default is 64 KiB):
#: small, so that bodies waiting to be read, or drained after a refusal, hold little memory.
_READ_BUFFER = 16 * 1024
#: Seconds between two warnings that the connection cap is evicting idle connections.
_WARN_EVERY = 60.0


# ------------------------------------------------------------------------------ connection count


def connection_cap(settings: Settings) -> int:
    """Client connections this process may hold: `max_connections`, bounded by the open-file limit
    so that accepting never fails for want of a descriptor."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return settings.max_connections
    spare = soft - _FD_HEADROOM - settings.database_pool_size
    return max(1, min(settings.max_connections, spare))


def raise_open_file_limit(settings: Settings) -> None:
    """Raise the soft open-file limit as far as `max_connections` needs, up to the hard limit
    (as Go's runtime does): a default soft limit of 1024 should not be the connection cap."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = settings.max_connections + _FD_HEADROOM + settings.database_pool_size
    if soft == resource.RLIM_INFINITY or soft >= wanted:
        return
    raised = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if raised > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (raised, hard))


def install_connection_limits(app: web.Application, settings: Settings) -> None:
    """Make every runner of `app` serve it through an `EdgeServer`: `ingest serve`'s AppRunner
    and the tests' TestServer alike. aiohttp offers no public hook for the server class; every
    runner asks the application for it through `_make_handler`, so that is where we step in."""
    make_plain = app._make_handler

    def make_edge_server(**kwargs: Any) -> web.Server:
        return EdgeServer(make_plain(**kwargs), settings)

    app._make_handler = make_edge_server  # type: ignore[method-assign]


class EdgeServer(web.Server):
    """aiohttp's low-level server, building `EdgeConnection`s and capping how many are open."""

    def __init__(self, plain: web.Server, settings: Settings) -> None:
        kwargs = {
            **plain._kwargs,
            "keepalive_timeout": settings.idle_timeout,
            # aiohttp's access log prints raw request lines; ingest's own (`observe_requests`) is
            # redacted.
            "access_log": None,
            "read_bufsize": _READ_BUFFER,
            "max_line_size": REQUEST_LINE_LIMIT,
            "max_field_size": HEADER_LINE_LIMIT,
            "max_headers": HEADER_COUNT_LIMIT,
        }
        super().__init__(
            plain.request_handler,
            request_factory=plain.request_factory,
            handler_cancellation=plain.handler_cancellation,
            loop=plain._loop,
            **kwargs,
        )
        self.cap = connection_cap(settings)
        self.header_read_timeout = settings.header_read_timeout
        self.too_slow = _raw_error(
            408,
            "request_timeout",
            f"the request headers did not arrive within {settings.header_read_timeout:g}s",
        )
        #: Open connections, the least recently active first.
        self._by_activity: OrderedDict[EdgeConnection, None] = OrderedDict()
        self._warned_at = -_WARN_EVERY

    def __call__(self) -> RequestHandler:
        return EdgeConnection(self, loop=self._loop, **self._kwargs)

    def connection_made(self, handler: RequestHandler, transport: asyncio.Transport) -> None:
        super().connection_made(handler, transport)
        assert isinstance(handler, EdgeConnection)
        self._by_activity[handler] = None
        if len(self._by_activity) > self.cap:
            self._close_longest_idle()

    def connection_lost(self, handler: RequestHandler, exc: BaseException | None = None) -> None:
        super().connection_lost(handler, exc)
        assert isinstance(handler, EdgeConnection)
        self._by_activity.pop(handler, None)

    def active(self, connection: EdgeConnection) -> None:
        """`connection` just answered a request: it is the last to be closed for room."""
        if connection in self._by_activity:
            self._by_activity.move_to_end(connection)

    def _close_longest_idle(self) -> None:
        """Close the connection idle the longest. Busy ones met on the way move to the back, so
        each call does little work; the newest connection is idle, so one is always found."""
        for _ in range(len(self._by_activity)):
            connection, _ = self._by_activity.popitem(last=False)
            if connection.awaiting_request:
                connection.force_close()
                self._warn_at_cap()
                return
            self._by_activity[connection] = None

    def _warn_at_cap(self) -> None:
        now = time.monotonic()
        if now - self._warned_at >= _WARN_EVERY:
            self._warned_at = now
            log.warning(
                "%d client connections open, the most this edge holds: closing the longest idle",
                self.cap,
            )


class EdgeConnection(RequestHandler):
    """One client connection: aiohttp's, with a header deadline and errors answered in JSON."""

    __slots__ = ("_edge", "_header_deadline")

    def __init__(self, manager: EdgeServer, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._edge = manager
        self._header_deadline: asyncio.TimerHandle | None = None

    @property
    def awaiting_request(self) -> bool:
        """No request in progress: none parsed yet, or waiting for the next (headers may be partly
        in). aiohttp's own keep-alive timer uses the same notion of idle."""
        if self._messages:
            return False
        waiting = self._waiter is not None and not self._waiter.done()
        return waiting or self._request_count == 0

    def data_received(self, data: bytes) -> None:
        starts_request = bool(data) and self._header_deadline is None and self.awaiting_request
        super().data_received(data)
        if self._messages:  # a request line and its headers are in (or refused)
            self._cancel_header_deadline()
        elif starts_request and self.transport is not None:
            self._header_deadline = self._loop.call_later(
                self._edge.header_read_timeout, self._headers_too_slow
            )

    def connection_lost(self, exc: BaseException | None) -> None:
        self._cancel_header_deadline()
        super().connection_lost(exc)

    async def finish_response(
        self, request: BaseRequest, resp: web.StreamResponse, start_time: float | None
    ) -> tuple[web.StreamResponse, bool]:
        if isinstance(resp, web.HTTPException) and resp.status >= 400:
            # Raised by aiohttp outside the app's middlewares (an unknown `Expect`, say). Its text
            # may quote the request (`Unknown Expect: …`): only the reason phrase goes back.
            code = resp.reason.lower().replace(" ", "_")
            resp = error_response(resp.status, code, resp.reason)
        try:
            return await super().finish_response(request, resp, start_time)
        finally:
            self._edge.active(self)

    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        """A request aiohttp could not parse or serve: one redacted log line, a JSON answer."""
        status, code, text, headers = _problem(status, exc)
        self._log_error(request, status, exc)
        if request.writer.output_size > 0:
            raise ConnectionError("the response is already under way; the connection is broken")
        response = error_response(status, code, text, headers)
        response.force_close()
        return response

    def _log_error(self, request: BaseRequest, status: int, exc: BaseException | None) -> None:
        if not isinstance(exc, HttpProcessingError):
            log.error("unhandled error serving a request (%d)", status, exc_info=exc)
            return
        # Scanners and TLS clients on the plain port send no HTTP at all: not worth a line each.
        level = (
            logging.DEBUG
            if isinstance(exc, BadHttpMethod) and self._request_count == 1
            else logging.INFO
        )
        detail = redact(escape_undecodable(f"{type(exc).__name__}: {exc.message}"))[:300]
        log.log(level, "malformed request from %s answered %d: %s", request.remote, status, detail)

    def _headers_too_slow(self) -> None:
        self._header_deadline = None
        if self.transport is None or not self.awaiting_request:
            return
        log.info(
            "closed a connection from %s: its request headers took over %gs",
            _host(self.peername),
            self._edge.header_read_timeout,
        )
        self.transport.write(self._edge.too_slow)
        self.force_close()

    def _cancel_header_deadline(self) -> None:
        if self._header_deadline is not None:
            self._header_deadline.cancel()
            self._header_deadline = None


def _problem(status: int, exc: BaseException | None) -> tuple[int, str, str, dict[str, str]]:
    """Status, error code, message and headers for what aiohttp's server refused."""
    if isinstance(exc, ContentEncodingError):
        refusal = UnsupportedContentEncoding()
        accepted = {"Accept-Encoding": ", ".join(refusal.accepted)}
        return 415, "unsupported_content_encoding", str(refusal), accepted
    if isinstance(exc, LineTooLong) and exc.args[1] == HEADER_LINE_LIMIT:
        message = f"a header line is longer than {HEADER_LINE_LIMIT} bytes"
        return 431, "request_header_fields_too_large", message, {}
    if isinstance(exc, LineTooLong):
        message = f"the request line is longer than {REQUEST_LINE_LIMIT} bytes"
        return 414, "uri_too_long", message, {}
    if type(exc) is BadHttpMessage and exc.message == _TOO_MANY_HEADERS:
        message = f"the request has more than {HEADER_COUNT_LIMIT} header lines"
        return 431, "request_header_fields_too_large", message, {}
    if isinstance(exc, HttpProcessingError):
        return 400, "bad_request", "the request is not valid HTTP/1.1", {}
    if status == 504:
        return 504, "timeout", "the server did not answer in time", {}
    if status >= 500:
        return 500, "internal_error", "the server failed; the error is logged", {}
    phrase = HTTPStatus(status).phrase
    return status, phrase.lower().replace(" ", "_"), phrase, {}


def _raw_error(status: int, code: str, message: str) -> bytes:
    """A whole HTTP/1.1 error response, for connections that have no request to answer."""
    error: Error = {"error": code, "message": message}
    body = orjson.dumps(error)
    head = (
        f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    )
    return head.encode() + body


def _host(peername: Any) -> str:
    return str(peername[0]) if isinstance(peername, tuple) else str(peername)
