"""Retention at scale: purge a million request results and show what it does to the table.

    .venv/bin/python bench/purge.py [--rows 1000000]

Builds a fresh database (`ingest_bench_purge`, migrated), fills `request_results` with `--rows`
results older than the retention (as a week of traffic would leave them) plus a day's worth of
younger ones, then prints the table's live and dead tuples and its size (`pg_total_relation_size`,
indexes included): before the purge, right after it (a purge that removed many rows vacuums the
table itself: `ingest.retention.VACUUM_AFTER`), after a second `VACUUM` (what autovacuum does on
its own later), after the same number of rows is written again, which shows whether the space
the purge freed is reused (no bloat) or the table grew, and once more a retention later. Also:
how long the purge took, its batches, and the longest a concurrent single-row write waited.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from datetime import timedelta
from pathlib import Path

import asyncpg
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.plan import ADMIN_DSN, SALES
from ingest import migrations, retention, store
from ingest.retention import Retention
from ingest.settings import Settings
from ingest.workflows import WorkflowDefinition

DATABASE = "ingest_bench_purge"
#: The purge's batches are logged by a statement trigger: how many there were, how large.
_LOG_DELETES = """
CREATE TABLE deletes (deleted bigint, at timestamptz DEFAULT clock_timestamp());
CREATE FUNCTION log_deletes() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN INSERT INTO deletes (deleted) SELECT count(*) FROM gone; RETURN NULL; END $$;
CREATE TRIGGER log_deletes AFTER DELETE ON request_results
    REFERENCING OLD TABLE AS gone FOR EACH STATEMENT EXECUTE FUNCTION log_deletes();
"""


def _dsn(database: str) -> str:
    return ADMIN_DSN.rsplit("/", 1)[0] + "/" + database


async def _fresh_database() -> None:
    admin = await asyncpg.connect(ADMIN_DSN)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{DATABASE}" WITH (FORCE)')
        await admin.execute(f'CREATE DATABASE "{DATABASE}"')
    finally:
        await admin.close()
    conn = await asyncpg.connect(_dsn(DATABASE))
    try:
        await migrations.apply(conn)
    finally:
        await conn.close()


#: Results written after the purge are dated two days back, as they will be once the next purge
#: comes: a keyed result is kept until a day after the end of the UTC day it arrived on, so one
#: dated now would outlive the rounds below (the day's younger results, keyed, stay throughout).
_A_RETENTION_LATER = timedelta(days=2)


async def _fill(pool: asyncpg.Pool, rows: int, age: timedelta) -> None:
    """`rows` results completed `age` ago and before, a millisecond apart, 100,000 a statement;
    one in five keyed (an Idempotency-Key), with bodies the size of a small task's answer."""
    workflow_id = await pool.fetchval("SELECT id FROM workflows")
    for start in range(0, rows, 100_000):
        await pool.execute(
            "INSERT INTO request_results (request_id, workflow_id, http_status, outcome, body,"
            " received_at, completed_at, fingerprint)"
            " SELECT gen_random_uuid(), $1, 201, 'created', $4, at, at,"
            "  CASE WHEN i % 5 = 0 THEN sha256(i::text::bytea) END"
            " FROM (SELECT i, now() - $2::interval - i * interval '1 millisecond' AS at"
            "       FROM generate_series($3::bigint, $3 + $5 - 1) AS i) AS moments",
            workflow_id,
            age,
            start,
            '{"Stage":"Not Started","Company ID":"42","Company Name":"Acme Corp"}',
            min(100_000, rows - start),
        )


async def _figures(pool: asyncpg.Pool, when: str) -> None:
    await asyncio.sleep(2)  # backends report their counts to the statistics once a second
    row = await pool.fetchrow(
        "SELECT n_live_tup, n_dead_tup, pg_total_relation_size('request_results') AS size,"
        " pg_relation_size('request_results') AS heap,"
        " pg_indexes_size('request_results') AS indexes,"
        " (SELECT count(*) FROM request_results) AS counted"
        " FROM pg_stat_user_tables WHERE relname = 'request_results'"
    )
    assert row is not None
    mib = {name: f"{row[name] / 2**20:,.0f} MiB" for name in ("size", "heap", "indexes")}
    print(
        f"| {when} | {row['counted']:,} | {row['n_dead_tup']:,} | {mib['size']} | {mib['heap']}"
        f" | {mib['indexes']} |"
    )


async def _write_meanwhile(pool: asyncpg.Pool, done: asyncio.Event) -> float:
    """Single-row writes while the purge runs, as workers write results: the longest one."""
    longest = 0.0
    while not done.is_set():
        started = time.monotonic()
        await _fill(pool, 1, timedelta(0))
        longest = max(longest, time.monotonic() - started)
        await asyncio.sleep(0.01)
    return longest


async def _steady_state(pool: asyncpg.Pool, settings: Settings, rows: int) -> None:
    """A retention later: everything written so far is purged and `rows` new results written,
    with the purge's own VACUUM and one more in between. A btree page emptied by a purge is
    reused only after a second VACUUM (Postgres recycles deleted index pages one VACUUM later),
    so the indexes grow once by a purge's worth of pages, then stay put."""
    print(
        "| a retention later: all purged (the purge vacuums), 1 VACUUM more, new results | rows"
        " | n_dead_tup | total size | table | indexes |"
    )
    print("|---|---|---|---|---|---|")
    everything = Retention(results=1, keyed_results=1, dead_letters=1, rejections=1, attempts=1)
    for round_ in (1, 2, 3):
        await asyncio.sleep(1.5)
        async with store.open_pool(settings, size=1) as purging:
            await retention.purge(purging, everything)
        await pool.execute("VACUUM request_results")
        await _fill(pool, rows, _A_RETENTION_LATER)
        await _figures(pool, f"round {round_}")


async def main(rows: int) -> None:
    await _fresh_database()
    settings = Settings(database_url=_dsn(DATABASE), result_retention="7d")
    async with store.open_pool(settings, size=4) as pool:
        await store.create_workflow(
            pool, WorkflowDefinition.parse(orjson.loads(SALES.read_bytes()))
        )
        await _fill(pool, rows, timedelta(days=8))
        await _fill(pool, rows // 7, timedelta(0))  # a day of younger results, kept
        await pool.execute("VACUUM ANALYZE request_results")
        await pool.execute(_LOG_DELETES)
        print(f"{rows:,} results older than 7 days, {rows // 7:,} younger\n")
        print("| request_results | rows | n_dead_tup | total size | table | indexes |")
        print("|---|---|---|---|---|---|")
        await _figures(pool, "before the purge")
        done = asyncio.Event()
        writer = asyncio.create_task(_write_meanwhile(pool, done))
        started = time.monotonic()
        # A pool of its own, closed after: a backend reports its counts when it exits.
        async with store.open_pool(settings, size=1) as purging:
            purged = await retention.purge(purging, Retention.from_settings(settings))
        took = time.monotonic() - started
        done.set()
        longest_write = await writer
        await _figures(pool, "right after the purge (and its VACUUM)")
        await pool.execute("VACUUM request_results")
        await _figures(pool, "after a second VACUUM (autovacuum's work)")
        await _fill(pool, rows, _A_RETENTION_LATER)
        await _figures(pool, f"after writing {rows:,} new results")
        batches = await pool.fetchrow(
            "SELECT count(*) AS n, max(deleted) AS largest,"
            " max(gap) AS longest FROM (SELECT deleted,"
            "  at - lag(at) OVER (ORDER BY at) AS gap FROM deletes) AS d"
        )
        assert batches is not None
        print(
            f"\npurged {purged.results:,} results in {took:.1f} s: {batches['n']:,} batches of at"
            f" most {batches['largest']:,} rows, at most"
            f" {batches['longest'].total_seconds() * 1000:.0f} ms apart; the longest concurrent"
            f" one-row write took {longest_write * 1000:.1f} ms"
        )
        print()
        await _steady_state(pool, settings, rows)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    asyncio.run(main(parser.parse_args().rows))
