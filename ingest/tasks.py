"""Tasks as stored, and their Flowdash shape (SPEC §4 "Response body").

Values are typed Python objects (Decimal, date, datetime, bool, str, list[str]) keyed by field id,
exactly as Postgres stores them. Rendering turns them into Flowdash's JSON: numbers and currency as
decimal strings, dates as YYYY-MM-DD, checkboxes as booleans, unset fields as null.
"""

from __future__ import annotations

import decimal
import secrets
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal
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


#: Enough precision to normalize any number a field accepts (1000 digits) without rounding.
_EXACT = decimal.Context(prec=2100)


def canonical_number(number: Decimal) -> str:
    """The one text of a number used as a Unique ID: 42, 42.0 and 4.2E+1 are all "42"."""
    return format(_EXACT.normalize(number), "f")


def render_value(value: Value) -> Any:
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat().replace("+00:00", "Z")
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
