"""Deleting a workflow (SPEC §8) without holding up anyone else's writes: marked deleted at once,
then its tasks removed in short batches, then its row. A delete cut short is completed by the
next purge (`ingest.retention`)."""

from __future__ import annotations

import asyncio

from ingest import notices
from ingest.store import LIVE, Pool

#: Tasks one batch of a workflow's delete removes (with their results): tens of milliseconds.
DELETE_BATCH_TASKS = 2000
#: Seconds the last step of a delete may take: its row's cascade reads every request result once
#: (results are found by task, not by workflow), so it cannot keep to INGEST_DATABASE_TIMEOUT.
DELETE_WORKFLOW_TIMEOUT = 600.0
#: Seconds from the mark to the last step of a delete: every edge and worker hears of a change
#: within a second (`ingest.notices`), and forgets the workflow.
DELETE_AFTER_MARK = 1.0


async def delete_workflow(pool: Pool, public_id: str) -> bool:
    """Remove a workflow with its tasks, results, sources and tokens; False when no workflow has
    this id (or it is being deleted).

    First, in one short transaction, the workflow is marked deleted, its tokens and sources go
    and the change is announced: from then on every read passes it by (the worker answers its
    queued requests 404, taking no lock on its tasks). Then `finish_deleting` removes its tasks
    in short batches, so no transaction holds many rows: writes of other workflows, which share
    worker batches with this one's, never wait for more than a batch. Should this be cut short,
    the workflow stays marked, and the next purge (`finish_deleted_workflows`) completes it.
    """
    async with pool.acquire() as conn, conn.transaction():
        workflow_id: int | None = await conn.fetchval(
            f"UPDATE workflows SET deleted_at = now() WHERE public_id = $1 AND {LIVE} RETURNING id",
            public_id,
        )
        if workflow_id is None:
            return False
        await conn.execute("DELETE FROM workflow_tokens WHERE workflow_id = $1", workflow_id)
        await conn.execute("DELETE FROM sources WHERE workflow_id = $1", workflow_id)
        await notices.announce(conn, "workflow", workflow_id)
    await finish_deleting(pool, workflow_id)
    return True


async def finish_deleted_workflows(pool: Pool) -> int:
    """Complete the deletes of workflows marked deleted whose delete was cut short (its process
    died, its client went away); how many were completed."""
    marked = await pool.fetch("SELECT id FROM workflows WHERE deleted_at IS NOT NULL ORDER BY id")
    for row in marked:
        await finish_deleting(pool, row["id"])
    return len(marked)


async def finish_deleting(pool: Pool, workflow_id: int, batch: int = DELETE_BATCH_TASKS) -> None:
    """Remove a marked workflow's tasks with their results, batch by batch, then its row (which
    takes what is left: results of no task, rejections, its rate bucket). Two processes finishing
    one workflow take turns batch by batch. Tasks go in the order of their Unique ID values (a
    walk through the index); one a worker that read the workflow before the mark holds locked
    (never waited for, lest they deadlock) or adds behind the walk goes with the row."""
    after = ""
    while (last := await _delete_tasks_after(pool, workflow_id, after, batch)) is not None:
        after = last
    await _outlive_caches(pool, workflow_id)
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(
            "DELETE FROM workflows WHERE id = $1 AND deleted_at IS NOT NULL",
            workflow_id,
            timeout=DELETE_WORKFLOW_TIMEOUT,
        )


async def _outlive_caches(pool: Pool, workflow_id: int) -> None:
    """Wait until the workflow was marked `DELETE_AFTER_MARK` seconds ago. The last step holds
    its row for a scan of every result; a worker still writing to it (it has not heard the
    notice yet) would wait for that scan, and the writes of other workflows in its batch too."""
    wait = await pool.fetchval(
        "SELECT $2 - extract(epoch FROM now() - deleted_at)::float8 FROM workflows WHERE id = $1",
        workflow_id,
        DELETE_AFTER_MARK,
    )
    if wait is not None and wait > 0:
        await asyncio.sleep(min(wait, DELETE_AFTER_MARK))


async def _delete_tasks_after(pool: Pool, workflow_id: int, after: str, batch: int) -> str | None:
    """Delete the next `batch` tasks of a marked workflow (Unique ID values after `after`) with
    their results, in one transaction; the last value deleted, or None once a batch is short."""
    async with pool.acquire() as conn, conn.transaction():
        # The workflow's row, locked against other finishers (never against writers' foreign
        # keys): each batch then sees what the one before it deleted.
        if not await conn.fetchval(
            f"SELECT true FROM workflows WHERE id = $1 AND NOT {LIVE} FOR NO KEY UPDATE",
            workflow_id,
        ):
            return None  # finished by another process
        doomed = await conn.fetch(
            "SELECT id, unique_key FROM tasks WHERE workflow_id = $1 AND unique_key > $2"
            " ORDER BY unique_key LIMIT $3 FOR UPDATE SKIP LOCKED",
            workflow_id,
            after,
            batch,
        )
        ids = [row["id"] for row in doomed]
        await conn.execute("DELETE FROM request_results WHERE task_id = ANY($1::bigint[])", ids)
        await conn.execute("DELETE FROM tasks WHERE id = ANY($1::bigint[])", ids)
    return str(doomed[-1]["unique_key"]) if len(doomed) == batch else None
