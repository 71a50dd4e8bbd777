"""Retention (SPEC §8): results, dead letters, rejections and stale attempt marks purged by age,
in the background by the workers and once by `ingest purge`; keyed results kept a day at least;
batched deletes; a purged status URL answers 404. Against the real Postgres and RabbitMQ."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import time
import uuid
from datetime import timedelta

import asyncpg
import pytest

from ingest import opaque, retention
from ingest.edge.keys import EDGE
from ingest.retention import Purged, Retention
from ingest.settings import Settings
from tests.conftest import SEED_REQUEST, run_cli, wait_until
from tests.deliveries import create_source, hook_path, path_of

HOUR = timedelta(hours=1)
DAY = timedelta(days=1)


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """Results kept two seconds, purged every second: what a test can watch."""
    return settings.model_copy(update={"result_retention": 2.0, "purge_interval": 1.0})


def tasks_url(token: str) -> str:
    return f"/api/v1/workflows/{token}/tasks"


async def _insert_results(
    pool: asyncpg.Pool, workflow_id: int, count: int, age: timedelta, keyed: bool = False
) -> None:
    """`count` results completed `age` ago (a millisecond apart, older with each)."""
    await pool.execute(
        "INSERT INTO request_results"
        " (request_id, workflow_id, http_status, outcome, body, received_at, completed_at,"
        "  fingerprint)"
        " SELECT gen_random_uuid(), $1, 201, 'created', '{}', at, at,"
        "  CASE WHEN $3 THEN '\\x01'::bytea END"
        " FROM (SELECT now() - $2::interval - i * interval '1 millisecond' AS at"
        "       FROM generate_series(1, $4) AS i) AS moments",
        workflow_id,
        age,
        keyed,
        count,
    )


async def _insert_dead_letters(pool: asyncpg.Pool, count: int, age: timedelta) -> None:
    await pool.execute(
        "INSERT INTO dead_letters (message_id, body, reason, dead_at)"
        " SELECT 'm' || i, '\\x00', 'test', now() - $1::interval FROM generate_series(1, $2) i",
        age,
        count,
    )


async def _insert_rejections(pool: asyncpg.Pool, count: int, age: timedelta) -> None:
    await pool.execute(
        "INSERT INTO rejections (at, route, status, error, headers)"
        " SELECT now() - $1::interval, 'POST /api/v1/workflows/{token}/tasks', 422, 'invalid',"
        "  '{}'::jsonb FROM generate_series(1, $2)",
        age,
        count,
    )


async def _insert_attempts(pool: asyncpg.Pool, count: int, age: timedelta) -> None:
    await pool.execute(
        "INSERT INTO attempts (key, owner, started_at)"
        " SELECT 'request:' || gen_random_uuid(), gen_random_uuid(), now() - $1::interval"
        " FROM generate_series(1, $2)",
        age,
        count,
    )


async def _count(pool: asyncpg.Pool, table: str, where: str = "true") -> int:
    count: int = await pool.fetchval(f"SELECT count(*) FROM {table} WHERE {where}")
    return count


# ------------------------------------------------------------------------ in the background


async def test_workers_purge_old_results_in_the_background_and_keep_keyed_ones(
    client, worker, make_workflow, pool
):
    workflow, token = await make_workflow()
    source = await create_source(
        client, {"name": "Leads", "workflow": workflow.public_id, "verify": {"scheme": "none"}}
    )
    asynchronously = {"Prefer": "respond-async"}
    unkeyed = await client.post(tasks_url(token), json=SEED_REQUEST, headers=asynchronously)
    keyed = await client.post(
        tasks_url(token),
        json={**SEED_REQUEST, "Company ID": "43"},
        headers={**asynchronously, "Idempotency-Key": "order-43"},
    )
    delivered = await client.post(hook_path(source), json={**SEED_REQUEST, "Company ID": "44"})
    assert (unkeyed.status, keyed.status, delivered.status) == (202, 202, 202)
    urls = [path_of((await r.json())["status_url"]) for r in (unkeyed, keyed, delivered)]
    assert [(await client.get(url)).status for url in urls] == [200, 200, 200]

    async def all_applied() -> bool:  # a task and its result commit together
        return await _count(pool, "tasks") == 3

    async def only_the_keyed_result_is_left() -> bool:
        return await _count(pool, "request_results") == 1

    await wait_until(all_applied)

    # No `ingest purge`: the worker's own purge, every second, removes results older than 2 s.
    await wait_until(only_the_keyed_result_is_left, within=15)
    assert await _count(pool, "request_results", "fingerprint IS NOT NULL") == 1
    assert await _count(pool, "tasks") == 3  # results go, never the tasks they made
    purged = worker.metrics.registry.get_sample_value(
        "ingest_purged_rows_total", {"table": "request_results"}
    )
    assert purged == 2  # counted on the worker's /metrics

    unkeyed_status, keyed_status, delivery_status = [await client.get(url) for url in urls]
    assert (unkeyed_status.status, delivery_status.status) == (404, 404)
    for gone in (unkeyed_status, delivery_status):
        body = await gone.json()
        assert body["error"] == "not_found"
        assert "INGEST_RESULT_RETENTION" in body["message"]
    assert keyed_status.status == 200
    assert (await keyed_status.json())["status"] == "succeeded"
    # A retry with the key still gets its answer: kept a day whatever the setting.
    again = await client.post(
        tasks_url(token),
        json={**SEED_REQUEST, "Company ID": "43"},
        headers={"Idempotency-Key": "order-43"},
    )
    assert again.status == 201
    assert await _count(pool, "tasks") == 3


# ------------------------------------------------------------------------------ status URLs


async def test_a_status_url_without_a_result_is_404_once_the_retention_has_passed(
    client, make_workflow
):
    workflow, token = await make_workflow()
    ids = client.app[EDGE].request_ids
    now = time.time()

    async def answer(issued_at: float, keyed: bool) -> int:
        public = ids.public(uuid.uuid4(), workflow.id, issued_at, keyed)
        response = await client.get(f"/api/v1/workflows/{token}/requests/{public}")
        return response.status

    # Results are kept 2 s here: a request issued a minute ago with no result had it purged.
    assert await answer(now, keyed=False) == 200  # pending
    assert await answer(now - 60, keyed=False) == 404
    # Keyed: kept a day at least, and its id says only its day.
    assert await answer(now - 3600, keyed=True) == 200
    assert await answer(now - 3 * 86_400, keyed=True) == 404


async def test_a_status_url_of_the_older_form_stays_pending_since_its_age_is_unknown(
    client, make_workflow
):
    workflow, token = await make_workflow()
    key = client.app[EDGE].request_ids._key
    request_id = uuid.uuid4()
    mac = hmac.new(key, request_id.bytes + workflow.id.to_bytes(8, "big"), hashlib.sha256)
    older = opaque.encode(request_id.bytes + mac.digest()[:10])
    response = await client.get(f"/api/v1/workflows/{token}/requests/{older}")
    assert response.status == 200
    assert (await response.json())["status"] == "pending"


# --------------------------------------------------------------------------------- ingest purge


def _purge_cli(settings: Settings, **env: str) -> str:
    return run_cli(settings, "purge", **env)


async def test_ingest_purge_removes_once_what_each_retention_no_longer_keeps(
    settings, make_workflow, pool
):
    workflow, _ = await make_workflow()
    await _insert_results(pool, workflow.id, 3, 3 * DAY)
    await _insert_results(pool, workflow.id, 2, timedelta(0))
    await _insert_results(pool, workflow.id, 4, 2 * HOUR, keyed=True)
    await _insert_results(pool, workflow.id, 5, 2 * DAY, keyed=True)
    await _insert_dead_letters(pool, 6, 31 * DAY)
    await _insert_dead_letters(pool, 1, 29 * DAY)
    await _insert_rejections(pool, 7, 8 * DAY)
    await _insert_rejections(pool, 1, 6 * DAY)
    await _insert_attempts(pool, 8, 31 * DAY)
    await _insert_attempts(pool, 1, timedelta(0))

    printed = _purge_cli(settings, INGEST_RESULT_RETENTION="1h")

    assert printed == (
        "purged 8 request result(s), 6 dead letter(s), 7 rejection(s) and 8 attempt mark(s)\n"
    )
    assert await _count(pool, "request_results", "fingerprint IS NULL") == 2
    assert await _count(pool, "request_results", "fingerprint IS NOT NULL") == 4
    assert [await _count(pool, t) for t in ("dead_letters", "rejections", "attempts")] == [1, 1, 1]
    assert "purged 0 request result(s)" in _purge_cli(settings, INGEST_RESULT_RETENTION="1h")


async def test_a_keyed_result_is_kept_until_its_status_url_would_say_404(make_workflow, pool):
    """A keyed status URL carries only its UTC day and turns 404 a kept period after the day's
    end; the purge keeps the result exactly as long, so the URL never says pending for a purged
    result. Two keyed results a minute either side of yesterday's start, both over a day old:
    the one of the day before yesterday goes, yesterday's stays."""
    workflow, _ = await make_workflow()
    await pool.execute(
        "INSERT INTO request_results (request_id, workflow_id, http_status, outcome, body,"
        " received_at, completed_at, fingerprint)"
        " SELECT gen_random_uuid(), $1, 201, 'created', '{}', at, at, '\\x01'::bytea"
        " FROM (SELECT date_trunc('day', now(), 'UTC') - interval '1 day' + m AS at"
        "       FROM unnest(ARRAY[interval '-1 minute', interval '1 minute']) AS m) AS moments",
        workflow.id,
    )
    everything_else = Retention(
        results=1, keyed_results=DAY.total_seconds(), dead_letters=1, rejections=1, attempts=1
    )

    purged = await retention.purge(pool, everything_else)

    assert purged.results == 1
    kept = await pool.fetchval("SELECT received_at FROM request_results")
    assert kept == await pool.fetchval(
        "SELECT date_trunc('day', now(), 'UTC') - interval '1 day' + interval '1 minute'"
    )


# ----------------------------------------------------------------------------------- batches

_LOG_DELETES = """
CREATE TABLE deletes (tab text, deleted bigint, tx bigint);
CREATE FUNCTION log_deletes() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO deletes SELECT TG_TABLE_NAME, count(*), txid_current() FROM gone;
    RETURN NULL;
END $$;
CREATE TRIGGER log_deletes AFTER DELETE ON request_results
    REFERENCING OLD TABLE AS gone FOR EACH STATEMENT EXECUTE FUNCTION log_deletes();
CREATE TRIGGER log_deletes AFTER DELETE ON dead_letters
    REFERENCING OLD TABLE AS gone FOR EACH STATEMENT EXECUTE FUNCTION log_deletes();
CREATE TRIGGER log_deletes AFTER DELETE ON rejections
    REFERENCING OLD TABLE AS gone FOR EACH STATEMENT EXECUTE FUNCTION log_deletes();
"""


async def _write_meanwhile(pool: asyncpg.Pool, workflow_id: int, done: asyncio.Event) -> float:
    """Write what workers and operators write while a purge runs (new results; a change of rows
    the purge is deleting); the longest any of these writes took, in seconds."""
    letters = [r["id"] for r in await pool.fetch("SELECT id FROM dead_letters ORDER BY id")]
    longest = 0.0
    round_ = 0
    while not done.is_set():
        started = time.monotonic()
        await _insert_results(pool, workflow_id, 10, timedelta(0))
        await pool.execute(
            "UPDATE dead_letters SET reason = 'seen' WHERE id = $1", letters[round_ % len(letters)]
        )
        longest = max(longest, time.monotonic() - started)
        round_ += 1
        await asyncio.sleep(0)
    return longest


async def test_a_purge_deletes_in_small_batches_each_its_own_transaction(
    settings, make_workflow, pool
):
    workflow, _ = await make_workflow()
    # Oldest first: unkeyed results, then a block of keyed ones younger than a day (kept), then
    # more unkeyed ones, all older than the hour kept: the purge must walk past the keyed block.
    await _insert_results(pool, workflow.id, 4000, 5 * HOUR)
    await _insert_results(pool, workflow.id, 3000, 3 * HOUR, keyed=True)
    await _insert_results(pool, workflow.id, 5000, 2 * HOUR)
    await _insert_dead_letters(pool, 3000, 40 * DAY)
    await _insert_rejections(pool, 2500, 40 * DAY)
    await pool.execute(_LOG_DELETES)
    policy = Retention.from_settings(settings.model_copy(update={"result_retention": 3600.0}))

    done = asyncio.Event()
    writer = asyncio.create_task(_write_meanwhile(pool, workflow.id, done))
    try:
        purged = await retention.purge(pool, policy, batch_rows=500)
    finally:
        done.set()
        longest_write = await writer

    assert purged == Purged(results=9000, dead_letters=3000, rejections=2500, attempts=0)
    assert await _count(pool, "request_results", "fingerprint IS NOT NULL") == 3000
    assert await _count(pool, "request_results", "fingerprint IS NULL") > 0  # the writer's
    deletes = await pool.fetch("SELECT tab, deleted, tx FROM deletes")
    assert max(d["deleted"] for d in deletes) <= 500
    assert len({d["tx"] for d in deletes}) == len(deletes)  # one statement per transaction
    assert sum(d["deleted"] for d in deletes if d["tab"] == "request_results") == 9000
    assert len([d for d in deletes if d["tab"] == "dead_letters"]) >= 3000 // 500
    assert longest_write < 1.0, f"a write waited {longest_write:.2f}s for the purge"


async def test_two_purges_at_once_take_turns_and_remove_each_row_once(
    settings, make_workflow, pool
):
    workflow, _ = await make_workflow()
    await _insert_results(pool, workflow.id, 6000, 2 * DAY)
    policy = Retention.from_settings(settings)
    first, second = await asyncio.gather(
        retention.purge(pool, policy, batch_rows=500),
        retention.purge(pool, policy, batch_rows=500),
    )
    assert first.results + second.results == 6000
    assert await _count(pool, "request_results") == 0
