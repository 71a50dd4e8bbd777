"""The schema: versioned migrations, applied once; one row per task, values kept exactly."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import asyncpg
import orjson

from ingest import migrations, store
from ingest.cli import migrate
from ingest.tasks import render, task_url
from ingest.workflows import Workflow, WorkflowDefinition

BASE_URL = "http://ingest.test"


async def test_running_migrations_twice_is_a_no_op(settings):
    # The test database is a clone of an already-migrated template.
    assert await migrate(settings) == []
    assert await migrate(settings) == []


async def test_migrate_creates_a_missing_database(settings):
    fresh = settings.model_copy(update={"database_url": settings.database_url + "_fresh"})
    try:
        applied = await migrate(fresh)
        assert [m.version for m in applied] == [m.version for m in migrations.available()]
    finally:
        conn = await asyncpg.connect(settings.database_url)
        await conn.execute(
            f'DROP DATABASE IF EXISTS "{fresh.database_url.rsplit("/", 1)[1]}" WITH (FORCE)'
        )
        await conn.close()


async def test_unique_key_is_not_null_and_unique_per_workflow(pool):
    nullable = await pool.fetchval(
        "SELECT is_nullable FROM information_schema.columns"
        " WHERE table_name = 'tasks' AND column_name = 'unique_key'"
    )
    assert nullable == "NO"
    definition = await pool.fetchval(
        "SELECT pg_get_constraintdef(oid) FROM pg_constraint"
        " WHERE conname = 'tasks_workflow_unique_key'"
    )
    assert definition == "UNIQUE (workflow_id, unique_key)"


async def test_workflow_tokens_are_only_hashes(pool):
    columns = {
        r["column_name"]
        for r in await pool.fetch(
            "SELECT column_name FROM information_schema.columns"
            " WHERE table_name IN ('workflows', 'workflow_tokens')"
        )
    }
    assert "token_hash" in columns
    assert "token" not in columns


async def test_task_values_are_one_jsonb_row_per_task(pool):
    columns = dict(
        await pool.fetch(
            "SELECT column_name, data_type FROM information_schema.columns"
            " WHERE table_name = 'tasks'"
        )
    )
    assert columns["fields"] == "jsonb"
    assert await pool.fetchval("SELECT to_regclass('task_values')") is None


#: Every field type, with the values an old database may hold at their edges.
EVERY_TYPE = {
    "name": "Every type",
    "unique_id": "Ref",
    "stages": ["New", "Done"],
    "members": ["ann@example.com"],
    "fields": [
        {"name": "Ref", "type": "text"},
        {"name": "Notes", "type": "longText"},
        {"name": "Count", "type": "number"},
        {"name": "Price", "type": "currency"},
        {"name": "Due", "type": "date"},
        {"name": "At", "type": "datetime"},
        {"name": "Done?", "type": "checkbox"},
        {"name": "Size", "type": "singleSelect", "options": ["S", "M"]},
        {"name": "Tags", "type": "multipleSelect", "options": ["a", 'ü "q"', "c"]},
        {"name": "Mail", "type": "email"},
        {"name": "Site", "type": "url"},
        {"name": "Phone", "type": "phone"},
        {"name": "Owner", "type": "person"},
    ],
}
NUMBERS = ["10000.50", "0.000", "-0", "42", "-1.5e-3", "9" * 1000, "1e1000", "1e-1000", "3.14159"]
TEXTS = ["Acme", 'naïve ☃ "quoted" \\ back', "", "  spaced  ", "line\nbreak", "𝄞 emoji 🚀"]
MOMENTS = [
    "2020-01-31 09:30:00+02",
    "2020-01-31 09:30:00.5+00",
    "2020-01-31 09:30:00.123456-05",
    "0001-01-02 00:00:00+00",
    "9999-12-30 23:59:59.999999+00",
    "infinity",
    "-infinity",
]
#: 2011-12-30 never happened in Pacific/Apia, the zone the test database runs in.
DATES = ["2020-01-31", "0001-01-01", "9999-12-31", "2024-02-29", "2011-12-30"]


#: The typed columns of `task_values` before migration 0004.
OLD_VALUE_COLUMNS = (
    "number_value",
    "text_value",
    "date_value",
    "datetime_value",
    "boolean_value",
    "list_value",
)


def _old_render(value: Any) -> Any:
    """How the code before migration 0004 rendered a value read from `task_values`."""
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, datetime):
        moment = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
        return moment.isoformat().replace("+00:00", "Z")
    if isinstance(value, date):
        return value.isoformat()
    return value


async def _fill_old_schema(conn: asyncpg.Connection, workflow_id: int, tasks: int) -> None:
    """`tasks` tasks written as the old schema held them, each with a different mix of values;
    some fields unset."""
    await conn.execute(
        "INSERT INTO tasks (workflow_id, public_id, unique_key, stage, assigned_to)"
        " SELECT $1, 'p' || n, 'key-' || n, CASE WHEN n % 2 = 0 THEN 'New' ELSE 'Done' END,"
        "   CASE WHEN n % 3 = 0 THEN 'ann@example.com' END"
        " FROM generate_series(1, $2) AS n",
        workflow_id,
        tasks,
    )
    ids = [r["id"] for r in await conn.fetch("SELECT id FROM tasks ORDER BY id")]
    rows: list[tuple[Any, ...]] = []
    for n, task_id in enumerate(ids):

        def pick(values: list[Any], n: int = n) -> Any:
            return values[n % len(values)]

        rows.append((task_id, 1, None, f"key-{n + 1}", None, None, None, None))
        if n % 5:
            rows.append((task_id, 2, None, pick(TEXTS), None, None, None, None))
        rows.append((task_id, 3, Decimal(pick(NUMBERS)), None, None, None, None, None))
        if n % 7:
            rows.append((task_id, 4, Decimal(pick(NUMBERS[::-1])), None, None, None, None, None))
        rows.append((task_id, 5, None, None, date.fromisoformat(pick(DATES)), None, None, None))
        rows.append((task_id, 7, None, None, None, None, n % 2 == 0, None))
        if n % 4:
            rows.append((task_id, 8, None, pick(["S", "M"]), None, None, None, None))
        rows.append((task_id, 9, None, None, None, None, None, pick([["a"], ['ü "q"', "c"], []])))
        rows.append((task_id, 10, None, "ann@example.com", None, None, None, None))
        rows.append((task_id, 11, None, "https://example.com/x?y=1", None, None, None, None))
        rows.append((task_id, 12, None, "+1 555 0100", None, None, None, None))
        rows.append((task_id, 13, None, "ann@example.com", None, None, None, None))
    await conn.copy_records_to_table(
        "task_values",
        records=rows,
        columns=["task_id", "field_id", *OLD_VALUE_COLUMNS],
    )
    # Moments go in as text, so infinity and the zone offsets are Postgres' own reading.
    await conn.execute(
        "INSERT INTO task_values (task_id, field_id, datetime_value)"
        " SELECT id, 6, ($1::text[])[1 + id % array_length($1::text[], 1)]::timestamptz"
        " FROM tasks WHERE id % 3 <> 0",
        MOMENTS,
    )


async def _old_tasks(conn: asyncpg.Connection, workflow: Workflow) -> dict[str, Any]:
    """Every task as the code before migration 0004 showed it, by Unique ID."""
    values: dict[int, dict[int, Any]] = {}
    for row in await conn.fetch("SELECT * FROM task_values"):
        value = next(row[c] for c in OLD_VALUE_COLUMNS if row[c] is not None)
        values.setdefault(row["task_id"], {})[row["field_id"]] = value
    shown = {}
    for row in await conn.fetch("SELECT * FROM tasks"):
        held = values.get(row["id"], {})
        shown[row["unique_key"]] = {
            "Stage": row["stage"],
            "Assigned To": row["assigned_to"],
            "Task URL": task_url(BASE_URL, workflow.public_id, row["public_id"]),
            **{
                spec.name: _old_render(held[spec.id]) if spec.id in held else None
                for spec in workflow.definition.fields
            },
        }
    return shown


async def test_migrating_task_values_keeps_every_value_and_unique_id(settings):
    dsn = settings.database_url + "_old"
    await migrations.ensure_database(dsn, 10)
    # A zone that skipped a day: the migration's text of dates and moments must not depend on it.
    admin = await asyncpg.connect(settings.database_url)
    await admin.execute(
        f"ALTER DATABASE \"{dsn.rsplit('/', 1)[1]}\" SET timezone TO 'Pacific/Apia'"
    )
    await admin.close()
    conn = await asyncpg.connect(dsn)
    try:
        await migrations.apply(conn, up_to=3)
        definition = WorkflowDefinition.parse(EVERY_TYPE)
        workflow_id = await conn.fetchval(
            "INSERT INTO workflows (public_id, token_hash, name, definition)"
            " VALUES ('wf', $1, 'Every type', $2::jsonb) RETURNING id",
            b"\x00" * 32,
            orjson.dumps(definition.model_dump(mode="json")).decode(),
        )
        workflow = Workflow(id=workflow_id, public_id="wf", version=1, definition=definition)
        await _fill_old_schema(conn, workflow_id, 25_000)  # three batches of the migration
        before = await _old_tasks(conn, workflow)

        applied = await migrations.apply(conn, up_to=4)

        assert [m.version for m in applied] == [4]
        rows = await conn.fetch(f"SELECT {store.TASK_COLUMNS} FROM tasks")
        after = {
            row["unique_key"]: render(workflow, store.task_from_row(row), BASE_URL) for row in rows
        }
        assert len(after) == len(before) == 25_000
        assert after == before
        assert before["key-1"]["Count"] == "10000.50"  # the scale, kept
        assert {task["At"] for task in after.values()} >= {
            "2020-01-31T07:30:00Z",
            "2020-01-31T09:30:00.500000Z",
            "9999-12-31T23:59:59.999999Z",
        }
    finally:
        await conn.close()
        admin = await asyncpg.connect(settings.database_url)
        await admin.execute(f'DROP DATABASE IF EXISTS "{dsn.rsplit("/", 1)[1]}" WITH (FORCE)')
        await admin.close()
