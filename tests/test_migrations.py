"""The schema: versioned migrations, applied once; values in typed columns."""

from __future__ import annotations

import asyncpg

from ingest import migrations
from ingest.cli import migrate


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


async def test_task_values_have_exact_types(pool):
    columns = dict(
        await pool.fetch(
            "SELECT column_name, data_type FROM information_schema.columns"
            " WHERE table_name = 'task_values'"
        )
    )
    assert columns["number_value"] == "numeric"
    assert columns["date_value"] == "date"
    assert columns["boolean_value"] == "boolean"
    assert columns["datetime_value"] == "timestamp with time zone"


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
            "SELECT column_name FROM information_schema.columns WHERE table_name = 'workflows'"
        )
    }
    assert "token_hash" in columns
    assert "token" not in columns
