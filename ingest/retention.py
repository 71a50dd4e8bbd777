"""Retention: what is kept how long, and the purge that removes the rest (SPEC §8).

Request results, dead letters, rejections and stale attempt marks are removed once older than
their setting. Results of keyed requests (an Idempotency-Key or a delivery id: `fingerprint` is
set) are kept at least `KEYED_RESULT_MINIMUM` whatever the setting, since a retry with the key
gets its answer from them.

A purge deletes in batches of at most `BATCH_ROWS` rows, oldest first, each batch its own short
transaction: no statement holds locks for long, nothing waits on rows another session has locked
(`SKIP LOCKED`). A table holding `VACUUM_AFTER` dead rows or more is vacuumed right after (a plain
VACUUM: it blocks neither reads nor writes), so its space is reused by the rows that follow
whether or not autovacuum runs (it is off on some installations, this project's CI machine
among them); with autovacuum on, this only does its work sooner. Each batch takes a
transaction-scoped advisory lock first, so two processes purging at once take turns, batch by
batch, instead of deleting side by side (workers purge every `INGEST_PURGE_INTERVAL`, jittered).
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, fields
from datetime import UTC, datetime

from ingest.deletions import finish_deleted_workflows
from ingest.settings import Settings
from ingest.store import Connection, Pool

log = logging.getLogger(__name__)

#: Results of keyed requests are kept at least this long (seconds), whatever the setting.
KEYED_RESULT_MINIMUM = 24 * 3600.0
#: Rows one batch deletes at most: a few milliseconds of work, locks held as briefly.
BATCH_ROWS = 5000
#: A table that lost this many rows in one purge is vacuumed at once.
VACUUM_AFTER = 10_000
#: The advisory lock purging batches take turns on (ingest's other one guards migrations).
_PURGE_LOCK = 0x1E_57_9A_26
#: Where a walk through results starts: asyncpg writes `datetime.min` as `-infinity`.
_BEFORE_ANY = (datetime.min.replace(tzinfo=UTC), uuid.UUID(int=0))


@dataclass(frozen=True, slots=True)
class Retention:
    """Seconds each kind of row is kept."""

    results: float
    keyed_results: float
    dead_letters: float
    rejections: float
    #: Attempt marks (worker.culprits) only matter while their message is in the queue: kept as
    #: long as dead letters, and never under a day, lest a live mark be lost.
    attempts: float

    @classmethod
    def from_settings(cls, settings: Settings) -> Retention:
        return cls(
            results=settings.result_retention,
            keyed_results=max(settings.result_retention, KEYED_RESULT_MINIMUM),
            dead_letters=settings.dead_letter_retention,
            rejections=settings.rejection_retention,
            attempts=max(settings.dead_letter_retention, KEYED_RESULT_MINIMUM),
        )

    def result_kept(self, keyed: bool) -> float:
        """Seconds a request's result is kept."""
        return self.keyed_results if keyed else self.results

    def result_purged(self, keyed: bool, issued_by: float, now: float) -> bool:
        """Whether a request issued by `issued_by` (Unix time) with no result stored has had it
        purged: every result is written after its request was issued, so one kept for
        `result_kept` seconds would still be there if its request were younger."""
        return now - issued_by > self.result_kept(keyed)


@dataclass(frozen=True, slots=True)
class Purged:
    """Rows one purge removed, per table."""

    results: int = 0
    dead_letters: int = 0
    rejections: int = 0
    attempts: int = 0

    def by_table(self) -> dict[str, int]:
        """Rows removed, by the table they were removed from."""
        return {table: getattr(self, counted) for counted, table in _PURGED_TABLES.items()}

    @property
    def total(self) -> int:
        return sum(getattr(self, f.name) for f in fields(self))

    def summary(self) -> str:
        return (
            f"purged {self.results} request result(s), {self.dead_letters} dead letter(s),"
            f" {self.rejections} rejection(s) and {self.attempts} attempt mark(s)"
        )


async def purge(pool: Pool, retention: Retention, batch_rows: int = BATCH_ROWS) -> Purged:
    """Remove every row older than its retention, batch by batch; vacuum what lost many rows."""
    await finish_deleted_workflows(pool)  # deletes cut short (`ingest.deletions`)
    purged = Purged(
        results=await _purge_results(pool, retention, batch_rows),
        dead_letters=await _purge_oldest(pool, _DEAD_LETTERS, retention.dead_letters, batch_rows),
        rejections=await _purge_oldest(pool, _REJECTIONS, retention.rejections, batch_rows),
        attempts=await _purge_oldest(pool, _ATTEMPTS, retention.attempts, batch_rows),
    )
    await _vacuum_emptied(pool, purged)
    return purged


#: The tables purges delete from, by the `Purged` field that counts their rows.
_PURGED_TABLES = {
    "results": "request_results",
    "dead_letters": "dead_letters",
    "rejections": "rejections",
    "attempts": "attempts",
}
#: A VACUUM may wait for another (autovacuum's, another purger's) and takes a while on a large
#: table: longer than any single statement is allowed, yet bounded.
VACUUM_TIMEOUT = 3600.0


async def _vacuum_emptied(pool: Pool, purged: Purged) -> None:
    """Vacuum each table this purge took `VACUUM_AFTER` rows or more from, or that holds as many
    dead rows by Postgres' count (which lags a few seconds), so a VACUUM that failed or timed
    out is tried again by the next purge."""
    dead = await pool.fetch(
        "SELECT relname FROM pg_stat_user_tables"
        " WHERE relname = ANY($1::text[]) AND n_dead_tup >= $2 AND schemaname = current_schema()",
        list(_PURGED_TABLES.values()),
        VACUUM_AFTER,
    )
    tables = {row["relname"] for row in dead}
    tables.update(t for f, t in _PURGED_TABLES.items() if getattr(purged, f) >= VACUUM_AFTER)
    for table in sorted(tables):
        try:
            # VACUUM runs outside a transaction; a pooled connection outside one is just that.
            await pool.execute(f"VACUUM (ANALYZE) {table}", timeout=VACUUM_TIMEOUT)
        except Exception as exc:  # the purge itself is done: report it, vacuum next time
            log.warning("VACUUM of %s failed: %r; the next purge tries again", table, exc)


# ------------------------------------------------------------------ tables purged by age alone


def _oldest_first(table: str, key: str, column: str) -> str:
    """Delete one batch of the oldest rows of `table` older than $1 seconds ($2 rows at most)."""
    return (
        f"WITH doomed AS (SELECT {key} FROM {table}"
        f" WHERE {column} < now() - make_interval(secs => $1)"
        f" ORDER BY {column} LIMIT $2 FOR UPDATE SKIP LOCKED)"
        f" DELETE FROM {table} AS t USING doomed WHERE t.{key} = doomed.{key}"
    )


_DEAD_LETTERS = _oldest_first("dead_letters", "id", "dead_at")
_REJECTIONS = _oldest_first("rejections", "id", "at")
_ATTEMPTS = _oldest_first("attempts", "key", "started_at")


async def _purge_oldest(pool: Pool, statement: str, kept: float, batch_rows: int) -> int:
    purged = 0
    while True:
        async with pool.acquire() as conn, conn.transaction():
            await _take_turn(conn)
            status = await conn.execute(statement, kept, batch_rows)
        deleted = int(status.split()[-1])
        purged += deleted
        if deleted < batch_rows:
            return purged


async def _take_turn(conn: Connection) -> None:
    """Wait for another process's purging batch to commit (milliseconds) before this one."""
    await conn.execute("SELECT pg_advisory_xact_lock($1)", _PURGE_LOCK)


# ---------------------------------------------------------------------------- request results

#: One batch of results, oldest first from a position ($3, $4), older than $1 seconds: those of
#: unkeyed requests go once $1 seconds have passed since the end of the second they arrived in,
#: and those of keyed requests once $2 seconds have passed since the end of the UTC day they
#: arrived on. That is the clock their status URLs keep (an id carries the second it was issued
#: in, a keyed one only its day: `ingest.edge.request_ids`), so a status URL shows its result
#: while it is kept and 404 once it is gone, never `pending` for a purged result. The position
#: moves past the keyed results kept, so no batch reads them again (a short result retention can
#: leave a day of them in the index range every batch walks).
_RESULTS_BATCH = """
WITH batch AS (
    SELECT request_id, completed_at, received_at, fingerprint FROM request_results
    WHERE completed_at < now() - make_interval(secs => $1)
      AND completed_at >= $3 AND (completed_at > $3 OR request_id > $4)
    ORDER BY completed_at, request_id
    LIMIT $5
    FOR UPDATE SKIP LOCKED
), gone AS (
    DELETE FROM request_results AS r USING batch AS b
    WHERE r.request_id = b.request_id
      AND CASE WHEN b.fingerprint IS NULL
               THEN date_trunc('second', b.received_at) + interval '1 second'
                    < now() - make_interval(secs => $1)
               ELSE date_trunc('day', b.received_at, 'UTC') + interval '1 day'
                    < now() - make_interval(secs => $2) END
    RETURNING 1
), last AS (
    SELECT completed_at, request_id FROM batch ORDER BY completed_at DESC, request_id DESC LIMIT 1
)
SELECT (SELECT count(*) FROM gone) AS purged, (SELECT count(*) FROM batch) AS seen,
       (SELECT completed_at FROM last) AS last_at, (SELECT request_id FROM last) AS last_id
"""


async def _purge_results(pool: Pool, retention: Retention, batch_rows: int) -> int:
    purged = 0
    position = _BEFORE_ANY
    while True:
        async with pool.acquire() as conn, conn.transaction():
            await _take_turn(conn)
            row = await conn.fetchrow(
                _RESULTS_BATCH,
                retention.results,
                retention.keyed_results,
                *position,
                batch_rows,
            )
        assert row is not None  # an aggregate always has its row
        purged += int(row["purged"])
        if row["seen"] < batch_rows:
            return purged
        position = (row["last_at"], row["last_id"])
