"""The admin routes of the ledger of rejections (SPEC §8), as `ingest.edge.routes` declares every
route; `ingest.edge.routes` lists them in its table."""

from __future__ import annotations

from ingest.edge import rejections_admin
from ingest.edge.documents import Accepted, Error, Handshake, Ignored, Task, ValidationErrors
from ingest.edge.filters import InvalidFilter
from ingest.edge.ledger import RATE_LIMITED_EVERY, RECORD_BURST, RECORD_RATE
from ingest.edge.openapi_shared import (
    ADMIN_ANSWERS,
    ADMIN_DISABLED,
    DEAD_LETTERED,
    LINK,
    LOCATION,
    PAGE_CURSOR,
    RATE_LIMITED,
    UNAVAILABLE,
    WWW_AUTHENTICATE,
    X_NEXT_CURSOR,
)
from ingest.edge.openapi_terms import Answer, Operation, Parameter, Route, failure
from ingest.errors import Conflict, InvalidSignature, MalformedBody, NotFound, Unauthorized
from ingest.rejections import DEFAULT_LIMIT, MAX_LIMIT, PAGE_BODY_BYTES, RejectionDocument
from ingest.workflows import LIMIT

REJECTIONS = "/api/v1/admin/rejections"
REPLAY = "/api/v1/admin/rejections/{rejection_id}/replay"
_PAGE_MIB = PAGE_BODY_BYTES // (1024 * 1024)


def _filter(name: str, description: str, schema: dict[str, object]) -> Parameter:
    return Parameter(f"Rejections{name.title()}", name, "query", description, schema)


_FILTERS = (
    _filter("workflow", "Only rejections of this workflow (its public id).", {"type": "string"}),
    _filter("source", "Only deliveries to this source (its public id).", {"type": "string"}),
    _filter("status", "Only this status.", {"type": "integer", "minimum": 400, "maximum": 499}),
    _filter(
        "since",
        "Only rejections from this moment on (ISO 8601; UTC when it names no offset).",
        {"type": "string", "format": "date-time"},
    ),
    Parameter(
        "RejectionsLimit",
        LIMIT,
        "query",
        f"Rejections per page at most: a page also ends once its bodies pass {_PAGE_MIB} MiB.",
        {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": DEFAULT_LIMIT},
    ),
    PAGE_CURSOR,
)
REJECTION_ID = Parameter(
    "RejectionId",
    "rejection_id",
    "path",
    "The rejection's `id`, as the list shows it.",
    {"type": "string", "pattern": "^[0-9]{1,18}$"},
)

_LIST = Operation(
    "listRejections",
    "admin",
    "List rejections",
    "Every 4xx a task write or a hook delivery was answered with (except an unknown token or "
    "source id), newest first, one page at a time: the route (never the token), the workflow or "
    "source, the status and error, the headers with credentials and signatures redacted, and "
    "the first 64 KiB of the body. A page holds `limit` rejections, fewer once their bodies pass "
    f"{_PAGE_MIB} MiB (the cursor goes on from there). Under a flood each edge records a sample: "
    f"per workflow or source a burst of {RECORD_BURST}, then {RECORD_RATE:g} a second, and a "
    f"`429` once per {RATE_LIMITED_EVERY:g} seconds; `unrecorded_before` says how many it left "
    "out before a recorded one. Kept `INGEST_REJECTION_RETENTION`.",
    (
        Answer(
            200,
            "One page of rejections.",
            list[RejectionDocument],
            {"Link": LINK, "X-Next-Cursor": X_NEXT_CURSOR},
        ),
        failure(
            "A filter this list does not have, a value it cannot hold, a bad `limit` or a cursor "
            "this service did not hand out",
            InvalidFilter,
        ),
        *ADMIN_ANSWERS,
    ),
    _FILTERS,
    admin=True,
)

_REPLAY = Operation(
    "replayRejection",
    "admin",
    "Replay a rejected hook delivery",
    "Runs the delivery again through its source as it is now (after a mapping or a secret was "
    "fixed): verified as of when it arrived, with the signature headers the ledger kept (never "
    "shown), filtered, mapped and submitted; answers what the hook route answers. A replay is "
    "keyed by the delivery id (by the rejection when the sender gave none; by the delivery id "
    "and a replay marker when a worker answered that id already, so every rejection of one "
    "delivery replays as one request), so however often it is sent it has one effect and the "
    "same answer or status URL. Replays are not recorded as rejections.",
    (
        Answer(
            200,
            'The filter left the delivery out (`{"status": "ignored"}`), a handshake was '
            "answered, or (`respond: sync`) the task was updated.",
            Ignored | Handshake | Task,
        ),
        Answer(201, "(`respond: sync`) The task was created.", Task),
        Answer(
            202,
            "The broker holds the delivery's task request: its result will be at the status URL.",
            Accepted,
            {"Location": LOCATION},
        ),
        failure("The delivery is not a JSON object", MalformedBody),
        failure(
            "The admin token is missing or wrong (`unauthorized`), or the delivery still does "
            "not verify (`invalid_signature`)",
            Unauthorized,
            InvalidSignature,
            headers={"WWW-Authenticate": WWW_AUTHENTICATE},
        ),
        ADMIN_DISABLED,
        failure("No rejection has this id", NotFound),
        failure(
            "It cannot be replayed: not a hook delivery, its body was never read or was over "
            "64 KiB, or its source is gone",
            Conflict,
        ),
        Answer(
            422,
            "The filter or map still cannot be applied (`mapping_failed`), or (`respond: sync`) "
            "the mapped task is invalid.",
            ValidationErrors | Error,
        ),
        RATE_LIMITED,
        DEAD_LETTERED,
        UNAVAILABLE,
    ),
    (REJECTION_ID,),
    admin=True,
)

REJECTION_ROUTES = (
    Route("GET", REJECTIONS, rejections_admin.list_rejections, _LIST),
    Route("POST", REPLAY, rejections_admin.replay_rejection, _REPLAY),
)
