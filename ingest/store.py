"""Postgres: the pool, workflows, tasks and their typed values. The source of truth."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterable

import asyncpg
import orjson

from ingest.errors import ValueRefused
from ingest.settings import Settings
from ingest.tasks import TaskRecord, Value
from ingest.workflows import (
    FieldType,
    Workflow,
    WorkflowDefinition,
    hash_token,
    new_public_id,
    new_token,
)

Pool = asyncpg.Pool

#: Failures that say the database cannot be reached or used right now (retry later, never 4xx).
DATABASE_UNAVAILABLE = (
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.CannotConnectNowError,
    asyncpg.TooManyConnectionsError,
    asyncpg.QueryCanceledError,
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
    asyncpg.ReadOnlySQLTransactionError,
    # Out of disk, memory or connections (class 53); shut down, restarting, idle-killed (57);
    # I/O trouble of the server (58): the database's state, no request's fault.
    asyncpg.InsufficientResourcesError,
    asyncpg.OperatorInterventionError,
    asyncpg.PostgresSystemError,
    # asyncpg's protocol state breaks this way when the server dies mid-operation.
    asyncpg.InternalClientError,
    OSError,
    TimeoutError,
)
#: Failures that say Postgres refuses a value of the request itself (out of range, too long for an
#: index, a violated check): permanent, and about that request only.
VALUE_REJECTED = (
    asyncpg.DataError,
    asyncpg.CheckViolationError,
    asyncpg.ProgramLimitExceededError,
    ValueRefused,
)
#: asyncpg refusing to encode a query argument (client side). It is an InterfaceError, which
#: DATABASE_UNAVAILABLE holds, so callers must tell it apart first.
ENCODING_REFUSED = asyncpg.exceptions._base.DataError
#: A connection of its own or one borrowed from a pool.
Connection = asyncpg.Connection | asyncpg.pool.PoolConnectionProxy


async def _init_connection(conn: Connection) -> None:
    await conn.set_type_codec(
        "jsonb",
        encoder=lambda v: orjson.dumps(v).decode(),
        decoder=orjson.loads,
        schema="pg_catalog",
    )


@contextlib.asynccontextmanager
async def open_pool(settings: Settings, size: int | None = None) -> AsyncIterator[Pool]:
    """A pool owned by the caller's context; closed (or terminated) however the context ends."""
    pool = await asyncpg.create_pool(
        settings.database_url,
        min_size=1,
        max_size=size or settings.database_pool_size,
        command_timeout=settings.database_timeout,
        timeout=settings.database_timeout,
        init=_init_connection,
    )
    try:
        yield pool
    finally:
        try:
            await asyncio.wait_for(pool.close(), settings.database_timeout)
        except (TimeoutError, Exception):
            pool.terminate()


# ---------------------------------------------------------------------------------------- workflows


def _workflow(row: asyncpg.Record) -> Workflow:
    return Workflow(
        id=row["id"],
        public_id=row["public_id"],
        version=row["version"],
        definition=WorkflowDefinition.model_validate(row["definition"]),
    )


_WORKFLOW_COLUMNS = "id, public_id, version, definition"


async def create_workflow(pool: Pool, definition: WorkflowDefinition) -> tuple[Workflow, str]:
    """Store a new workflow; returns it with its token, which is shown this once.

    `definition` comes from `WorkflowDefinition.parse`, which validated it as it is stored; the
    read-back still happens inside the transaction, so a failure there leaves nothing behind.
    """
    token = new_token()
    async with pool.acquire() as conn, conn.transaction():
        row = await conn.fetchrow(
            "INSERT INTO workflows (public_id, token_hash, name, definition)"
            f" VALUES ($1, $2, $3, $4) RETURNING {_WORKFLOW_COLUMNS}",
            new_public_id(),
            hash_token(token),
            definition.name,
            definition.model_dump(mode="json"),
        )
        assert row is not None
        return _workflow(row), token


async def workflow_by_token(pool: Pool, token: str) -> Workflow | None:
    row = await pool.fetchrow(
        f"SELECT {_WORKFLOW_COLUMNS} FROM workflows WHERE token_hash = $1", hash_token(token)
    )
    return _workflow(row) if row else None


async def workflow_by_public_id(pool: Pool, public_id: str) -> Workflow | None:
    row = await pool.fetchrow(
        f"SELECT {_WORKFLOW_COLUMNS} FROM workflows WHERE public_id = $1", public_id
    )
    return _workflow(row) if row else None


async def workflow_by_id(conn: Pool | Connection, workflow_id: int) -> Workflow | None:
    row = await conn.fetchrow(
        f"SELECT {_WORKFLOW_COLUMNS} FROM workflows WHERE id = $1", workflow_id
    )
    return _workflow(row) if row else None


async def list_workflows(pool: Pool) -> list[Workflow]:
    rows = await pool.fetch(f"SELECT {_WORKFLOW_COLUMNS} FROM workflows ORDER BY id")
    return [_workflow(row) for row in rows]


async def instance_secret(pool: Pool, name: str) -> bytes:
    value = await pool.fetchval("SELECT value FROM instance_secrets WHERE name = $1", name)
    if value is None:
        raise LookupError(f"instance secret {name!r} is missing: run `ingest migrate`")
    return bytes(value)


# -------------------------------------------------------------------------------------------- tasks

#: The column of `task_values` that holds each field type.
VALUE_COLUMN: dict[FieldType, str] = {
    FieldType.NUMBER: "number_value",
    FieldType.CURRENCY: "number_value",
    FieldType.DATE: "date_value",
    FieldType.DATETIME: "datetime_value",
    FieldType.CHECKBOX: "boolean_value",
    FieldType.MULTIPLE_SELECT: "list_value",
}
VALUE_COLUMNS = (
    "number_value",
    "text_value",
    "date_value",
    "datetime_value",
    "boolean_value",
    "list_value",
)


def value_column(field_type: FieldType) -> str:
    return VALUE_COLUMN.get(field_type, "text_value")


def _stored_value(row: asyncpg.Record) -> Value:
    for column in VALUE_COLUMNS:
        value = row[column]
        if value is not None:
            return value  # type: ignore[no-any-return]
    return None


async def load_values(
    conn: Pool | Connection, task_ids: Iterable[int]
) -> dict[int, dict[int, Value]]:
    """Every stored value of the given tasks: task id → field id → value."""
    rows = await conn.fetch(
        f"SELECT task_id, field_id, {', '.join(VALUE_COLUMNS)}"
        " FROM task_values WHERE task_id = ANY($1::bigint[])",
        list(task_ids),
    )
    values: dict[int, dict[int, Value]] = {}
    for row in rows:
        values.setdefault(row["task_id"], {})[row["field_id"]] = _stored_value(row)
    return values


def task_from_row(row: asyncpg.Record, values: dict[int, Value]) -> TaskRecord:
    return TaskRecord(
        id=row["id"],
        public_id=row["public_id"],
        unique_key=row["unique_key"],
        stage=row["stage"],
        assigned_to=row["assigned_to"],
        values=values,
    )


_TASK_COLUMNS = "id, public_id, unique_key, stage, assigned_to"


async def task_by_public_id(pool: Pool, workflow_id: int, public_id: str) -> TaskRecord | None:
    return await _one_task(pool, "public_id", workflow_id, public_id)


async def task_by_key(pool: Pool, workflow_id: int, unique_key: str) -> TaskRecord | None:
    return await _one_task(pool, "unique_key", workflow_id, unique_key)


async def _one_task(pool: Pool, column: str, workflow_id: int, value: str) -> TaskRecord | None:
    row = await pool.fetchrow(
        f"SELECT {_TASK_COLUMNS} FROM tasks WHERE workflow_id = $1 AND {column} = $2",
        workflow_id,
        value,
    )
    if row is None:
        return None
    values = await load_values(pool, [row["id"]])
    return task_from_row(row, values.get(row["id"], {}))


async def lock_tasks(
    conn: Connection, workflow_id: int, unique_keys: list[str]
) -> dict[str, TaskRecord]:
    """Existing tasks with these keys, locked for update until the transaction ends.

    One equality probe of the unique index per key, locked in key order (callers sort the keys,
    so concurrent workers lock in one order). `unique_key = ANY(keys)` reads the same, but with
    stale statistics (a workflow that grew since the last ANALYZE) the planner scans every task
    of the workflow instead: 5 ms instead of 0.5 ms a batch at 30k tasks, and growing.
    """
    rows = await conn.fetch(
        f"SELECT {_TASK_COLUMNS} FROM unnest($2::text[]) AS k(key) CROSS JOIN LATERAL"
        f" (SELECT {_TASK_COLUMNS} FROM tasks WHERE workflow_id = $1 AND unique_key = k.key"
        "  FOR UPDATE) AS t",
        workflow_id,
        unique_keys,
    )
    values = await load_values(conn, [row["id"] for row in rows]) if rows else {}
    return {row["unique_key"]: task_from_row(row, values.get(row["id"], {})) for row in rows}
