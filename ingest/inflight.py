"""Bytes of request bodies in flight at an edge process, bounded.

Each request with a body holds its size against one budget per process for as long as it is
handled (its body is read, parsed, published and waited on in that time): its Content-Length, or
the body limit while the size is unknown (chunked) or may grow (compressed), settled to the real
size once the body is read. A request that does not fit is refused at once, with 503 and
`Retry-After`, before its body is read: the edge's memory stays bounded however many clients send
at once. A body costs a few times its size while it is in flight (raw bytes, text, broker frames),
so the budget is a fraction of the memory it protects.
"""

from __future__ import annotations

from aiohttp import hdrs, web
from aiohttp.typedefs import Handler, Middleware

from ingest.errors import Unavailable


class BodyBudget:
    """Bytes of request bodies an edge process holds at once."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.held = 0

    def hold(self, size: int) -> Hold:
        """Hold `size` bytes, or raise `Unavailable` when they do not fit. One body always fits
        when nothing else is held, so no body within the body limit is refused for ever."""
        if size and self.held and self.held + size > self.capacity:
            raise Unavailable("the edge is reading as many request bodies as it may; retry shortly")
        self.held += size
        return Hold(self, size)


class Hold:
    """One request's share of the budget, given back when the request is done."""

    __slots__ = ("_budget", "size")

    def __init__(self, budget: BodyBudget, size: int) -> None:
        self._budget = budget
        self.size = size

    def settle(self, size: int) -> None:
        """The body turned out to be `size` bytes: give back what was held beyond that."""
        if size < self.size:
            self._budget.held -= self.size - size
            self.size = size

    def release(self) -> None:
        self._budget.held -= self.size
        self.size = 0


#: The edge's budget (for metrics and tests to read).
BODY_BUDGET = web.AppKey("body_budget", BodyBudget)
#: The hold of the request's body on the budget (absent where no `hold_bodies` middleware runs).
BODY_HOLD = web.RequestKey("body_hold", Hold)


def settle_body(request: web.Request, size: int) -> None:
    """The request's body has been read and is `size` bytes: hold no more than that."""
    hold = request.get(BODY_HOLD)
    if hold is not None:
        hold.settle(size)


def body_size(request: web.Request, limit: int) -> int:
    """Bytes a request's body may take once read: its Content-Length when sent as is, the body
    limit when it is chunked or compressed (decompressing makes it grow)."""
    if not request.body_exists:
        return 0
    declared = request.content_length
    coding = request.headers.get(hdrs.CONTENT_ENCODING, "identity").strip().lower()
    if declared is None or coding not in ("", "identity"):
        return limit
    return min(declared, limit)


def hold_bodies(budget: BodyBudget, limit: int) -> Middleware:
    """A middleware holding each request's body against `budget` while the request is handled;
    `limit` is the body limit (what a body of unknown size may grow to)."""

    @web.middleware
    async def hold_body(request: web.Request, handler: Handler) -> web.StreamResponse:
        hold = budget.hold(body_size(request, limit))
        request[BODY_HOLD] = hold
        try:
            return await handler(request)
        finally:
            hold.release()

    return hold_body
