"""Input the internet sends: floods, slow senders, compression bombs, guessed tokens."""

from __future__ import annotations

import asyncio
import gzip
import resource

import pytest
from aiohttp.test_utils import TestClient, TestServer

from ingest.edge.app import create_app
from tests.conftest import SEED_REQUEST

JSON = {"Content-Type": "application/json"}


async def _edge(settings, **changes):
    server = TestServer(create_app(settings.model_copy(update=changes)), port=settings.port)
    return TestClient(server)


async def test_over_the_rate_limit_is_429_with_retry_after(settings, make_workflow):
    _, token = await make_workflow()
    async with await _edge(settings, rate_limit=5.0, rate_burst=5) as client:
        statuses = []
        for _ in range(8):
            response = await client.post(
                f"/api/v1/workflows/{token}/tasks",
                json=SEED_REQUEST,
                headers={"Prefer": "respond-async"},
            )
            statuses.append(response.status)
            if response.status == 429:
                assert int(response.headers["Retry-After"]) >= 1
                assert (await response.json())["error"] == "rate_limited"
    assert statuses[:5] == [202] * 5
    assert 429 in statuses[5:]


async def test_a_slow_body_is_cut_off_at_the_read_deadline(settings, make_workflow):
    _, token = await make_workflow()
    async with await _edge(settings, body_read_timeout=0.5) as client:

        async def trickle():
            yield b'{"Company ID": '
            await asyncio.sleep(3)
            yield b'"1"}'

        started = asyncio.get_running_loop().time()
        response = await client.post(
            f"/api/v1/workflows/{token}/tasks", data=trickle(), headers=JSON
        )
        assert response.status == 408
        assert asyncio.get_running_loop().time() - started < 2.5


async def test_slow_clients_do_not_starve_normal_ones(client, worker, make_workflow, settings):
    _, token = await make_workflow()
    url = f"/api/v1/workflows/{token}/tasks"
    writers = []
    for _ in range(50):
        _, writer = await asyncio.open_connection("127.0.0.1", settings.port)
        writer.write(
            f"POST {url} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            "Content-Length: 100\r\n\r\n{".encode()
        )
        writers.append(writer)
    try:
        response = await asyncio.wait_for(client.post(url, json=SEED_REQUEST), 5)
        assert response.status == 201
    finally:
        for writer in writers:
            writer.close()


async def test_a_gzip_bomb_is_413_without_inflating(client, make_workflow, settings):
    _, token = await make_workflow()
    bomb = gzip.compress(b'{"a": "' + b"0" * 200_000_000 + b'"}', compresslevel=9)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    response = await client.post(
        f"/api/v1/workflows/{token}/tasks",
        data=bomb,
        headers={**JSON, "Content-Encoding": "gzip"},
    )
    grown_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert response.status == 413
    assert grown_mib < 64


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/workflows/WRONG/tasks",
        "/api/v1/workflows/{near}/tasks",
        "/api/v1/workflows/tasks?token={token}",
        "/api/v1/workflows/x/tasks?token={token}",
    ],
)
async def test_every_wrong_token_gets_the_same_404(client, make_workflow, path):
    _, token = await make_workflow()
    near = token[:-1] + ("A" if token[-1] != "A" else "B")
    response = await client.post(path.format(token=token, near=near), json=SEED_REQUEST)
    assert response.status == 404
    assert await response.json() == {"error": "not_found", "message": "no workflow has this token"}


async def test_twenty_clients_racing_one_unique_id_make_one_task(
    client, worker, make_workflow, pool
):
    _, token = await make_workflow()
    bodies = [
        {**SEED_REQUEST, "Company Name": f"racer {n}", "Number of Employees": n} for n in range(20)
    ]
    responses = await asyncio.gather(
        *(client.post(f"/api/v1/workflows/{token}/tasks", json=body) for body in bodies)
    )
    statuses = sorted(r.status for r in responses)
    assert statuses == [200] * 19 + [201]
    assert await pool.fetchval("SELECT count(*) FROM tasks") == 1
    assert await pool.fetchval("SELECT count(*) FROM dead_letters") == 0
    final = await (await client.get(f"/api/v1/workflows/{token}/tasks/42")).json()
    assert final["Company Name"].startswith("racer ")


async def test_a_lone_surrogate_is_400_before_anything_is_published(client, make_workflow):
    _, token = await make_workflow()
    response = await client.post(
        f"/api/v1/workflows/{token}/tasks",
        data=b'{"Company ID": "1", "Company Name": "\\ud800"}',
        headers=JSON,
    )
    assert response.status == 400
    assert "surrogate" in (await response.json())["message"]


async def test_long_numeric_unique_ids_stay_distinct(client, worker, make_workflow, pool):
    definition = {
        "name": "Accounts",
        "fields": [{"name": "Account", "type": "number", "required": True}],
        "unique_id": "Account",
    }
    _, token = await make_workflow(definition)
    for number in ("12345678901234567890123456789012", "12345678901234567890123456789099"):
        response = await client.post(
            f"/api/v1/workflows/{token}/tasks", data=f'{{"Account": {number}}}', headers=JSON
        )
        assert response.status == 201
    assert await pool.fetchval("SELECT count(*) FROM tasks") == 2
    got = await client.get(f"/api/v1/workflows/{token}/tasks/12345678901234567890123456789099")
    assert (await got.json())["Account"] == "12345678901234567890123456789099"


async def test_datetimes_outside_utc_range_are_invalid_not_poison(client, worker, make_workflow):
    definition = {"name": "Events", "fields": [{"name": "At", "type": "datetime"}]}
    _, token = await make_workflow(definition)
    response = await client.post(
        f"/api/v1/workflows/{token}/tasks", json={"At": "0001-01-01T00:00:00+05:00"}
    )
    assert (response.status, await response.json()) == (422, {"errors": {"At": ["is invalid"]}})
    listed = await client.get(f"/api/v1/workflows/{token}/tasks?At=0001-01-01T00:00:00%2B05:00")
    assert listed.status == 400


async def test_a_corrupt_compressed_body_is_400(client, make_workflow):
    _, token = await make_workflow()
    response = await client.post(
        f"/api/v1/workflows/{token}/tasks",
        data=b"this is not gzip at all",
        headers={**JSON, "Content-Encoding": "gzip"},
    )
    assert response.status == 400
    assert (await response.json())["error"] == "malformed_body"


async def test_admin_definitions_with_huge_numbers_are_refused_cleanly(client):
    response = await client.post(
        "/api/v1/admin/workflows",
        data=b'{"name": "x", "fields": [{"name": "a", "type": "text", "id": 1e400}]}',
        headers={**JSON, "Authorization": "Bearer admin-secret"},
    )
    assert response.status == 422
