"""Postgres: the pool, workflows, tasks (one row each, values included) and sources. The source of
truth."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Collection

import asyncpg
import orjson

from ingest import notices, tokens
from ingest.errors import Conflict, PreconditionFailed, ValueRefused
from ingest.fields import decode_values
from ingest.revisions import rekeying_refused, revise
from ingest.settings import Settings
from ingest.sources import Source, SourceDefinition, new_source_id, workflow_named
from ingest.tasks import TaskRecord
from ingest.workflows import (
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


async def _keep_session(conn: Connection) -> None:
    """What the pool runs on a connection it takes back, after rolling back any transaction left
    open: nothing. asyncpg's default resets the session (advisory locks, cursors, LISTEN, SET) in
    one more round trip per release, which doubles Postgres' work for one-statement use; ingest
    leaves no session state behind (its one advisory lock is transaction-scoped)."""


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
        reset=_keep_session,
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
#: What every read of workflows holds to: a workflow being deleted (`ingest.deletions`) is gone.
LIVE = "deleted_at IS NULL"


async def create_workflow(pool: Pool, definition: WorkflowDefinition) -> tuple[Workflow, str]:
    """Store a new workflow; returns it with its token, which is shown this once.

    `definition` comes from `WorkflowDefinition.parse`, which validated it as it is stored; the
    read-back still happens inside the transaction, so a failure there leaves nothing behind.
    """
    token = new_token()
    async with pool.acquire() as conn, conn.transaction():
        row = await conn.fetchrow(
            "INSERT INTO workflows (public_id, name, definition)"
            f" VALUES ($1, $2, $3) RETURNING {_WORKFLOW_COLUMNS}",
            new_public_id(),
            definition.name,
            definition.model_dump(mode="json"),
        )
        assert row is not None
        await tokens.insert(conn, row["id"], token)
        return _workflow(row), token


async def workflow_by_token(pool: Pool, token: str) -> Workflow | None:
    """The workflow this token opens (any of its tokens: `ingest.tokens`); None when revoked."""
    row = await pool.fetchrow(
        f"SELECT {_WORKFLOW_COLUMNS} FROM workflows WHERE id ="
        f" (SELECT workflow_id FROM workflow_tokens WHERE token_hash = $1) AND {LIVE}",
        hash_token(token),
    )
    return _workflow(row) if row else None


async def workflow_by_public_id(pool: Pool, public_id: str) -> Workflow | None:
    row = await pool.fetchrow(
        f"SELECT {_WORKFLOW_COLUMNS} FROM workflows WHERE public_id = $1 AND {LIVE}", public_id
    )
    return _workflow(row) if row else None


async def workflow_by_id(conn: Pool | Connection, workflow_id: int) -> Workflow | None:
    row = await conn.fetchrow(
        f"SELECT {_WORKFLOW_COLUMNS} FROM workflows WHERE id = $1 AND {LIVE}", workflow_id
    )
    return _workflow(row) if row else None


async def list_workflows(pool: Pool) -> list[Workflow]:
    rows = await pool.fetch(f"SELECT {_WORKFLOW_COLUMNS} FROM workflows WHERE {LIVE} ORDER BY id")
    return [_workflow(row) for row in rows]


async def update_workflow(
    pool: Pool, public_id: str, change: object, made_from: Collection[int] | None = None
) -> Workflow | None:
    """Make the next version of a workflow from `change` (`ingest.revisions`; DefinitionError
    lists every problem) and announce it; None when no workflow has this id. With `made_from`
    (the versions the change was made from: If-Match), PreconditionFailed when the stored version
    is none of them, checked under the lock, so two changes made from one version never both
    apply (without it, the last change wins).

    The workflow's row stays locked until the new version commits, so concurrent changes apply
    one after the other, each to the version before it; worker batches wait meanwhile (they hold
    their workflows' rows `FOR KEY SHARE` before validating: worker.upsert), so none is committed
    between the check that a workflow to be keyed anew has no tasks and the change, and none
    validated under the old version commits after it. A change that changes nothing keeps the
    version as it is.
    """
    async with pool.acquire() as conn, conn.transaction():
        row = await conn.fetchrow(
            f"SELECT {_WORKFLOW_COLUMNS}, last_field_id FROM workflows WHERE public_id = $1"
            f" AND {LIVE} FOR UPDATE",
            public_id,
        )
        if row is None:
            return None
        current = _workflow(row)
        if made_from is not None and current.version not in made_from:
            raise PreconditionFailed(current.version)
        revision = revise(current.definition, row["last_field_id"], change)
        if not revision.changed:
            return current
        if revision.rekeys and await _has_tasks(conn, current.id):
            raise Conflict(rekeying_refused(current.definition, revision.definition))
        updated = await conn.fetchrow(
            "UPDATE workflows SET name = $2, definition = $3, last_field_id = $4,"
            " version = version + 1, updated_at = now()"
            f" WHERE id = $1 RETURNING {_WORKFLOW_COLUMNS}",
            current.id,
            revision.definition.name,
            revision.definition.model_dump(mode="json"),
            revision.last_field_id,
        )
        await notices.announce(conn, "workflow", current.id)
    assert updated is not None
    return _workflow(updated)


async def _has_tasks(conn: Connection, workflow_id: int) -> bool:
    found: bool = await conn.fetchval(
        "SELECT EXISTS (SELECT 1 FROM tasks WHERE workflow_id = $1)", workflow_id
    )
    return found


async def instance_secret(pool: Pool, name: str) -> bytes:
    value = await pool.fetchval("SELECT value FROM instance_secrets WHERE name = $1", name)
    if value is None:
        raise LookupError(f"instance secret {name!r} is missing: run `ingest migrate`")
    return bytes(value)


# -------------------------------------------------------------------------------------------- tasks


def task_from_row(row: asyncpg.Record) -> TaskRecord:
    """A task from a row that selected `TASK_COLUMNS`."""
    return TaskRecord(
        id=row["id"],
        public_id=row["public_id"],
        unique_value=row["unique_key"],
        stage=row["stage"],
        assigned_to=row["assigned_to"],
        values=decode_values(row["fields"]),
    )


#: What `task_from_row` reads. The values are read as text: the jsonb codec would turn exact
#: numbers into floats.
TASK_COLUMNS = "id, public_id, unique_key, stage, assigned_to, fields::text AS fields"


async def task_by_public_id(pool: Pool, workflow_id: int, public_id: str) -> TaskRecord | None:
    return await _one_task(pool, "public_id", workflow_id, public_id)


async def task_by_unique_value(
    pool: Pool, workflow_id: int, unique_value: str
) -> TaskRecord | None:
    """The task whose Unique ID value (canonical text, `ingest.fields`) is `unique_value`."""
    return await _one_task(pool, "unique_key", workflow_id, unique_value)


async def _one_task(pool: Pool, column: str, workflow_id: int, value: str) -> TaskRecord | None:
    row = await pool.fetchrow(
        f"SELECT {TASK_COLUMNS} FROM tasks WHERE workflow_id = $1 AND {column} = $2",
        workflow_id,
        value,
    )
    return None if row is None else task_from_row(row)


async def lock_tasks(
    conn: Connection, workflow_id: int, unique_values: list[str]
) -> dict[str, TaskRecord]:
    """Existing tasks with these Unique ID values, locked for update until the transaction ends.

    One equality probe of the unique index per value, locked in value order (callers sort them,
    so concurrent workers lock in one order). `unique_key = ANY(values)` reads the same, but with
    stale statistics (a workflow that grew since the last ANALYZE) the planner scans every task
    of the workflow instead: 5 ms instead of 0.5 ms a batch at 30k tasks, and growing.
    """
    rows = await conn.fetch(
        "SELECT t.* FROM unnest($2::text[]) AS v(value) CROSS JOIN LATERAL"
        f" (SELECT {TASK_COLUMNS} FROM tasks WHERE workflow_id = $1 AND unique_key = v.value"
        "  FOR UPDATE) AS t",
        workflow_id,
        unique_values,
    )
    return {row["unique_key"]: task_from_row(row) for row in rows}


# ------------------------------------------------------------------------------------------ sources

_SOURCE_COLUMNS = "id, public_id, workflow_id, definition, created_at"


def _source(row: asyncpg.Record) -> Source:
    return Source(
        id=row["id"],
        public_id=row["public_id"],
        workflow_id=row["workflow_id"],
        definition=SourceDefinition.model_validate_json(row["definition"]),
        created_at=row["created_at"],
    )


async def create_source(pool: Pool, raw: object) -> Source:
    """Validate a new source definition against the workflow it names, and store it.

    DefinitionError lists every problem, a workflow that does not exist (or is being deleted)
    among them.
    """
    async with pool.acquire() as conn, conn.transaction():
        workflow = await _source_workflow(conn, workflow_named(raw))
        definition = SourceDefinition.parse(raw, workflow.definition if workflow else None)
        assert workflow is not None  # parse refuses a definition naming no workflow
        row = await conn.fetchrow(
            "INSERT INTO sources (public_id, workflow_id, definition)"
            f" VALUES ($1, $2, $3) RETURNING {_SOURCE_COLUMNS}",
            new_source_id(),
            workflow.id,
            definition.model_dump_json(),
        )
    assert row is not None
    return _source(row)


async def _source_workflow(
    conn: Connection, public_id: str | None, belongs_to: int | None = None
) -> Workflow | None:
    """The live workflow a source names, its row held `FOR SHARE` until the transaction ends
    unless the source already belongs to it (`belongs_to`). A delete's mark then waits, and
    removes the source with the workflow's others, or came first and the workflow is not found
    (the foreign key's lock, `FOR KEY SHARE`, lets a mark by). A source staying with its workflow
    is held by its own row, which the mark waits on to remove it; holding both would deadlock."""
    if public_id is None:
        return None
    query = f"SELECT {_WORKFLOW_COLUMNS} FROM workflows WHERE public_id = $1 AND {LIVE}"
    row = await conn.fetchrow(query + ("" if belongs_to else " FOR SHARE"), public_id)
    if row is not None and belongs_to and row["id"] != belongs_to:
        row = await conn.fetchrow(query + " FOR SHARE", public_id)
    return _workflow(row) if row else None


async def list_sources(pool: Pool) -> list[Source]:
    rows = await pool.fetch(f"SELECT {_SOURCE_COLUMNS} FROM sources ORDER BY id")
    return [_source(row) for row in rows]


async def source_by_public_id(pool: Pool, public_id: str) -> Source | None:
    row = await pool.fetchrow(
        f"SELECT {_SOURCE_COLUMNS} FROM sources WHERE public_id = $1", public_id
    )
    return _source(row) if row else None


async def delete_source(pool: Pool, public_id: str) -> bool:
    """Remove a source; False when none has this id. Every edge stops taking its deliveries
    within a second (`ingest.notices`), at worst once its cache of it expires."""
    async with pool.acquire() as conn, conn.transaction():
        deleted = await conn.fetchval(
            "DELETE FROM sources WHERE public_id = $1 RETURNING id", public_id
        )
        if deleted is not None:
            await notices.announce(conn, "source", deleted)
    return deleted is not None


async def update_source(pool: Pool, public_id: str, changes: dict[str, object]) -> Source | None:
    """Change a source's definition, keeping its id and URL: each key `changes` holds replaces its
    value (`verify` whole, secrets included). The result is validated as a new definition is,
    against the workflow it names (DefinitionError lists every problem). None when no source has
    this id. Every edge drops its copy at once (notice `source`)."""
    async with pool.acquire() as conn, conn.transaction():
        row = await conn.fetchrow(
            f"SELECT {_SOURCE_COLUMNS} FROM sources WHERE public_id = $1 FOR UPDATE", public_id
        )
        if row is None:
            return None
        source = _source(row)
        raw = {**source.definition.model_dump(mode="json"), **changes}
        workflow = await _source_workflow(conn, workflow_named(raw), source.workflow_id)
        definition = SourceDefinition.parse(raw, workflow.definition if workflow else None)
        assert workflow is not None  # parse refuses a definition naming no workflow
        updated = await conn.fetchrow(
            "UPDATE sources SET workflow_id = $2, definition = $3 WHERE id = $1"
            f" RETURNING {_SOURCE_COLUMNS}",
            source.id,
            workflow.id,
            definition.model_dump_json(),
        )
        await notices.announce(conn, "source", source.id)
    assert updated is not None
    return _source(updated)
