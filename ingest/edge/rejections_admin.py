"""The admin API of the ledger of rejections (SPEC §8), behind the admin token: rejections listed
newest first and filtered, and a rejected hook delivery replayed once its source is fixed."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import TypeVar

from aiohttp import web

from ingest import rejections, store
from ingest.edge import hooks
from ingest.edge.admin import require_admin
from ingest.edge.cursors import Cursors, query_digest
from ingest.edge.filters import InvalidFilter
from ingest.edge.keys import EDGE, SETTINGS, WORKFLOW
from ingest.edge.ledger import HOOK_DELIVERY
from ingest.edge.responses import json_response
from ingest.errors import Conflict, NotFound
from ingest.rejections import REDACTED, Rejection, RejectionFilter
from ingest.sources import MAX_PUBLIC_ID_CHARS
from ingest.values import has_lone_surrogate
from ingest.workflows import CURSOR, LIMIT

T = TypeVar("T")
UNKNOWN = "no rejection has this id"
#: What list cursors of the ledger are bound to in place of a workflow: no workflow has it.
_LEDGER = -1
_FILTERS = ("workflow", "source", "status", "since", LIMIT, CURSOR)


async def list_rejections(request: web.Request) -> web.Response:
    """One page of rejections, newest first (`limit` of them, fewer once their bodies pass
    `rejections.PAGE_BODY_BYTES`); the next page is in `Link` and `X-Next-Cursor`."""
    require_admin(request)
    settings, edge = request.app[SETTINGS], request.app[EDGE]
    query = list(request.query.items())
    wanted, digest = rejection_filter(query, edge.cursors)
    page = await rejections.rejection_page(edge.pool, wanted)
    headers = {}
    if page.more:
        cursor = edge.cursors.seal(page.rejections[-1].id, _LEDGER, digest)
        kept = [(k, v) for k, v in query if k != CURSOR]
        next_url = f"{settings.base_url}{request.rel_url.with_query([*kept, (CURSOR, cursor)])}"
        headers = {"Link": f'<{next_url}>; rel="next"', "X-Next-Cursor": cursor}
    return json_response([rejection.document() for rejection in page.rejections], headers=headers)


def rejection_filter(
    query: list[tuple[str, str]], cursors: Cursors
) -> tuple[RejectionFilter, bytes]:
    """The filter a list query asks for, and the digest its cursors are bound to; InvalidFilter
    names what is wrong."""
    given: dict[str, str] = {}
    for name, value in query:
        if name not in _FILTERS:
            raise InvalidFilter(
                f"{name!r} is not a filter of rejections (use {', '.join(_FILTERS)})"
            )
        if name in given:
            raise InvalidFilter(f"give {name!r} once")
        if "\x00" in value or has_lone_surrogate(value):
            raise InvalidFilter(f"the value of {name!r} is not text")
        given[name] = value
    digest = query_digest([(k, v) for k, v in query if k not in (LIMIT, CURSOR)])
    try:
        wanted = RejectionFilter(
            workflow=_public_id(given, "workflow"),
            source=_public_id(given, "source"),
            status=_parsed(given, "status", rejections.parse_status),
            since=_parsed(given, "since", rejections.parse_since),
            limit=_parsed(given, LIMIT, rejections.parse_limit) or rejections.DEFAULT_LIMIT,
        )
    except ValueError as exc:
        raise InvalidFilter(str(exc)) from None
    if CURSOR in given:
        before = cursors.unseal(given[CURSOR], _LEDGER, digest)
        if before is None:
            raise InvalidFilter("cursor is not one this service handed out for these filters")
        wanted = dataclasses.replace(wanted, before=before)
    return wanted, digest


def _public_id(given: dict[str, str], name: str) -> str | None:
    value = given.get(name)
    if value is not None and not 0 < len(value) <= MAX_PUBLIC_ID_CHARS:
        raise InvalidFilter(f"{name} must be a {name}'s public id")
    return value


def _parsed(given: dict[str, str], name: str, parse: Callable[[str], T]) -> T | None:
    return None if name not in given else parse(given[name])


async def replay_rejection(request: web.Request) -> web.Response:
    """Run a rejected hook delivery again through its source as it is now, answering what the
    hook route answers. Keyed by the delivery id (or by the rejection), so however often it is
    clicked it has one effect, and every click gets the same answer or status URL (`Replay`)."""
    require_admin(request)
    pool = request.app[EDGE].pool
    rejection = await rejections.rejection_by_id(pool, _rejection_id(request))
    if rejection is None:
        raise NotFound(UNKNOWN)
    delivery = replayable(rejection)
    # Read now, not from the edge's cache: the source was probably fixed a moment ago.
    source = await store.source_by_public_id(pool, rejection.source or "")
    workflow = await store.workflow_by_id(pool, source.workflow_id) if source else None
    if source is None or workflow is None:
        raise Conflict("this delivery's source no longer exists")
    request[WORKFLOW] = workflow.public_id
    return await hooks.deliver(request, source, workflow, delivery)


def replayable(rejection: Rejection) -> hooks.Delivery:
    """The delivery a rejection recorded, as it arrived; Conflict says why it cannot be replayed."""
    if rejection.route != HOOK_DELIVERY:
        raise Conflict(f"only hook deliveries can be replayed; this was {rejection.route}")
    if rejection.body is None:
        raise Conflict(
            f"this delivery's body was never read (it was refused first: {rejection.error}), "
            "so there is nothing to replay"
        )
    if rejection.body_truncated:
        raise Conflict(
            f"this delivery's body was larger than {rejections.BODY_LIMIT} bytes and only its "
            "start was kept, so it cannot be replayed"
        )
    shown = {name: value for name, value in rejection.headers.items() if value != REDACTED}
    return hooks.Delivery(
        headers={**shown, **(rejection.signed_headers or {})},
        body=rejection.body,
        at=rejection.at.timestamp(),
        replay_key=f"\x00rejection/{rejection.id}",
        id_spent=rejection.reached_worker,
    )


def _rejection_id(request: web.Request) -> int:
    text = request.match_info["rejection_id"]
    if not (text.isascii() and text.isdigit() and len(text) <= 18):
        raise NotFound(UNKNOWN)
    return int(text)
