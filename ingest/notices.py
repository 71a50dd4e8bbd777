"""Change notices: a workflow, its tokens or a source changed, so every edge and worker drops
what it cached of it at once, not when the cache's TTL runs out.

Postgres `NOTIFY` carries them. `announce` runs inside the transaction that makes the change:
Postgres delivers the notice when (and only if) that transaction commits.
"""

from __future__ import annotations

from typing import Literal

import asyncpg

#: The one channel every process listens on.
CHANNEL = "ingest_changes"

#: What changed: a workflow's definition (or the workflow was deleted), its tokens, or a source.
Topic = Literal["workflow", "tokens", "source"]


async def announce(
    conn: asyncpg.Pool | asyncpg.Connection | asyncpg.pool.PoolConnectionProxy,
    topic: Topic,
    row_id: int,
) -> None:
    """Tell every listening process that `topic` row `row_id` changed (on commit)."""
    await conn.execute("SELECT pg_notify($1, $2)", CHANNEL, f"{topic}:{row_id}")
