"""Idempotency-Key (IETF httpapi draft, SPEC §4): a retry has one effect and the original answer."""

from __future__ import annotations

import asyncio

from tests.conftest import SEED_REQUEST


def tasks_url(token):
    return f"/api/v1/workflows/{token}/tasks"


async def test_same_key_and_body_gets_the_original_result(client, worker, make_workflow, pool):
    _, token = await make_workflow()
    headers = {"Idempotency-Key": "order-1"}
    first = await client.post(tasks_url(token), json=SEED_REQUEST, headers=headers)
    second = await client.post(tasks_url(token), json=SEED_REQUEST, headers=headers)
    assert (first.status, second.status) == (201, 201)
    assert await first.json() == await second.json()
    assert await pool.fetchval("SELECT count(*) FROM request_results") == 1


async def test_same_key_with_a_different_body_is_422(client, worker, make_workflow, pool):
    _, token = await make_workflow()
    headers = {"Idempotency-Key": '"order-2"'}
    assert (await client.post(tasks_url(token), json=SEED_REQUEST, headers=headers)).status == 201
    other = {**SEED_REQUEST, "Company Name": "Someone else"}
    response = await client.post(tasks_url(token), json=other, headers=headers)
    assert response.status == 422
    assert (await response.json())["error"] == "idempotency_key_reused"
    name = await pool.fetchval("SELECT fields->>'2' FROM tasks")
    assert name == "Acme Corp"


async def test_pending_retry_gets_the_same_status_url(client, stopped_worker, make_workflow):
    _, token = await make_workflow()
    headers = {"Idempotency-Key": "order-3", "Prefer": "respond-async"}
    first = await client.post(tasks_url(token), json=SEED_REQUEST, headers=headers)
    second = await client.post(tasks_url(token), json=SEED_REQUEST, headers=headers)
    assert (first.status, second.status) == (202, 202)
    assert first.headers["Location"] == second.headers["Location"]


async def test_concurrent_duplicates_with_one_key_have_one_effect(
    client, worker, make_workflow, pool
):
    _, token = await make_workflow()
    headers = {"Idempotency-Key": "burst"}
    body = {**SEED_REQUEST, "Company ID": "burst"}
    responses = await asyncio.gather(
        *(client.post(tasks_url(token), json=body, headers=headers) for _ in range(20))
    )
    assert {r.status for r in responses} == {201}
    assert await pool.fetchval("SELECT count(*) FROM request_results") == 1
    assert await pool.fetchval("SELECT count(*) FROM tasks") == 1


async def test_keys_are_per_workflow(client, worker, make_workflow):
    _, one = await make_workflow()
    _, two = await make_workflow()
    headers = {"Idempotency-Key": "shared"}
    assert (await client.post(tasks_url(one), json=SEED_REQUEST, headers=headers)).status == 201
    assert (await client.post(tasks_url(two), json=SEED_REQUEST, headers=headers)).status == 201


async def test_a_malformed_key_is_400(client, make_workflow):
    _, token = await make_workflow()
    response = await client.post(
        tasks_url(token), json=SEED_REQUEST, headers={"Idempotency-Key": "x" * 300}
    )
    assert response.status == 400
    assert (await response.json())["error"] == "invalid_header"


async def test_concurrent_requests_reusing_a_key_with_other_bodies_get_their_own_answers(
    client, worker, make_workflow, pool
):
    _, token = await make_workflow()
    headers = {"Idempotency-Key": "contested"}
    bodies = [{**SEED_REQUEST, "Company ID": "c", "Company Name": f"n{n}"} for n in range(6)]
    responses = await asyncio.gather(
        *(client.post(tasks_url(token), json=body, headers=headers) for body in bodies)
    )
    answers = [(r.status, await r.json()) for r in responses]
    winners = [body for status, body in answers if status == 201]
    assert len(winners) == 1
    assert all(
        status == 422 and body["error"] == "idempotency_key_reused"
        for status, body in answers
        if status != 201
    )
    stored = await pool.fetchval("SELECT fields->>'2' FROM tasks")
    assert winners[0]["Company Name"] == stored
