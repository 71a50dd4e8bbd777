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

import re
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
#: A page of the list takes no more rejections once their bodies pass this (the next page goes
#: on from there): a thousand bodies of 64 KiB would be a 64 MB answer, more once JSON-escaped.
PAGE_BODY_BYTES = 4 * 1024 * 1024

#: Names (and parts of names) of headers that carry a person's or client's credentials.
_CREDENTIALS = frozenset(["authorization", "proxy-authorization", "cookie", "set-cookie"])
_CREDENTIAL_WORDS = (
    *("token", "secret", "pass", "api-key", "apikey", "auth", "cookie", "session", "csrf", "xsrf"),
    *("jwt", "bearer", "credential"),
)
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
    #: Rejections of its workflow (or source) the edge left out since it recorded one before.
    unrecorded_before: int = 0
    #: Credentials its path carried (a workflow token, a source id), redacted wherever a header
    #: repeats them.
    path_secrets: tuple[str, ...] = ()


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
    unrecorded_before: int = 0


def row_of(refused: Refused) -> Row:
    """The stored form of a refused request: secrets redacted, its cause read from the answer."""
    shown, kept = sort_headers(refused.headers, refused.signature_headers, refused.path_secrets)
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
        unrecorded_before=refused.unrecorded_before,
    )


def sort_headers(
    headers: Iterable[tuple[str, str]],
    signature_headers: Sequence[str] = (),
    path_secrets: Sequence[str] = (),
) -> tuple[dict[str, str], dict[str, str]]:
    """(what is shown, what a replay needs and is never shown), keyed by lower-case name; a header
    sent twice is joined with ", " as HTTP joins them. Shown values lose the path's credentials
    and the password of any URL they hold."""
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
            _add(
                shown, lowered, _text(_without_secrets(value, path_secrets), MAX_SHOWN_VALUE_CHARS)
            )
    return shown, kept


#: The password of a URL's user information (`scheme://user:password@host`).
_URL_PASSWORD = re.compile(r"(?<=://)([^/@:\s]*):[^/@\s]*@")


def _without_secrets(value: str, path_secrets: Sequence[str]) -> str:
    for secret in path_secrets:
        value = value.replace(secret, REDACTED)
    return _URL_PASSWORD.sub(rf"\1:{REDACTED}@", value)


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
        " headers, body, body_size, signed_headers, reached_worker, unrecorded_before)"
        " SELECT r.at, r.route,"
        "  (SELECT id FROM workflows WHERE public_id = r.workflow AND deleted_at IS NULL),"
        "  (SELECT id FROM sources WHERE id = r.source), r.status, r.error, r.message,"
        "  r.headers::jsonb, r.body, r.body_size, r.signed::jsonb, r.reached, r.unrecorded"
        " FROM unnest($1::timestamptz[], $2::text[], $3::text[], $4::bigint[], $5::smallint[],"
        "  $6::text[], $7::text[], $8::text[], $9::bytea[], $10::integer[], $11::text[],"
        "  $12::boolean[], $13::integer[])"
        " AS r(at, route, workflow, source, status, error, message, headers, body, body_size,"
        "  signed, reached, unrecorded)",
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
        [r.unrecorded_before for r in rows],
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
    unrecorded_before: Annotated[
        int,
        Field(
            ge=0,
            description="Rejections of this workflow (or source) that the edge which recorded "
            "this one left out since the one it recorded before, to keep the ledger small under "
            "a flood; each is counted in `ingest_rejections_unrecorded_total`.",
        ),
    ]


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
    unrecorded_before: int = 0

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
            "unrecorded_before": self.unrecorded_before,
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
    " r.error, r.message, r.headers, r.body, r.body_size, r.reached_worker,"
    " r.unrecorded_before, {columns}"
    " FROM rejections r LEFT JOIN workflows w ON w.id = r.workflow_id"
    " LEFT JOIN sources s ON s.id = r.source_id"
)
#: What a page adds to each row: the bodies of the rows above it on the page, and whether a row
#: matching the filter comes after it (so that a page needs no extra row to know it).
_PAGED = (
    "NULL::jsonb AS signed_headers,"
    " coalesce(sum(octet_length(r.body))"
    "  OVER (newest ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING), 0) AS bytes_above,"
    " lead(r.id) OVER newest IS NOT NULL AS followed"
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
        unrecorded_before=row["unrecorded_before"],
    )


@dataclass(frozen=True, slots=True)
class RejectionPage:
    """One page of a list, newest first; `more`: another page follows, below the last one."""

    rejections: list[Rejection]
    more: bool


async def rejection_page(conn: Pool | Connection, wanted: RejectionFilter) -> RejectionPage:
    """The page of rejections matching `wanted`: at most `wanted.limit`, and no more once their
    bodies pass PAGE_BODY_BYTES."""
    sql, params = page_query(wanted)
    rows = await conn.fetch(sql, *params)
    return RejectionPage([_rejection(row) for row in rows], bool(rows and rows[-1]["followed"]))


async def list_rejections(conn: Pool | Connection, wanted: RejectionFilter) -> list[Rejection]:
    """Rejections matching `wanted`, newest first: one page (`rejection_page`)."""
    return (await rejection_page(conn, wanted)).rejections


def page_query(wanted: RejectionFilter) -> tuple[str, list[Any]]:
    """The statement of a page of `wanted`, and its arguments. Sizes are read without the
    bodies (`octet_length` of a stored value is in its header), and the bodies of rows past the
    cut are never sent."""
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
    rows = _SELECT.format(columns=_PAGED)
    if conditions:
        rows += " WHERE " + " AND ".join(conditions)
    rows += f" WINDOW newest AS (ORDER BY r.id DESC) ORDER BY r.id DESC LIMIT {wanted.limit}"
    sql = f"SELECT * FROM ({rows}) page WHERE bytes_above < {PAGE_BODY_BYTES} ORDER BY id DESC"
    return sql, params


async def rejection_by_id(conn: Pool | Connection, rejection_id: int) -> Rejection | None:
    """One rejection, with what a replay needs and the API never shows (`signed_headers`)."""
    row = await conn.fetchrow(
        _SELECT.format(columns="r.signed_headers") + " WHERE r.id = $1", rejection_id
    )
    return None if row is None else _rejection(row)
