"""Listing tasks: Flowdash's query filters (`?Stage=Won&Company%20ID=42`) and cursor pages.

A filter names a field, `Stage` or `Assigned To`; an empty value matches tasks where it is unset
(`?Assigned%20To=` lists unassigned tasks). Several filters must all hold. Values are compared
as the field's type: numbers numerically, dates as dates, checkboxes as true/false.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import InvalidOperation
from typing import Any

from ingest.cursors import Cursors, query_digest
from ingest.errors import RequestError
from ingest.store import Connection, Pool, load_values, task_from_row, value_column
from ingest.tasks import TaskRecord, read_number
from ingest.workflows import ASSIGNED_TO, CURSOR, LIMIT, STAGE, FieldSpec, FieldType, Workflow

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000


class InvalidFilter(RequestError):
    """Raised when a list query names no field, or gives a value its field cannot hold."""


@dataclass(frozen=True, slots=True)
class Page:
    tasks: list[TaskRecord]
    next_cursor: str | None


def _typed(spec: FieldSpec, text: str) -> Any:
    try:
        if spec.type in (FieldType.NUMBER, FieldType.CURRENCY):
            number = read_number(text)  # beyond the bounds no stored number can match
            if number is None:
                raise InvalidOperation
            return number
        if spec.type is FieldType.DATE:
            return date.fromisoformat(text)
        if spec.type is FieldType.DATETIME:
            moment = datetime.fromisoformat(text)
            if moment.tzinfo is not None:
                moment.astimezone(UTC)  # raises OverflowError when it does not exist in UTC
            return moment
        if spec.type is FieldType.CHECKBOX:
            if text.lower() not in ("true", "false"):
                raise ValueError(text)
            return text.lower() == "true"
    except (InvalidOperation, ValueError, OverflowError):
        raise InvalidFilter(f"{text!r} is not a valid {spec.type} for {spec.name!r}") from None
    return text


class _Query:
    """Accumulates SQL conditions and their parameters."""

    def __init__(self, workflow_id: int) -> None:
        self.params: list[Any] = [workflow_id]
        self.conditions = ["t.workflow_id = $1"]

    def param(self, value: Any) -> str:
        self.params.append(value)
        return f"${len(self.params)}"

    def builtin(self, column: str, text: str) -> None:
        if text == "":
            self.conditions.append(f"t.{column} IS NULL")
        else:
            self.conditions.append(f"t.{column} = {self.param(text)}")

    def field(self, spec: FieldSpec, text: str) -> None:
        has_value = f"v.task_id = t.id AND v.field_id = {self.param(spec.id)}"
        if text == "":
            self.conditions.append(f"NOT EXISTS (SELECT 1 FROM task_values v WHERE {has_value})")
            return
        column = value_column(spec.type)
        value = _typed(spec, text)
        if spec.type is FieldType.MULTIPLE_SELECT:
            match = f"{self.param(value)} = ANY(v.{column})"
        else:
            match = f"v.{column} = {self.param(value)}"
        self.conditions.append(
            f"EXISTS (SELECT 1 FROM task_values v WHERE {has_value} AND {match})"
        )


def _after(cursors: Cursors, cursor: str, workflow: Workflow, digest: bytes) -> int:
    task_id = cursors.unseal(cursor, workflow.id, digest)
    if task_id is None:
        raise InvalidFilter(
            "cursor is not one this service handed out for this workflow and these filters"
        )
    return task_id


def _limit(text: str | None) -> int:
    if text is None:
        return DEFAULT_LIMIT
    if not (text.isascii() and text.isdigit()) or not 1 <= int(text) <= MAX_LIMIT:
        raise InvalidFilter(f"limit must be a whole number from 1 to {MAX_LIMIT}")
    return int(text)


async def list_tasks(
    conn: Pool | Connection, workflow: Workflow, query: list[tuple[str, str]], cursors: Cursors
) -> Page:
    """One page of the workflow's tasks matching every filter in `query`, oldest first.

    Cursors are bound to the filters but not to `limit`: the page after a task is the same
    whatever the page size, so a client may change it while paging.
    """
    sql = _Query(workflow.id)
    names = {spec.name: spec for spec in workflow.definition.fields}
    params = dict(query)
    limit = _limit(params.get(LIMIT) if LIMIT not in names else None)
    digest = query_digest([(k, v) for k, v in query if k in names or k not in (CURSOR, LIMIT)])
    for name, text in query:
        if "\x00" in text:
            raise InvalidFilter(f"the value of {name!r} contains a NUL character")
        if name in names:
            sql.field(names[name], text)
        elif name == STAGE:
            sql.builtin("stage", text)
        elif name == ASSIGNED_TO:
            sql.builtin("assigned_to", text)
        elif name == CURSOR:
            sql.conditions.append(f"t.id > {sql.param(_after(cursors, text, workflow, digest))}")
        elif name != LIMIT:
            raise InvalidFilter(f"{name!r} is not a field of this workflow")
    rows = await conn.fetch(
        "SELECT t.id, t.public_id, t.unique_key, t.stage, t.assigned_to FROM tasks t"
        f" WHERE {' AND '.join(sql.conditions)} ORDER BY t.id LIMIT {limit + 1}",
        *sql.params,
    )
    more = len(rows) > limit
    rows = rows[:limit]
    values = await load_values(conn, [row["id"] for row in rows]) if rows else {}
    tasks = [task_from_row(row, values.get(row["id"], {})) for row in rows]
    next_cursor = cursors.seal(rows[-1]["id"], workflow.id, digest) if more else None
    return Page(tasks, next_cursor)
