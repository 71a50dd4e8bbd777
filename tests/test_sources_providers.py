"""Each provider end to end, as its example in `examples/sources/` sets it up: a delivery signed
exactly as the provider signs it (`tests.signing`) becomes a task with the mapped fields;
handshakes and bad signatures write nothing; a delivery sent three times at once has one effect and
gets one answer."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import asyncpg
import orjson
import pytest
from aiohttp.test_utils import TestClient
from multidict import CIMultiDict

from ingest.signatures import TIMESTAMPED, Verification
from tests.deliveries import (
    JSON,
    PROVIDERS,
    create_source,
    example,
    example_bytes,
    final_status,
    hook_path,
    written,
)
from tests.signing import github_headers, sign, slack_headers

#: What each example delivery becomes: its task's Unique ID value, and fields it must show.
EXPECTED: dict[str, tuple[str, dict[str, Any]]] = {
    "github-issues": (
        "1",
        {
            "Number": "1347",
            "Title": "Found a bug",
            "Reporter": "octocat",
            "Repository": "octocat/Hello-World",
            "Labels": "bug, needs triage",
            "URL": "https://github.com/octocat/Hello-World/issues/1347",
            "Stage": "Triage",
        },
    ),
    "stripe-payments": (
        "pi_3MtwBwLkdIwHu7ix28a3tqPa",
        {
            "Amount (cents)": "2000",
            "Currency": "usd",
            "Customer": "cus_NffrFeUfNV2Hib",
            "Email": "jenny.rosen@example.com",
            "Failure": None,
            "Stage": "Paid",
        },
    ),
    "shopify-orders": (
        "820982911946154508",
        {
            "Order": "#9999",
            "Customer": "John Smith",
            "Total": "403.00",
            "Items": "3",
            "Payment": "paid",
            "Stage": "New",
        },
    ),
    "slack-events": (
        "Ev0LAN670R",
        {
            "Text": "<@U0LAN0Z89> is it everything a river should be?",
            "User": "U061F7AUR",
            "Channel": "C0LAN2Q65",
            "Stage": "New",
        },
    ),
    "standard-webhooks": (
        "1f81eb52-5198-4599-803e-771906343485",
        {"Email": "ada@example.com", "Name": "Ada Lovelace", "Plan": "pro", "Stage": "New"},
    ),
}


async def _provider_source(
    client: TestClient[Any, Any], make_workflow: Any, provider: str, **overrides: Any
) -> tuple[dict[str, Any], str, Verification]:
    """The provider's example workflow and source: (the source, the workflow token, how it
    verifies)."""
    workflow, token = await make_workflow(example(provider, "workflow"))
    definition = {**example(provider, "source"), "workflow": workflow.public_id, **overrides}
    source = await create_source(client, definition)
    return source, token, Verification.model_validate(definition["verify"])


def _signed(verification: Verification, body: bytes, delivery_id: str) -> dict[str, str]:
    return {**JSON, **sign(verification, body, int(time.time()), delivery_id)}


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_a_signed_delivery_becomes_a_task_with_the_mapped_fields(
    client: TestClient[Any, Any], worker: Any, make_workflow: Any, provider: str
) -> None:
    source, token, verification = await _provider_source(client, make_workflow, provider)
    body = example_bytes(provider, "delivery")
    response = await client.post(
        hook_path(source), data=body, headers=_signed(verification, body, uuid.uuid4().hex)
    )
    assert response.status == 202, await response.text()
    document = await final_status(client, (await response.json())["status_url"])
    assert (document["status"], document["http_status"]) == ("succeeded", 201), document
    unique_value, fields = EXPECTED[provider]
    task = await (await client.get(f"/api/v1/workflows/{token}/tasks/{unique_value}")).json()
    assert {name: task[name] for name in fields} == fields


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_a_delivery_sent_three_times_at_once_has_one_effect_and_one_answer(
    client: TestClient[Any, Any],
    worker: Any,
    make_workflow: Any,
    pool: asyncpg.Pool,
    provider: str,
) -> None:
    source, _, verification = await _provider_source(client, make_workflow, provider)
    body = example_bytes(provider, "delivery")
    headers = _signed(verification, body, uuid.uuid4().hex)

    async def deliver() -> tuple[int, bytes]:
        response = await client.post(hook_path(source), data=body, headers=headers)
        return response.status, await response.read()

    answers = await asyncio.gather(deliver(), deliver(), deliver())
    assert len(set(answers)) == 1, answers
    status, answer = answers[0]
    assert status == 202
    document = await final_status(client, orjson.loads(answer)["status_url"])
    assert document["http_status"] == 201
    # A retry after the task is written gets the same answer again, and writes nothing more.
    assert await deliver() == answers[0]
    await worker.drain()
    assert await written(pool) == (1, 1)


async def test_a_sync_delivery_sent_three_times_at_once_gets_the_first_answer_each_time(
    client: TestClient[Any, Any], worker: Any, make_workflow: Any, pool: asyncpg.Pool
) -> None:
    provider = "github-issues"
    source, _, verification = await _provider_source(
        client, make_workflow, provider, respond="sync"
    )
    body = example_bytes(provider, "delivery")
    headers = _signed(verification, body, uuid.uuid4().hex)

    async def deliver() -> tuple[int, Any]:
        response = await client.post(hook_path(source), data=body, headers=headers)
        return response.status, await response.json()

    answers = await asyncio.gather(deliver(), deliver(), deliver())
    assert [status for status, _ in answers] == [201, 201, 201]
    assert answers[0][1] == answers[1][1] == answers[2][1]
    assert await deliver() == answers[0]
    await worker.drain()
    assert await written(pool) == (1, 1)


async def test_an_issue_is_followed_through_its_life(
    client: TestClient[Any, Any], worker: Any, make_workflow: Any
) -> None:
    """Opened, edited (Stage left as it is), labeled (filtered out), closed."""
    source, token, verification = await _provider_source(
        client, make_workflow, "github-issues", respond="sync"
    )
    delivery = example("github-issues", "delivery")
    issue = delivery["issue"]

    async def deliver(action: str, **changed: Any) -> tuple[int, Any]:
        body = orjson.dumps({**delivery, "action": action, "issue": {**issue, **changed}})
        response = await client.post(
            hook_path(source), data=body, headers=_signed(verification, body, uuid.uuid4().hex)
        )
        return response.status, await response.json()

    assert (await deliver("opened"))[0] == 201
    moved = await client.post(
        f"/api/v1/workflows/{token}/tasks", json={"Issue ID": 1, "Stage": "In Progress"}
    )
    assert moved.status == 200
    status, task = await deliver("edited", title="Found a bug, and a fix")
    assert (status, task["Title"], task["Stage"]) == (200, "Found a bug, and a fix", "In Progress")
    assert await deliver("labeled") == (200, {"status": "ignored"})
    status, task = await deliver("closed")
    assert (status, task["Stage"]) == (200, "Done")


async def test_a_github_ping_is_answered_and_writes_nothing(
    client: TestClient[Any, Any], worker: Any, make_workflow: Any, pool: asyncpg.Pool
) -> None:
    source, _, verification = await _provider_source(client, make_workflow, "github-issues")
    body = orjson.dumps({"zen": "Design for failure.", "hook_id": 1, "hook": {"type": "Repo"}})
    headers = github_headers(verification.secrets[0], body, uuid.uuid4().hex, event="ping")
    response = await client.post(hook_path(source), data=body, headers={**JSON, **headers})
    assert response.status == 200
    assert await response.json() == {"status": "pong"}
    await worker.drain()
    assert await written(pool) == (0, 0)


async def test_a_slack_url_verification_is_answered_with_its_challenge(
    client: TestClient[Any, Any], worker: Any, make_workflow: Any, pool: asyncpg.Pool
) -> None:
    source, _, verification = await _provider_source(client, make_workflow, "slack-events")
    challenge = "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P"
    body = orjson.dumps({"token": "X", "challenge": challenge, "type": "url_verification"})
    headers = slack_headers(verification.secrets[0], body, int(time.time()))
    response = await client.post(hook_path(source), data=body, headers={**JSON, **headers})
    assert response.status == 200
    assert await response.json() == {"challenge": challenge}
    await worker.drain()
    assert await written(pool) == (0, 0)


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_a_delivery_whose_signature_fails_is_401_and_writes_nothing(
    client: TestClient[Any, Any],
    worker: Any,
    make_workflow: Any,
    pool: asyncpg.Pool,
    provider: str,
) -> None:
    source, _, verification = await _provider_source(client, make_workflow, provider)
    body = example_bytes(provider, "delivery")
    headers = _signed(verification, body, uuid.uuid4().hex)
    tampered = body.replace(b"}", b" }", 1)
    cases = [(tampered, headers, "matches none"), (body, JSON, "missing")]
    if verification.scheme in TIMESTAMPED:
        stale = {**JSON, **sign(verification, body, int(time.time()) - 3600, "late")}
        cases.append((body, stale, "stale"))
    for sent, with_headers, said in cases:
        response = await client.post(hook_path(source), data=sent, headers=with_headers)
        assert response.status == 401
        assert "WWW-Authenticate" not in response.headers
        error = await response.json()
        assert error["error"] == "invalid_signature"
        assert said in error["message"]
    await worker.drain()
    assert await written(pool) == (0, 0)


async def test_a_header_the_scheme_reads_sent_twice_is_401_and_writes_nothing(
    client: TestClient[Any, Any], worker: Any, make_workflow: Any, pool: asyncpg.Pool
) -> None:
    """With two signatures (or delivery ids), which one the verifier took would be a guess."""
    source, _, verification = await _provider_source(client, make_workflow, "github-issues")
    body = example_bytes("github-issues", "delivery")
    signed = github_headers(verification.secrets[0], body, uuid.uuid4().hex)
    for name in ("X-Hub-Signature-256", "X-GitHub-Delivery"):
        headers = CIMultiDict({**JSON, **signed})
        headers.add(name, signed[name] if name != "X-GitHub-Delivery" else "another")
        response = await client.post(hook_path(source), data=body, headers=headers)
        assert response.status == 401
        assert (await response.json())["message"] == f"send one {name} header, not several"
    await worker.drain()
    assert await written(pool) == (0, 0)
