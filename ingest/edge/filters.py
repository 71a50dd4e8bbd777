"""Listing tasks: Flowdash's query filters (`?Stage=Won&Company%20ID=42`) and cursor pages.

A filter names a field, `Stage` or `Assigned To`; an empty value matches tasks where it is unset
(`?Assigned%20To=` lists unassigned tasks). Several filters must all hold. Values are compared
as the field's type (`ingest.fields`: numbers numerically, dates as dates, checkboxes as
true/false), each filter one jsonb containment the `tasks_fields` GIN index answers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ingest.edge.cursors import Cursors, query_digest
from ingest.errors import RequestError
from ingest.fields import FieldSpec, FieldType, filter_document, kind_of
from ingest.store import TASK_COLUMNS, Connection, Pool, task_from_row
from ingest.tasks import TaskRecord
from ingest.values import Stored
from ingest.workflows import ASSIGNED_TO, CURSOR, LIMIT, STAGE, Workflow

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000


class InvalidFilter(RequestError):
    """Raised when a list query names no field, or gives a value its field cannot hold."""


@dataclass(frozen=True, slots=True)
class Page:
    tasks: list[TaskRecord]
    next_cursor: str | None


def _stored(spec: FieldSpec, text: str, members: tuple[str, ...]) -> Stored:
    try:
        return kind_of(spec.type).query(text, members)
    except ValueError:
        raise InvalidFilter(f"{text!r} is not a valid {spec.type} for {spec.name!r}") from None


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

    def field(self, spec: FieldSpec, text: str, members: tuple[str, ...]) -> None:
        if text == "":
            self.conditions.append(f"NOT t.fields ? {self.param(str(spec.id))}")
            return
        document = filter_document(spec.id, kind_of(spec.type), _stored(spec, text, members))
        # Sent as text: the connection's jsonb codec would encode it as a JSON string.
        self.conditions.append(f"t.fields @> {self.param(document)}::text::jsonb")


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


@dataclass(frozen=True, slots=True)
class PageQuery:
    """The SQL of one page of a task list, with its parameters."""

    sql: str
    params: list[Any]
    limit: int
    digest: bytes


def page_query(workflow: Workflow, query: list[tuple[str, str]], cursors: Cursors) -> PageQuery:
    """The query of one page of the workflow's tasks matching every filter in `query`.

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
            sql.field(names[name], text, workflow.definition.members)
        elif name == STAGE:
            sql.builtin("stage", text)
        elif name == ASSIGNED_TO:
            # A member in any case, as writes store it.
            assignee = kind_of(FieldType.PERSON).query(text, workflow.definition.members)
            sql.builtin("assigned_to", assignee if isinstance(assignee, str) else text)
        elif name == CURSOR:
            sql.conditions.append(f"t.id > {sql.param(_after(cursors, text, workflow, digest))}")
        elif name != LIMIT:
            raise InvalidFilter(f"{name!r} is not a field of this workflow")
    text = (
        f"SELECT {TASK_COLUMNS} FROM tasks t"
        f" WHERE {' AND '.join(sql.conditions)} ORDER BY t.id LIMIT {limit + 1}"
    )
    return PageQuery(text, sql.params, limit, digest)


async def list_tasks(
    conn: Pool | Connection, workflow: Workflow, query: list[tuple[str, str]], cursors: Cursors
) -> Page:
    """One page of the workflow's tasks matching every filter in `query`, oldest first."""
    page = page_query(workflow, query, cursors)
    rows = await conn.fetch(page.sql, *page.params)
    more = len(rows) > page.limit
    rows = rows[: page.limit]
    tasks = [task_from_row(row) for row in rows]
    next_cursor = cursors.seal(rows[-1]["id"], workflow.id, page.digest) if more else None
    return Page(tasks, next_cursor)
