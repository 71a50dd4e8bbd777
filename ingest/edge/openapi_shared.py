"""What several routes of `ingest.edge.routes` say alike: their parameters, response headers, and
the answers they share (an unknown token, a body the edge cannot read, the admin token, …).

Bounds come from the constants the code checks them with; statuses and codes of errors from the
middleware (`ingest.edge.openapi_terms.failure`); worker answers from their bodies in
`ingest.results`.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import orjson

from ingest.batches import ITEM_NOT_AN_OBJECT, batch_body
from ingest.edge import openapi_examples as examples
from ingest.edge.documents import (
    Accepted,
    BatchResults,
    Error,
    TaskBatchPayload,
    TaskPayload,
    ValidationErrors,
)
from ingest.edge.filters import DEFAULT_LIMIT, MAX_LIMIT
from ingest.edge.openapi_terms import Answer, Header, Parameter, RequestBody, Sample, failure
from ingest.edge.writes import MAX_IDEMPOTENCY_KEY_CHARS
from ingest.errors import (
    BodyTimeout,
    BodyTooLarge,
    Forbidden,
    InvalidHeader,
    MalformedBody,
    NotFound,
    RateLimited,
    TooManyItems,
    Unauthorized,
    Unavailable,
    UnsupportedContentEncoding,
    UnsupportedMediaType,
)
from ingest.results import (
    DEAD_LETTERED_BODY,
    DEAD_STATUS,
    IDEMPOTENCY_KEY_REUSED_BODY,
    UNSTORABLE_VALUE_BODY,
    error_body,
)
from ingest.workflows import CURSOR, LIMIT


def code_of(body: str) -> str:
    """The `error` of a worker's stored answer."""
    code: Any = orjson.loads(body)["error"]
    return str(code)


# ------------------------------------------------------------------------------------ parameters


def _in_path(component: str, name: str, description: str, **extra: Any) -> Parameter:
    return Parameter(
        component, name, "path", description, {"type": "string", "minLength": 1}, extra
    )


TOKEN = _in_path(
    "Token", "token", "The workflow's secret token (every unknown token answers the same 404)."
)
TASK_UNIQUE_ID = _in_path(
    "TaskUniqueId",
    "task_id",
    "The task's Unique ID value (numbers compare numerically), or its task id (the last segment "
    "of its Task URL) where the workflow has no Unique ID.",
    example="42",
)
REQUEST_ID = _in_path("RequestId", "request_id", "The id from a 202 answer's `id` or status URL.")
WORKFLOW_ID = _in_path("WorkflowId", "workflow_id", "The workflow's public id (not its token).")
TASK_PUBLIC_ID = _in_path("TaskPublicId", "task_id", "The task's unguessable id from its Task URL.")
PREFER = Parameter(
    "Prefer",
    "Prefer",
    "header",
    "RFC 7240. `respond-async` answers 202 at once; `wait=N` waits at most N seconds (never "
    "longer than the server's budget). Other preferences are ignored.",
    {"type": "string"},
    {"examples": {"async": {"value": "respond-async"}, "wait": {"value": "wait=2"}}},
)
#: Every operation takes it (`ingest.edge.middleware.observe_requests`).
REQUEST_ID_HEADER = Parameter(
    "RequestIdHeader",
    "X-Request-Id",
    "header",
    "Correlates the request with the access log; its first 64 characters are kept and sent "
    "back. A fresh id is made when absent.",
    {"type": "string"},
)
IDEMPOTENCY_KEY = Parameter(
    "IdempotencyKey",
    "Idempotency-Key",
    "header",
    f"1 to {MAX_IDEMPOTENCY_KEY_CHARS} printable ASCII characters, optionally in double quotes. "
    "A retry with the same key and the same request gets the first answer again; the same key "
    f"with a different request is a 422 `{code_of(IDEMPOTENCY_KEY_REUSED_BODY)}`.",
    {
        "type": "string",
        "minLength": 1,
        "maxLength": MAX_IDEMPOTENCY_KEY_CHARS + 2,
        # What `ingest.edge.writes._idempotency_key` accepts: quoted or not, the key itself is
        # 1 to MAX_IDEMPOTENCY_KEY_CHARS printable ASCII characters.
        "pattern": (
            f'^(?:"[ -~]{{1,{MAX_IDEMPOTENCY_KEY_CHARS}}}"|[ -~]{{1,{MAX_IDEMPOTENCY_KEY_CHARS}}})$'
        ),
    },
)
PAGE_SIZE = Parameter(
    "Limit",
    LIMIT,
    "query",
    f"Tasks per page (a field named `{LIMIT}` filters instead).",
    {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": DEFAULT_LIMIT},
    {"example": 10},
)
PAGE_CURSOR = Parameter(
    "Cursor",
    CURSOR,
    "query",
    "Where the page starts: the `X-Next-Cursor` of the previous page.",
    {"type": "string"},
)
FILTERS = Parameter(
    "Filters",
    "filters",
    "query",
    "Any number of `<field name>=<value>` filters (e.g. `?Stage=Won&Company%20ID=42`): a field "
    "of the workflow, `Stage` or `Assigned To`. All must hold; an empty value matches tasks "
    "where the field is unset; values compare as the field's type. A name that is no field, or "
    "a value the field cannot hold, is a 400.",
    {"type": "object", "additionalProperties": {"type": "string"}},
    {"style": "form", "explode": True, "example": {"Stage": "In Progress"}},
)

# --------------------------------------------------------------------------------------- headers

#: Every answer carries it (`ingest.edge.middleware.observe_requests`).
X_REQUEST_ID = Header(
    "XRequestId",
    "The request's id (the client's `X-Request-Id`, or a fresh one), as in the access log.",
    {"type": "string"},
)
RETRY_AFTER = Header("RetryAfter", "Seconds to wait before retrying.", {"type": "string"})
LOCATION = Header("Location", "The status URL of the request.", {"type": "string", "format": "uri"})
PREFERENCE_APPLIED = Header(
    "PreferenceApplied",
    "`respond-async` when the request asked for it.",
    {"const": "respond-async"},
    required=False,
)
LINK = Header(
    "Link",
    'The next page: `<URL>; rel="next"` (absent on the last page).',
    {"type": "string"},
    required=False,
)
X_NEXT_CURSOR = Header(
    "XNextCursor",
    f"The next page's `{CURSOR}` (absent on the last page).",
    {"type": "string"},
    required=False,
)
WWW_AUTHENTICATE = Header(
    "WWWAuthenticate",
    'The challenge, `Bearer realm="ingest-admin"`.',
    {"type": "string"},
    required=False,
)

# ---------------------------------------------------------------------------------------- answers

UNKNOWN_TOKEN = replace(
    failure("No workflow has this token (every wrong token gets the same answer)", NotFound),
    component="UnknownToken",
)
UNAVAILABLE = replace(
    failure(
        "The database or the broker cannot take the request now, or the edge holds as many "
        "request-body bytes as `INGEST_MAX_BODY_BYTES_IN_FLIGHT` allows; retry after "
        "`Retry-After`",
        Unavailable,
        headers={"Retry-After": RETRY_AFTER},
    ),
    component="Unavailable",
)
RATE_LIMITED = replace(
    failure(
        "The workflow sends faster than `INGEST_RATE_LIMIT` allows",
        RateLimited,
        headers={"Retry-After": RETRY_AFTER},
    ),
    component="RateLimited",
)
TOO_LARGE = replace(
    failure("The body is larger than `INGEST_MAX_BODY_BYTES`", BodyTooLarge),
    component="TooLarge",
)
UNSUPPORTED_MEDIA_TYPE = replace(
    failure(
        "The body is not JSON (`application/json` or `application/*+json`, UTF-8), or its "
        "`Content-Encoding` is not one the edge decodes (gzip, deflate; see `Accept-Encoding`)",
        UnsupportedMediaType,
        UnsupportedContentEncoding,
    ),
    component="UnsupportedMediaType",
)
BODY_TIMEOUT = replace(
    failure(
        "The body did not arrive within `INGEST_BODY_READ_TIMEOUT` seconds (or the headers "
        "within `INGEST_HEADER_READ_TIMEOUT`, answered before any route)",
        BodyTimeout,
    ),
    component="BodyTimeout",
)
UNAUTHORIZED = replace(
    failure(
        "The bearer token is missing or wrong",
        Unauthorized,
        headers={"WWW-Authenticate": WWW_AUTHENTICATE},
    ),
    component="Unauthorized",
)
ADMIN_DISABLED = replace(
    failure("The admin API is closed: `INGEST_ADMIN_TOKEN` is unset", Forbidden),
    component="AdminDisabled",
)
DEAD_LETTERED = Answer(
    DEAD_STATUS,
    "A worker could not process this request (a failure of its own, not of the requests beside "
    "it) and dead-lettered it alone (its status URL says `outcome: dead`); a waiting client or an "
    "Idempotency-Key retry gets this answer until an operator replays it",
    Error,
    codes=(code_of(DEAD_LETTERED_BODY),),
    component="DeadLettered",
)
ACCEPTED = Answer(
    202,
    "The wait budget ran out (or `Prefer: respond-async`): the request is queued and its result "
    "will be at the status URL.",
    Accepted,
    {"Location": LOCATION, "Preference-Applied": PREFERENCE_APPLIED},
    example=examples.accepted_request,
)
#: Why a body is not a JSON object.
NOT_AN_OBJECT = (
    "The body is empty, not JSON, not a JSON object, not UTF-8, nested more than 64 levels or "
    "contains `\\u0000`"
)
MALFORMED_TASK_REQUEST = failure(
    f"{NOT_AN_OBJECT}; or the Idempotency-Key header is malformed", MalformedBody, InvalidHeader
)
IDEMPOTENCY_KEY_REUSED = Answer(
    422,
    "The Idempotency-Key was already used with a different request",
    Error,
    codes=(code_of(IDEMPOTENCY_KEY_REUSED_BODY),),
)
TASK_INVALID = Answer(
    422,
    "The task is invalid (every problem at once; at most 20 unknown keys are named, the rest "
    "counted under `base`), the Idempotency-Key was already used with a different request "
    f"(`error`: `{code_of(IDEMPOTENCY_KEY_REUSED_BODY)}`), or a value is beyond what the "
    f"database stores (`error`: `{code_of(UNSTORABLE_VALUE_BODY)}`).",
    ValidationErrors | Error,
    example=examples.invalid_task,
)

#: What every task write (POST, PUT, DELETE) can answer, whatever its body; 404 is each one's own.
WRITE_ANSWERS = (ACCEPTED, RATE_LIMITED, DEAD_LETTERED, UNAVAILABLE)
#: What reading a body can answer, besides a malformed body's 400.
BODY_ANSWERS = (BODY_TIMEOUT, TOO_LARGE, UNSUPPORTED_MEDIA_TYPE)
#: What every admin route can answer.
ADMIN_ANSWERS = (UNAUTHORIZED, ADMIN_DISABLED, UNAVAILABLE)

TASK_BODY = RequestBody(
    TaskPayload, "The task's fields by name; a missing Content-Type is taken as JSON."
)

# ----------------------------------------------------------------------------------- batch import


def batch_results(sample: Sample) -> BatchResults:
    """The answer to a batch of three items: the sample task, a bad one, and a number."""
    answers = [
        (201, orjson.dumps(examples.task(sample)).decode()),
        (422, orjson.dumps(examples.invalid_task(sample)).decode()),
        (400, error_body("malformed_body", ITEM_NOT_AN_OBJECT)),
    ]
    results: BatchResults = orjson.loads(batch_body(answers))
    return results


BATCH_BODY = RequestBody(
    TaskBatchPayload, "A JSON array of task bodies; a missing Content-Type is taken as JSON."
)
#: What a batch import can answer.
BATCH_ANSWERS = (
    Answer(
        200,
        "The batch was applied: `results` holds each item's status (201, 200, 400, 422) and body, "
        "in the items' order.",
        BatchResults,
        example=batch_results,
    ),
    failure(
        "The body is empty, not JSON, not a JSON array or an empty one, not UTF-8, or an item is "
        "nested more than 64 levels or contains `\\u0000` (the message names the item); or the "
        "Idempotency-Key header is malformed",
        MalformedBody,
        InvalidHeader,
    ),
    Answer(
        422,
        "The Idempotency-Key was already used with a different request, or a value of an item is "
        "beyond what the database stores: no item was applied",
        Error,
        codes=(code_of(IDEMPOTENCY_KEY_REUSED_BODY), code_of(UNSTORABLE_VALUE_BODY)),
    ),
    UNKNOWN_TOKEN,
    *WRITE_ANSWERS,
    BODY_TIMEOUT,
    failure(
        "The body is larger than `INGEST_MAX_BODY_BYTES`, or holds more items than "
        "`INGEST_BATCH_MAX_ITEMS`",
        BodyTooLarge,
        TooManyItems,
    ),
    UNSUPPORTED_MEDIA_TYPE,
)
