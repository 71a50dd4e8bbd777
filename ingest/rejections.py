"""The ledger of rejections (SPEC §8): what a task or hook route refused, kept so an operator can
find it (`GET /api/v1/admin/rejections`, `ingest rejections list`) and replay a hook delivery
once its source is fixed.

The edge hands over a `Refused` (references only, taken on the request path) and its ledger
(`ingest.edge.ledger`) turns it into a row here, off that path: secrets redacted, the body cut at
64 KiB, the cause read from the answer. Headers are sorted three ways:

- a credential (`Authorization`, cookies, anything named like a token, key or password) is shown
  as `<redacted>` and kept nowhere;
- a signature (any header named like one, and the header a source's `hmac` scheme reads) is shown
  as `<redacted>` and kept, for hook deliveries only, in a column the API never shows: a replay
  verifies the delivery again with it;
- any other header is shown as sent (long values cut).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any

import orjson
from pydantic import Field
from typing_extensions import TypedDict  # pydantic reads typing's only from Python 3.12

from ingest.logs import escape_undecodable
from ingest.store import Connection, Pool

#: How much of a body is kept (SPEC §8).
BODY_LIMIT = 64 * 1024
REDACTED = "<redacted>"
#: Longest header value shown; signature values kept for a replay are kept whole up to this.
MAX_SHOWN_VALUE_CHARS = 1024
MAX_KEPT_VALUE_CHARS = 8192
#: Signature headers kept for a replay at most (a scheme reads one or two).
MAX_KEPT_HEADERS = 16
MAX_MESSAGE_CHARS = 2000
MAX_ERROR_CHARS = 64
DEFAULT_LIMIT = 100
MAX_LIMIT = 1000

#: Names (and parts of names) of headers that carry a person's or client's credentials.
_CREDENTIALS = frozenset(["authorization", "proxy-authorization", "cookie", "set-cookie"])
_CREDENTIAL_WORDS = ("token", "secret", "password", "passwd", "api-key", "apikey", "auth", "cookie")
#: Parts of names of headers that carry a signature of the delivery.
_SIGNATURE_WORDS = ("signature", "hmac")


@dataclass(frozen=True, slots=True)
class Refused:
    """One refused request as the edge saw it: taken on the request path, so only references
    and cheap values; `ingest.edge.ledger` makes a row of it later."""

    at: float
    route: str
    status: int
    answer: bytes | None
    headers: Iterable[tuple[str, str]]
    #: The first BODY_LIMIT bytes of the body, None when it was never read; `body_size` bytes
    #: arrived in all.
    body: bytes | None
    body_size: int | None
    workflow: str | None
    #: A hook delivery's source (its row id), and the headers its scheme reads by name.
    source_id: int | None = None
    signature_headers: tuple[str, ...] = ()
    reached_worker: bool = False


@dataclass(frozen=True, slots=True)
class Row:
    """A rejection as stored."""

    at: datetime
    route: str
    workflow: str | None
    source_id: int | None
    status: int
    error: str
    message: str | None
    headers: dict[str, str]
    body: bytes | None
    body_size: int | None
    signed_headers: dict[str, str] | None
    reached_worker: bool


def row_of(refused: Refused) -> Row:
    """The stored form of a refused request: secrets redacted, its cause read from the answer."""
    shown, kept = sort_headers(refused.headers, refused.signature_headers)
    error, message = cause(refused.status, refused.answer)
    return Row(
        at=datetime.fromtimestamp(refused.at, UTC),
        route=refused.route,
        workflow=refused.workflow,
        source_id=refused.source_id,
        status=refused.status,
        error=error,
        message=message,
        headers=shown,
        body=refused.body,
        body_size=refused.body_size,
        signed_headers=kept if refused.source_id is not None else None,
        reached_worker=refused.reached_worker,
    )


def sort_headers(
    headers: Iterable[tuple[str, str]], signature_headers: Sequence[str] = ()
) -> tuple[dict[str, str], dict[str, str]]:
    """(what is shown, what a replay needs and is never shown), keyed by lower-case name; a header
    sent twice is joined with ", " as HTTP joins them."""
    signatures = {name.lower() for name in signature_headers}
    shown: dict[str, str] = {}
    kept: dict[str, str] = {}
    for name, value in headers:
        lowered = _text(name.lower(), 200)
        if lowered in signatures or _is_signature(lowered):
            if lowered in kept or len(kept) < MAX_KEPT_HEADERS:
                _add(kept, lowered, _text(value, MAX_KEPT_VALUE_CHARS))
            shown[lowered] = REDACTED
        elif _is_credential(lowered):
            shown[lowered] = REDACTED
        else:
            _add(shown, lowered, _text(value, MAX_SHOWN_VALUE_CHARS))
    return shown, kept


def _is_signature(name: str) -> bool:
    return any(word in name for word in _SIGNATURE_WORDS)


def _is_credential(name: str) -> bool:
    return name in _CREDENTIALS or any(word in name for word in _CREDENTIAL_WORDS)


def _add(headers: dict[str, str], name: str, value: str) -> None:
    headers[name] = f"{headers[name]}, {value}" if name in headers else value


def _text(text: str, limit: int) -> str:
    """`text` fit for a jsonb or text column: undecodable bytes and NUL escaped, cut at `limit`
    characters (marked)."""
    text = escape_undecodable(text).replace("\x00", "\\x00")
    return text if len(text) <= limit else text[:limit] + "…"


def cause(status: int, answer: bytes | None) -> tuple[str, str | None]:
    """The `error` code and message of an answer: `{"error", "message"}`, or Flowdash's
    `{"errors": {field: [messages]}}` (`invalid_task`, the problems as the message)."""
    try:
        value = orjson.loads(answer) if answer else None
    except orjson.JSONDecodeError:
        value = None
    if isinstance(value, dict):
        if isinstance(value.get("error"), str):
            message = value.get("message")
            shown = _text(message, MAX_MESSAGE_CHARS) if isinstance(message, str) else None
            return _text(value["error"], MAX_ERROR_CHARS), shown
        if isinstance(value.get("errors"), dict):
            return "invalid_task", _text(_problems(value["errors"]), MAX_MESSAGE_CHARS)
    return f"http_{status}", None


def error_code(status: int, answer: bytes | None) -> str:
    """The `error` code alone (what the edge's rejection counter is labelled with)."""
    return cause(status, answer)[0]


def _problems(errors: Mapping[str, Any]) -> str:
    parts = []
    for name, messages in errors.items():
        said = messages if isinstance(messages, list) else [messages]
        parts.append(f"{name}: {', '.join(str(m) for m in said)}")
    return "; ".join(parts)


# ------------------------------------------------------------------------------------- storing


async def insert(conn: Pool | Connection, rows: Sequence[Row]) -> None:
    """Store `rows` in one statement. A row whose workflow or source is gone keeps NULL there."""
    await conn.execute(
        "INSERT INTO rejections (at, route, workflow_id, source_id, status, error, message,"
        " headers, body, body_size, signed_headers, reached_worker)"
        " SELECT r.at, r.route, (SELECT id FROM workflows WHERE public_id = r.workflow),"
        "  (SELECT id FROM sources WHERE id = r.source), r.status, r.error, r.message,"
        "  r.headers::jsonb, r.body, r.body_size, r.signed::jsonb, r.reached"
        " FROM unnest($1::timestamptz[], $2::text[], $3::text[], $4::bigint[], $5::smallint[],"
        "  $6::text[], $7::text[], $8::text[], $9::bytea[], $10::integer[], $11::text[],"
        "  $12::boolean[])"
        " AS r(at, route, workflow, source, status, error, message, headers, body, body_size,"
        "  signed, reached)",
        [r.at for r in rows],
        [r.route for r in rows],
        [r.workflow for r in rows],
        [r.source_id for r in rows],
        [r.status for r in rows],
        [r.error for r in rows],
        [r.message for r in rows],
        [_json(r.headers) for r in rows],
        [r.body for r in rows],
        [r.body_size for r in rows],
        [_json(r.signed_headers) for r in rows],
        [r.reached_worker for r in rows],
    )


def _json(value: dict[str, str] | None) -> str | None:
    # Sent as text: the connection's jsonb codec would encode it as a JSON string.
    return None if value is None else orjson.dumps(value).decode()


# ------------------------------------------------------------------------------------- reading


class RejectionDocument(TypedDict):
    """A rejected request as the admin API and the CLI show it (secrets redacted)."""

    id: int
    at: Annotated[str, Field(json_schema_extra={"format": "date-time"})]
    route: Annotated[
        str, Field(description="Method and route pattern, e.g. `POST /api/v1/hooks/{source_id}`.")
    ]
    workflow: Annotated[str | None, Field(description="The workflow's public id.")]
    source: Annotated[str | None, Field(description="The source's public id (hook deliveries).")]
    status: Annotated[int, Field(ge=400, le=499)]
    error: Annotated[
        str,
        Field(
            description="The answer's `error` code (`invalid_task` for a task's field problems)."
        ),
    ]
    message: Annotated[str | None, Field(description="The answer's message, or the problems.")]
    headers: Annotated[
        dict[str, str],
        Field(
            description="The request's headers by lower-case name; credentials and signatures "
            "are `<redacted>`."
        ),
    ]
    body: Annotated[
        str | None,
        Field(description="The first 64 KiB of the body as text (null: it was never read)."),
    ]
    body_truncated: Annotated[bool, Field(description="More than 64 KiB arrived.")]


@dataclass(frozen=True, slots=True)
class Rejection:
    """A stored rejection, as read back."""

    id: int
    at: datetime
    route: str
    workflow: str | None
    source: str | None
    status: int
    error: str
    message: str | None
    headers: dict[str, str]
    body: bytes | None
    body_size: int | None
    signed_headers: dict[str, str] | None
    reached_worker: bool

    @property
    def body_truncated(self) -> bool:
        return self.body is not None and (self.body_size or 0) > len(self.body)

    def document(self) -> RejectionDocument:
        return {
            "id": self.id,
            "at": self.at.isoformat(),
            "route": self.route,
            "workflow": self.workflow,
            "source": self.source,
            "status": self.status,
            "error": self.error,
            "message": self.message,
            "headers": self.headers,
            "body": None if self.body is None else self.body.decode("utf-8", "replace"),
            "body_truncated": self.body_truncated,
        }


@dataclass(frozen=True, slots=True)
class RejectionFilter:
    """Which rejections a list shows: every condition given must hold; `before` is the id the
    page starts below (newest first)."""

    workflow: str | None = None
    source: str | None = None
    status: int | None = None
    since: datetime | None = None
    before: int | None = None
    limit: int = DEFAULT_LIMIT


def parse_status(text: str) -> int:
    """A status filter: a whole number from 400 to 499 (ValueError otherwise)."""
    if not (text.isascii() and text.isdigit() and len(text) == 3 and 400 <= int(text) <= 499):
        raise ValueError(f"status must be a 4xx status code, not {text!r}")
    return int(text)


def parse_since(text: str) -> datetime:
    """An ISO 8601 date or date-time (UTC when it names no offset); ValueError otherwise."""
    try:
        moment = datetime.fromisoformat(text) if text.isascii() else None
        if moment is not None:
            moment = moment.replace(tzinfo=moment.tzinfo or UTC).astimezone(UTC)
    except (ValueError, OverflowError):  # overflow: an offset takes it past year 1 or 9999
        moment = None
    if moment is None:
        raise ValueError(
            f"since must be an ISO 8601 date-time (2024-01-31T12:00:00Z), not {text!r}"
        )
    return moment


def parse_limit(text: str) -> int:
    if not (text.isascii() and text.isdigit()) or not 1 <= int(text) <= MAX_LIMIT:
        raise ValueError(f"limit must be a whole number from 1 to {MAX_LIMIT}")
    return int(text)


_SELECT = (
    "SELECT r.id, r.at, r.route, w.public_id AS workflow, s.public_id AS source, r.status,"
    " r.error, r.message, r.headers, r.body, r.body_size, r.reached_worker, {signed}"
    " FROM rejections r LEFT JOIN workflows w ON w.id = r.workflow_id"
    " LEFT JOIN sources s ON s.id = r.source_id"
)


def _rejection(row: Any) -> Rejection:
    return Rejection(
        id=row["id"],
        at=row["at"],
        route=row["route"],
        workflow=row["workflow"],
        source=row["source"],
        status=row["status"],
        error=row["error"],
        message=row["message"],
        headers=row["headers"],
        body=None if row["body"] is None else bytes(row["body"]),
        body_size=row["body_size"],
        signed_headers=row["signed_headers"],
        reached_worker=row["reached_worker"],
    )


async def list_rejections(conn: Pool | Connection, wanted: RejectionFilter) -> list[Rejection]:
    """Rejections matching `wanted`, newest first: at most `wanted.limit + 1` (one more tells
    the caller there is another page)."""
    conditions: list[str] = []
    params: list[Any] = []

    def where(condition: str, value: Any) -> None:
        params.append(value)
        conditions.append(condition.format(f"${len(params)}"))

    if wanted.workflow is not None:
        where("r.workflow_id = (SELECT id FROM workflows WHERE public_id = {})", wanted.workflow)
    if wanted.source is not None:
        where("r.source_id = (SELECT id FROM sources WHERE public_id = {})", wanted.source)
    if wanted.status is not None:
        where("r.status = {}", wanted.status)
    if wanted.since is not None:
        where("r.at >= {}", wanted.since)
    if wanted.before is not None:
        where("r.id < {}", wanted.before)
    sql = _SELECT.format(signed="NULL::jsonb AS signed_headers")
    if conditions:
        sql += " WHERE " + " AND ".join(conditions)
    rows = await conn.fetch(f"{sql} ORDER BY r.id DESC LIMIT {wanted.limit + 1}", *params)
    return [_rejection(row) for row in rows]


async def rejection_by_id(conn: Pool | Connection, rejection_id: int) -> Rejection | None:
    """One rejection, with what a replay needs and the API never shows (`signed_headers`)."""
    row = await conn.fetchrow(
        _SELECT.format(signed="r.signed_headers") + " WHERE r.id = $1", rejection_id
    )
    return None if row is None else _rejection(row)
