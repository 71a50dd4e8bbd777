"""The ledger of rejections (SPEC §8) against the real Postgres and RabbitMQ: what is recorded
(and what never is), secrets redacted, bodies cut, lists filtered and paged, the CLI, a source
fixed in place, and a rejected delivery replayed once, however often it is clicked. The ledger
without its database is in `test_rejections_outage.py`."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import orjson
from aiohttp.test_utils import TestClient

from ingest.rejections import (
    BODY_LIMIT,
    PAGE_BODY_BYTES,
    RejectionFilter,
    list_rejections,
    page_query,
)
from ingest.settings import Settings
from tests.conftest import run_cli, wait_until
from tests.deliveries import ADMIN, JSON, create_source, final_status, hook_path, path_of
from tests.signing import github_headers, stripe_headers

SECRET = "It's a Secret to Everybody"
REJECTIONS = "/api/v1/admin/rejections"
LEAD = {"lead": {"id": "42", "company": "Acme Corp", "size": 10}}
#: `join` wants an array: every delivery of LEAD fails to map (422 mapping_failed).
BROKEN_MAP = {"Company ID": "lead.id", "Company Name": "join(', ', lead.company)"}
FIXED_MAP = {"Company ID": "lead.id", "Company Name": "lead.company"}


def _source(workflow_id: str, **overrides: Any) -> dict[str, Any]:
    return {
        "name": "Leads",
        "workflow": workflow_id,
        "verify": {"scheme": "github", "secrets": [SECRET]},
        "map": BROKEN_MAP,
        **overrides,
    }


async def _listed(client: TestClient[Any, Any], count: int, query: str = "") -> list[Any]:
    """The ledger's list once it holds `count` rejections (it is written off the request path)."""

    async def enough() -> tuple[list[Any]] | None:
        listed: list[Any] = await (await client.get(f"{REJECTIONS}{query}", headers=ADMIN)).json()
        return (listed,) if len(listed) >= count else None

    (listed,) = await wait_until(enough, within=10)
    assert len(listed) == count, listed
    return listed


async def _deliver(
    client: TestClient[Any, Any], source: dict[str, Any], delivery_id: str, **extra: str
) -> Any:
    body = orjson.dumps(LEAD)
    headers = {**JSON, **github_headers(SECRET, body, delivery_id), **extra}
    return await client.post(hook_path(source), data=body, headers=headers)


# ----------------------------------------------------------------------------- what is recorded


async def test_a_refused_delivery_is_recorded_with_its_cause_and_its_secrets_redacted(
    client: TestClient[Any, Any], pool: asyncpg.Pool, make_workflow: Any
) -> None:
    workflow, _ = await make_workflow()
    source = await create_source(client, _source(workflow.public_id))
    refused = await _deliver(
        client,
        source,
        "d-1",
        Authorization="Bearer very-secret",
        Cookie="session=also-secret",
        **{"X-Api-Key": "key-secret", "X-Trace": "kept"},
    )
    assert refused.status == 422
    [rejection] = await _listed(client, 1)
    assert rejection["route"] == "POST /api/v1/hooks/{source_id}"
    assert (rejection["workflow"], rejection["source"]) == (workflow.public_id, source["id"])
    assert (rejection["status"], rejection["error"]) == (422, "mapping_failed")
    assert "join" in rejection["message"]
    headers = rejection["headers"]
    for secret in ("authorization", "cookie", "x-api-key", "x-hub-signature-256"):
        assert headers[secret] == "<redacted>", secret
    assert (headers["x-github-delivery"], headers["x-trace"]) == ("d-1", "kept")
    assert orjson.loads(rejection["body"]) == LEAD
    assert rejection["body_truncated"] is False
    assert datetime.fromisoformat(rejection["at"]) > datetime.now(UTC) - timedelta(minutes=1)
    # Credentials are kept nowhere; the signature only where the API never shows it.
    stored = await pool.fetchval("SELECT rejections::text FROM rejections")
    for secret in ("very-secret", "also-secret", "key-secret", source["id"]):
        assert secret not in stored
    signed = await pool.fetchval("SELECT signed_headers FROM rejections")
    assert signed["x-hub-signature-256"].startswith("sha256=")


async def test_task_writes_are_recorded_but_unknown_tokens_sources_and_reads_are_not(
    client: TestClient[Any, Any], pool: asyncpg.Pool, make_workflow: Any, worker: Any
) -> None:
    workflow, token = await make_workflow()
    tasks = f"/api/v1/workflows/{token}/tasks"
    assert (await client.post(tasks, data=b"{not json", headers=JSON)).status == 400
    assert (await client.post(tasks, json={"Company ID": "1", "Stage": "Nope"})).status == 422
    # Not recorded: an unknown token or source id, a read that finds nothing, an accepted write.
    assert (await client.post("/api/v1/workflows/wrong/tasks", data=b"{")).status == 404
    assert (await client.post("/api/v1/hooks/wrong", json={})).status == 404
    assert (await client.get(f"{tasks}/nobody")).status == 404
    assert (await client.get(f"{tasks}?Nope=1")).status == 400
    assert (await client.post(tasks, json={"Company ID": "2", "Company Name": "X"})).status == 201

    invalid, malformed = await _listed(client, 2)
    assert (malformed["status"], malformed["error"]) == (400, "malformed_body")
    assert malformed["route"] == "POST /api/v1/workflows/{token}/tasks"
    assert malformed["body"] == "{not json"
    assert (invalid["status"], invalid["error"]) == (422, "invalid_task")
    assert "Stage: is not included in the list" in invalid["message"]
    assert invalid["workflow"] == workflow.public_id
    assert invalid["source"] is None
    assert token not in await pool.fetchval(
        "SELECT string_agg(rejections::text, '') FROM rejections"
    )
    metrics = await (await client.get("/metrics")).text()
    counted = [line for line in metrics.splitlines() if line.startswith("ingest_rejections_total")]
    assert 'ingest_rejections_total{error="malformed_body",status="400"} 1.0' in counted, counted
    assert 'ingest_rejections_total{error="invalid_task",status="422"} 1.0' in counted, counted


async def test_a_body_is_kept_up_to_64_kib_and_says_it_was_cut(
    client: TestClient[Any, Any], make_workflow: Any
) -> None:
    _, token = await make_workflow()
    body = b"x" * 100_000
    assert (
        await client.post(f"/api/v1/workflows/{token}/tasks", data=body, headers=JSON)
    ).status == 400
    [rejection] = await _listed(client, 1)
    assert rejection["body"] == "x" * 65536
    assert rejection["body_truncated"] is True


async def test_a_token_a_proxy_copied_into_a_header_is_redacted(
    client: TestClient[Any, Any], make_workflow: Any
) -> None:
    _, token = await make_workflow()
    path = f"/api/v1/workflows/{token}/tasks"
    copies = {"Referer": f"https://example.com{path}", "X-Original-URI": path}
    assert (await client.post(path, data=b"{bad", headers={**JSON, **copies})).status == 400
    [rejection] = await _listed(client, 1)
    assert token not in orjson.dumps(rejection).decode()
    assert rejection["headers"]["x-original-uri"] == "/api/v1/workflows/<redacted>/tasks"


# ---------------------------------------------------------------------------- lists and filters


async def test_rejections_are_listed_newest_first_filtered_and_paged(
    client: TestClient[Any, Any], make_workflow: Any
) -> None:
    first, first_token = await make_workflow()
    second, second_token = await make_workflow()
    before = datetime.now(UTC) - timedelta(seconds=1)
    for token in (first_token, first_token, second_token):
        await client.post(f"/api/v1/workflows/{token}/tasks", data=b"[]", headers=JSON)
    await client.post(
        f"/api/v1/workflows/{first_token}/tasks", data=b"{}", headers={"Content-Type": "text/plain"}
    )
    everything = await _listed(client, 4)
    assert [r["id"] for r in everything] == sorted((r["id"] for r in everything), reverse=True)

    mine = await _listed(client, 3, f"?workflow={first.public_id}")
    assert {r["workflow"] for r in mine} == {first.public_id}
    assert [r["status"] for r in await _listed(client, 1, "?status=415")] == [415]
    assert len(await _listed(client, 1, f"?workflow={second.public_id}&status=400")) == 1
    assert await _listed(client, 0, "?workflow=nobody") == []
    assert len(await _listed(client, 4, f"?since={before:%Y-%m-%dT%H:%M:%SZ}")) == 4
    assert await _listed(client, 0, "?since=2999-01-01") == []

    page = await client.get(f"{REJECTIONS}?workflow={first.public_id}&limit=2", headers=ADMIN)
    assert [r["id"] for r in await page.json()] == [r["id"] for r in mine[:2]]
    cursor = page.headers["X-Next-Cursor"]
    assert page.headers["Link"].endswith('; rel="next"')
    rest = await client.get(path_of(page.headers["Link"][1:].split(">")[0]), headers=ADMIN)
    assert [r["id"] for r in await rest.json()] == [mine[2]["id"]]
    assert "X-Next-Cursor" not in rest.headers
    # A cursor is bound to its filters.
    other = await client.get(f"{REJECTIONS}?cursor={cursor}", headers=ADMIN)
    assert other.status == 400


async def test_bad_filters_are_400_naming_the_problem(client: TestClient[Any, Any]) -> None:
    for query, said in (
        ("status=200", "4xx"),
        ("status=four", "4xx"),
        ("since=yesterday", "ISO 8601"),
        ("since=0001-01-01T00:00:00%2B14:00", "ISO 8601"),
        ("limit=0", "limit"),
        ("limit=%C2%B2", "limit"),
        ("cursor=forged", "cursor"),
        ("colour=red", "not a filter"),
        ("status=400&status=401", "once"),
        ("workflow=a%00b", "not text"),
        (f"workflow={'w' * 201}", "public id"),
    ):
        response = await client.get(f"{REJECTIONS}?{query}", headers=ADMIN)
        assert response.status == 400, query
        answer = await response.json()
        assert answer["error"] == "invalid_filter", (query, answer)
        assert said in answer["message"], (query, answer)
    assert (await client.get(REJECTIONS)).status == 401


async def test_the_cli_lists_rejections_with_the_same_filters(
    client: TestClient[Any, Any], settings: Settings, make_workflow: Any
) -> None:
    workflow, token = await make_workflow()
    await client.post(f"/api/v1/workflows/{token}/tasks", data=b"[]", headers=JSON)
    await client.post(
        f"/api/v1/workflows/{token}/tasks", data=b"{}", headers={"Content-Type": "text/plain"}
    )
    await _listed(client, 2)
    args = ("rejections", "list", "--workflow", workflow.public_id, "--status", "415")
    [shown] = orjson.loads(await asyncio.to_thread(run_cli, settings, *args))
    assert (shown["status"], shown["error"]) == (415, "unsupported_media_type")
    everything = orjson.loads(await asyncio.to_thread(run_cli, settings, "rejections", "list"))
    assert len(everything) == 2


async def _store_rejections(pool: asyncpg.Pool, count: int, status: int, body_bytes: int) -> None:
    await pool.execute(
        "INSERT INTO rejections (route, status, error, headers, body, body_size)"
        " SELECT 'POST /api/v1/workflows/{token}/tasks', $2, 'malformed_body', '{}',"
        "  convert_to(repeat('x', $3), 'UTF8'), $3 FROM generate_series(1, $1)",
        count,
        status,
        body_bytes,
    )


async def test_a_page_stops_once_its_bodies_pass_4_mib_and_its_cursor_goes_on(
    client: TestClient[Any, Any], pool: asyncpg.Pool
) -> None:
    await _store_rejections(pool, 100, 400, BODY_LIMIT)
    first = await client.get(f"{REJECTIONS}?limit=1000", headers=ADMIN)
    page = await first.json()
    assert len(page) == PAGE_BODY_BYTES // BODY_LIMIT  # 64 bodies of 64 KiB
    assert len(await first.read()) < PAGE_BODY_BYTES + 2 * BODY_LIMIT
    rest = await client.get(path_of(first.headers["Link"][1:].split(">")[0]), headers=ADMIN)
    shown = page + await rest.json()
    assert "X-Next-Cursor" not in rest.headers
    ids = [rejection["id"] for rejection in shown]
    assert ids == sorted(set(ids), reverse=True)
    assert len(ids) == 100
    # A page cut by its limit knows whether another follows, without reading one more.
    cut = await client.get(f"{REJECTIONS}?limit=10", headers=ADMIN)
    assert len(await cut.json()) == 10
    assert "X-Next-Cursor" in cut.headers
    query = f"?limit=36&cursor={first.headers['X-Next-Cursor']}"
    exactly_the_rest = await client.get(f"{REJECTIONS}{query}", headers=ADMIN)
    assert len(await exactly_the_rest.json()) == 36
    assert "X-Next-Cursor" not in exactly_the_rest.headers


async def test_a_rare_status_is_listed_from_its_index(pool: asyncpg.Pool) -> None:
    """Measured (EXPLAIN ANALYZE) at 200,000 rejections of one status and 3 of another: `Index
    Scan Backward using rejections_status`, 0.1 ms; without that index, a parallel sequential
    scan of the whole table, 30 ms, growing with the table."""
    await _store_rejections(pool, 20_000, 422, 10)
    await _store_rejections(pool, 3, 409, 10)
    await pool.execute("ANALYZE rejections")
    sql, params = page_query(RejectionFilter(status=409))
    plan = "\n".join(row[0] for row in await pool.fetch(f"EXPLAIN {sql}", *params))
    assert "rejections_status" in plan, plan
    assert len(await list_rejections(pool, RejectionFilter(status=409))) == 3


# -------------------------------------------------------------------------- a source fixed in place


async def test_a_source_is_fixed_in_place_keeping_its_id_url_and_secrets(
    client: TestClient[Any, Any], settings: Settings, make_workflow: Any, tmp_path: Any
) -> None:
    workflow, _ = await make_workflow()
    source = await create_source(client, _source(workflow.public_id))
    assert (await _deliver(client, source, "before")).status == 422  # the edge caches it now
    url = f"/api/v1/admin/sources/{source['id']}"
    fixed = await client.patch(url, json={"map": FIXED_MAP, "name": "Fixed"}, headers=ADMIN)
    assert fixed.status == 200, await fixed.text()
    patched = time.monotonic()

    async def mapped_anew() -> bool:
        return bool((await _deliver(client, source, f"after-{time.monotonic()}")).status == 202)

    await wait_until(mapped_anew, within=3)
    assert time.monotonic() - patched < 1.0  # a change notice, not the cache's TTL
    shown = await fixed.json()
    assert (shown["id"], shown["url"], shown["name"]) == (source["id"], source["url"], "Fixed")
    assert shown["map"] == FIXED_MAP
    assert shown["verify"]["secret_count"] == 1
    assert SECRET not in await fixed.text()
    assert await (await client.get(url, headers=ADMIN)).json() == shown

    invalid = await client.patch(url, json={"map": {"Nope": "a."}}, headers=ADMIN)
    assert invalid.status == 422
    problems = (await invalid.json())["problems"]
    assert len(problems) == 2, problems  # the expression, and the field the workflow lacks
    unknown_key = await client.patch(url, json={"colour": 1}, headers=ADMIN)
    assert "colour" in str(await unknown_key.json())
    assert (await client.patch(url, data=b"[]", headers={**ADMIN, **JSON})).status == 400
    gone = await client.patch("/api/v1/admin/sources/nobody", json={}, headers=ADMIN)
    assert gone.status == 404
    assert (await client.patch(url, json={})).status == 401

    changes = tmp_path / "changes.yaml"
    changes.write_text("respond: sync\nfilter: lead.size > `5`\n")
    args = ("source", "update", source["id"], str(changes))
    updated = orjson.loads(await asyncio.to_thread(run_cli, settings, *args))
    assert (updated["respond"], updated["filter"], updated["map"]) == (
        "sync",
        "lead.size > `5`",
        FIXED_MAP,
    )


# ------------------------------------------------------------------------------------------ replay


async def test_a_delivery_refused_by_its_map_is_replayed_once_however_often_it_is_clicked(
    client: TestClient[Any, Any], pool: asyncpg.Pool, make_workflow: Any, worker: Any
) -> None:
    workflow, token = await make_workflow()
    source = await create_source(client, _source(workflow.public_id))
    assert (await _deliver(client, source, "d-7")).status == 422
    [rejection] = await _listed(client, 1)
    replay = f"{REJECTIONS}/{rejection['id']}/replay"
    still = await client.post(replay, headers=ADMIN)
    assert (still.status, (await still.json())["error"]) == (422, "mapping_failed")

    url = f"/api/v1/admin/sources/{source['id']}"
    assert (await client.patch(url, json={"map": FIXED_MAP}, headers=ADMIN)).status == 200
    clicks = await asyncio.gather(*(client.post(replay, headers=ADMIN) for _ in range(5)))
    assert {click.status for click in clicks} == {202}
    answers = [await click.json() for click in clicks]
    assert len({answer["status_url"] for answer in answers}) == 1
    done = await final_status(client, answers[0]["status_url"])
    assert (done["status"], done["http_status"]) == ("succeeded", 201)
    again = await client.post(replay, headers=ADMIN)
    assert (await again.json())["status_url"] == answers[0]["status_url"]
    await worker.drain()
    assert await pool.fetchval("SELECT count(*) FROM tasks") == 1
    task = await client.get(f"/api/v1/workflows/{token}/tasks/42")
    assert (await task.json())["Company Name"] == "Acme Corp"
    # The sender's own retry of the delivery is that same request: no second effect.
    retried = await _deliver(client, source, "d-7")
    assert (await retried.json())["status_url"] == answers[0]["status_url"]
    # Replays are not recorded as rejections.
    assert len(await _listed(client, 1)) == 1


async def test_a_delivery_refused_for_its_secret_is_replayed_as_of_its_arrival(
    client: TestClient[Any, Any], make_workflow: Any, worker: Any
) -> None:
    workflow, token = await make_workflow()
    stale_soon = {"scheme": "stripe", "secrets": ["whsec_wrong"], "tolerance": 1}
    source = await create_source(
        client, _source(workflow.public_id, verify=stale_soon, respond="sync")
    )
    event = {"id": "evt_1", **LEAD}
    body = orjson.dumps(event)
    signed_at = int(time.time())
    headers = {**JSON, **stripe_headers("whsec_right", body, signed_at)}
    refused = await client.post(hook_path(source), data=body, headers=headers)
    assert (await refused.json())["error"] == "invalid_signature"
    [rejection] = await _listed(client, 1)
    assert rejection["headers"]["stripe-signature"] == "<redacted>"

    fixed = {"scheme": "stripe", "secrets": ["whsec_right"], "tolerance": 1}
    url = f"/api/v1/admin/sources/{source['id']}"
    patch = {"verify": fixed, "map": FIXED_MAP}
    assert (await client.patch(url, json=patch, headers=ADMIN)).status == 200

    async def tolerance_passed() -> bool:
        return time.time() > signed_at + 2

    await wait_until(tolerance_passed)
    # Sent again now, the delivery is stale; replayed, it is checked as of when it arrived.
    late = await client.post(hook_path(source), data=body, headers=headers)
    assert (await late.json())["message"].startswith("stale delivery")
    replayed = await client.post(f"{REJECTIONS}/{rejection['id']}/replay", headers=ADMIN)
    assert replayed.status == 201, await replayed.text()
    assert (await replayed.json())["Company ID"] == "42"
    again = await client.post(f"{REJECTIONS}/{rejection['id']}/replay", headers=ADMIN)
    assert (again.status, await again.json()) == (201, await replayed.json())
    listed = await client.get(f"/api/v1/workflows/{token}/tasks", headers=ADMIN)
    assert len(await listed.json()) == 1


async def test_every_rejection_of_a_delivery_a_worker_refused_replays_as_one_request(
    client: TestClient[Any, Any], pool: asyncpg.Pool, make_workflow: Any, worker: Any
) -> None:
    workflow, _ = await make_workflow()
    invalid_stage = {**FIXED_MAP, "Stage": "'Shipped'"}
    source = await create_source(
        client, _source(workflow.public_id, map=invalid_stage, respond="sync")
    )
    refused = await _deliver(client, source, "d-9")
    assert refused.status == 422
    assert "Stage" in (await refused.json())["errors"]
    # The sender's retry is answered from the worker's stored 422, and recorded again.
    assert (await _deliver(client, source, "d-9")).status == 422
    retried, first = await _listed(client, 2)
    assert first["error"] == retried["error"] == "invalid_task"
    assert await pool.fetchval("SELECT bool_and(reached_worker) FROM rejections")
    results_before = await pool.fetchval("SELECT count(*) FROM request_results")

    url = f"/api/v1/admin/sources/{source['id']}"
    assert (await client.patch(url, json={"map": FIXED_MAP}, headers=ADMIN)).status == 200
    # The delivery id keys the refused request, whose 422 is stored: the replays need a key of
    # their own, one for the delivery whichever of its rejections is clicked.
    clicks = [f"{REJECTIONS}/{rejection['id']}/replay" for rejection in (first, retried) * 2]
    replays = await asyncio.gather(*(client.post(click, headers=ADMIN) for click in clicks))
    assert [replay.status for replay in replays] == [201] * 4, await replays[0].text()
    assert len({await replay.read() for replay in replays}) == 1  # one answer: one request
    assert await pool.fetchval("SELECT count(*) FROM tasks") == 1
    assert await pool.fetchval("SELECT count(*) FROM request_results") == results_before + 1


async def test_only_hook_deliveries_whose_body_was_kept_can_be_replayed(
    client: TestClient[Any, Any], make_workflow: Any
) -> None:
    workflow, token = await make_workflow()
    source = await create_source(client, _source(workflow.public_id))
    await client.post(f"/api/v1/workflows/{token}/tasks", data=b"[]", headers=JSON)
    await client.post(hook_path(source), data=b"{}", headers={"Content-Type": "text/plain"})
    never_read, task_write = await _listed(client, 2)
    refused = await client.post(f"{REJECTIONS}/{task_write['id']}/replay", headers=ADMIN)
    assert refused.status == 409
    assert "only hook deliveries" in (await refused.json())["message"]
    unread = await client.post(f"{REJECTIONS}/{never_read['id']}/replay", headers=ADMIN)
    assert unread.status == 409
    assert "never read" in (await unread.json())["message"]
    for unknown in ("999999", "abc", "9" * 30):
        missing = await client.post(f"{REJECTIONS}/{unknown}/replay", headers=ADMIN)
        assert missing.status == 404, unknown
    assert (await client.post(f"{REJECTIONS}/{task_write['id']}/replay")).status == 401
