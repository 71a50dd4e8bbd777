"""Tasks as stored, and their Flowdash shape (SPEC §4 "Response body").

Values are typed Python objects (Decimal, date, datetime, bool, str, list[str]) keyed by field id,
exactly as Postgres stores them. Rendering turns them into Flowdash's JSON: numbers and currency as
decimal strings, dates as YYYY-MM-DD, checkboxes as booleans, unset fields as null.
"""

from __future__ import annotations

import decimal
import re
import secrets
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from enum import StrEnum
from typing import Any

from ingest.workflows import ASSIGNED_TO, STAGE, TASK_URL, Workflow

Value = Decimal | date | datetime | bool | str | list[str] | None


class Outcome(StrEnum):
    """What a task request did."""

    CREATED = "created"  #: a new task
    UPDATED = "updated"  #: an existing task changed
    UNCHANGED = "unchanged"  #: an existing task already had these values
    INVALID = "invalid"  #: rejected by validation (422)
    NOT_FOUND = "not_found"  #: an update-only request named no task (404)
    DELETED = "deleted"  #: a task was deleted
    DEAD = "dead"  #: the request could not be processed and was dead-lettered


@dataclass(slots=True)
class TaskRecord:
    """One task as stored: built-ins plus values by field id."""

    public_id: str
    unique_key: str
    stage: str
    assigned_to: str | None
    values: dict[int, Value] = field(default_factory=dict)
    id: int | None = None


def new_task_public_id() -> str:
    """An unguessable id: the Task URL doubles as a capability link and never carries the token."""
    return secrets.token_urlsafe(12)


def task_url(base_url: str, workflow_public_id: str, task_public_id: str) -> str:
    return f"{base_url}/workflows/{workflow_public_id}/tasks/{task_public_id}"


# ------------------------------------------------------------------ values the database can hold

#: A number keeps at most this many digits, and the power of ten of its last digit lies within
#: ±MAX_NUMBER_EXPONENT. These are the bounds of every number anywhere: task values, Unique IDs,
#: filters, and any number literal of a body (`ingest.messages.parse_payload`). Such a number is
#: stored exactly (NUMERIC holds far more) and written out in at most 2,001 characters.
MAX_NUMBER_DIGITS = 1000
MAX_NUMBER_EXPONENT = 1000
#: A Unique ID's canonical text, in UTF-8 bytes: the btree row of (workflow_id, unique_key) must
#: stay under Postgres' 2,704 bytes. Every number within bounds fits (2,001 bytes at most).
MAX_KEY_BYTES = 2048


def number_fits(number: Decimal) -> bool:
    """True when `number` is finite and within the digit and exponent bounds."""
    if not number.is_finite():
        return False
    _, digits, exponent = number.as_tuple()
    return len(digits) <= MAX_NUMBER_DIGITS and abs(int(exponent)) <= MAX_NUMBER_EXPONENT


#: Decimal notation as JSON writes it, with an optional "+", a bare "." and surrounding spaces:
#: ASCII digits only (`Decimal` would also read "١٢", "1_000" and "Infinity").
_NUMBER_TEXT = re.compile(r"\s*[-+]?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?\s*", re.ASCII)


def read_number(text: str) -> Decimal | None:
    """The exact number `text` writes, or None when it writes none within the bounds.

    Never raises: an exponent beyond what `decimal` can represent is simply not a number.
    """
    if not _NUMBER_TEXT.fullmatch(text):
        return None
    try:
        number = Decimal(text)
    except (InvalidOperation, ValueError):
        return None
    return number if number_fits(number) else None


def key_fits(key: str) -> bool:
    """True when a Unique ID's canonical text fits the task index."""
    return fits_utf8(key, MAX_KEY_BYTES)


def fits_utf8(text: str, most: int) -> bool:
    """True when `text` takes at most `most` bytes as UTF-8; encoded only when it might not (a
    character takes 4 bytes at most)."""
    return len(text) * 4 <= most or len(text.encode("utf-8", "surrogatepass")) <= most


#: Enough precision to normalize any number within the bounds without rounding.
_EXACT = decimal.Context(prec=MAX_NUMBER_DIGITS + 100)


def canonical_number(number: Decimal) -> str:
    """The one text of a number used as a Unique ID: 42, 42.0 and 4.2E+1 are all "42" (and
    -0, 0.0 and 0E+5 are all "0")."""
    return "0" if number.is_zero() else format(_EXACT.normalize(number), "f")


def render_value(value: Value) -> Any:
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, datetime):
        # A naive value is -infinity or infinity read back (stored before they were refused).
        moment = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
        return moment.isoformat().replace("+00:00", "Z")
    if isinstance(value, date):
        return value.isoformat()
    return value


def render(workflow: Workflow, task: TaskRecord, base_url: str) -> dict[str, Any]:
    """The Flowdash JSON of one task: the built-ins first (as Flowdash orders them), then fields."""
    body: dict[str, Any] = {
        STAGE: task.stage,
        ASSIGNED_TO: task.assigned_to,
        TASK_URL: task_url(base_url, workflow.public_id, task.public_id),
    }
    for spec in workflow.definition.fields:
        body[spec.name] = render_value(task.values.get(spec.id))
    return body
