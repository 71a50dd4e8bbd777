"""Bytes of request bodies in flight at an edge process, bounded.

A request holds the bytes of its body against one budget per process as they arrive (each chunk
`read_body` takes from the connection; a body already buffered whole, its size) and until it is
handled (parsed, published and waited on). A request that reads no body holds nothing, and one
whose body has not arrived yet holds nothing either: a client that stalls its uploads cannot
starve anyone else of the budget. A chunk that does not fit while other requests hold bytes is
refused at once, with 503 and `Retry-After`, and the request lets go of what it held: the edge's
memory stays bounded however many clients send at once. A body costs a few times its size while
it is in flight (raw bytes, text, broker frames), so the budget is a fraction of the memory it
protects; what aiohttp reads ahead of the handler on each connection is bounded by its read
buffer (see `ingest.edge.connections`).
"""

from __future__ import annotations

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from ingest.errors import Unavailable


class BodyBudget:
    """Bytes of request bodies an edge process holds at once."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.held = 0

    def hold(self) -> Hold:
        """A new request's share of the budget, empty until its body arrives."""
        return Hold(self)


class Hold:
    """One request's share of the budget, given back when the request is done."""

    __slots__ = ("_budget", "size")

    def __init__(self, budget: BodyBudget) -> None:
        self._budget = budget
        self.size = 0

    def charge(self, size: int) -> None:
        """`size` more bytes of the body arrived: hold them too, or raise `Unavailable` when they
        do not fit while other requests hold bytes. A body alone always fits, so no body within
        the body limit is refused for ever."""
        budget = self._budget
        others = budget.held - self.size
        if size and others and budget.held + size > budget.capacity:
            raise Unavailable("the edge is reading as many request bodies as it may; retry shortly")
        budget.held += size
        self.size += size

    def release(self) -> None:
        self._budget.held -= self.size
        self.size = 0


#: The edge's budget (for metrics and tests to read).
BODY_BUDGET = web.AppKey("body_budget", BodyBudget)
#: The request's share of the budget (absent where no `hold_bodies` middleware runs).
BODY_HOLD = web.RequestKey("body_hold", Hold)


def charge_body(request: web.Request, size: int) -> None:
    """`size` more bytes of the request's body have been read: hold them against the budget."""
    hold = request.get(BODY_HOLD)
    if hold is not None:
        hold.charge(size)


def hold_bodies(budget: BodyBudget) -> Middleware:
    """A middleware giving each request a share of `budget` for its body while it is handled."""

    @web.middleware
    async def hold_body(request: web.Request, handler: Handler) -> web.StreamResponse:
        hold = budget.hold()
        request[BODY_HOLD] = hold
        try:
            return await handler(request)
        finally:
            hold.release()

    return hold_body
