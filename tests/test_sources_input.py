"""Bad input at the receive route: each is a 4xx with a JSON body naming the problem, never a 500,
and nothing is written (SPEC §6, issue 11 point 7)."""

from __future__ import annotations

import gzip
import io
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import orjson
import pytest
from aiohttp.test_utils import TestClient, TestServer

from ingest.edge.app import create_app
from ingest.settings import Settings
from tests.deliveries import JSON, create_source, final_status, hook_path, written
from tests.signing import github_headers

_DEFINITION = {
    "name": "Leads",
    "verify": {"scheme": "none"},
    "map": {"Company ID": "id", "Company Name": "name", "Number of Employees": "size"},
}

#: Bodies the edge refuses as it refuses them for a task (400 `malformed_body`), by what is wrong.
MALFORMED = {
    "empty": b"",
    "not JSON": b"{'id': 1}",
    "not an object": b"[1, 2]",
    "a string": b'"id"',
    "not UTF-8": b'{"id": "\xff"}',
    "NUL": b'{"id": "1\\u0000"}',
    "lone surrogate": b'{"id": "\\ud800"}',
    "nested too deep": b'{"a": ' * 70 + b"1" + b"}" * 70,
    "NaN": b'{"id": NaN}',
    "two documents": b'{"id": 1} {"id": 2}',
}


async def _source(client: TestClient[Any, Any], make_workflow: Any, **more: Any) -> dict[str, Any]:
    workflow, _ = await make_workflow()
    return await create_source(client, {**_DEFINITION, "workflow": workflow.public_id, **more})


@pytest.mark.parametrize("body", MALFORMED.values(), ids=MALFORMED.keys())
async def test_a_body_that_is_no_json_object_is_400(
    client: TestClient[Any, Any], worker: Any, make_workflow: Any, pool: asyncpg.Pool, body: bytes
) -> None:
    source = await _source(client, make_workflow)
    response = await client.post(hook_path(source), data=body, headers=JSON)
    assert response.status == 400
    assert (await response.json())["error"] == "malformed_body"
    await worker.drain()
    assert await written(pool) == (0, 0)


async def test_a_signed_body_is_still_checked_after_its_signature(
    client: TestClient[Any, Any], make_workflow: Any, pool: asyncpg.Pool
) -> None:
    verify = {"scheme": "github", "secrets": ["s"]}
    source = await _source(client, make_workflow, verify=verify)
    body = b"[1]"
    headers = {**JSON, **github_headers("s", body, uuid.uuid4().hex)}
    response = await client.post(hook_path(source), data=body, headers=headers)
    assert response.status == 400
    assert await written(pool) == (0, 0)


async def test_an_oversize_body_is_413(
    client: TestClient[Any, Any], make_workflow: Any, pool: asyncpg.Pool, settings: Settings
) -> None:
    source = await _source(client, make_workflow)
    body = orjson.dumps({"id": "1", "pad": "x" * settings.max_body_bytes})
    for sent, headers in (
        (body, JSON),
        (gzip.compress(body), {**JSON, "Content-Encoding": "gzip"}),
    ):
        response = await client.post(hook_path(source), data=io.BytesIO(sent), headers=headers)
        assert response.status == 413
        assert (await response.json())["error"] == "body_too_large"
    assert await written(pool) == (0, 0)


@pytest.mark.parametrize(
    "content_type", ["text/plain", "application/x-www-form-urlencoded", "application/xml"]
)
async def test_a_body_that_is_not_json_by_its_content_type_is_415(
    client: TestClient[Any, Any], make_workflow: Any, pool: asyncpg.Pool, content_type: str
) -> None:
    source = await _source(client, make_workflow)
    response = await client.post(
        hook_path(source), data=b'{"id": "1"}', headers={"Content-Type": content_type}
    )
    assert response.status == 415
    assert (await response.json())["error"] == "unsupported_media_type"
    assert await written(pool) == (0, 0)


async def test_json_content_types_senders_use_are_accepted(
    client: TestClient[Any, Any], worker: Any, make_workflow: Any
) -> None:
    source = await _source(client, make_workflow)
    for content_type in ("application/json", "application/vnd.github+json", None):
        headers = {"Content-Type": content_type} if content_type else {}
        body = orjson.dumps({"id": uuid.uuid4().hex, "name": "Acme"})
        response = await client.post(
            hook_path(source), data=body, headers=headers, skip_auto_headers=["Content-Type"]
        )
        assert response.status == 202, content_type


@pytest.mark.parametrize(
    "source_id", ["nope", "a" * 43, "x" * 300, "%00", "..%2F..%2Fadmin", "%ED%A0%80"]
)
async def test_an_unknown_source_is_404_like_every_unknown_id(
    client: TestClient[Any, Any], source_id: str
) -> None:
    response = await client.post(f"/api/v1/hooks/{source_id}", json={"id": "1"})
    assert response.status == 404
    assert await response.json() == {"error": "not_found", "message": "no source has this id"}
    status = await client.get(f"/api/v1/hooks/{source_id}/requests/abc")
    assert status.status == 404


async def test_numbers_beyond_the_bounds_are_the_fields_own_422(
    client: TestClient[Any, Any], worker: Any, make_workflow: Any, pool: asyncpg.Pool
) -> None:
    source = await _source(client, make_workflow, respond="sync")
    huge = "9" * 2000
    body = f'{{"id": "1", "name": "Acme", "size": {huge}, "unmapped": 1e99999}}'.encode()
    response = await client.post(hook_path(source), data=body, headers=JSON)
    assert response.status == 422
    assert (await response.json())["errors"] == {"Number of Employees": ["is not a number"]}
    body = f'{{"id": "1", "name": "Acme", "size": 10, "unmapped": -{huge}.5e-7}}'.encode()
    response = await client.post(hook_path(source), data=body, headers=JSON)
    assert response.status == 201  # what is not mapped does not matter
    assert await written(pool) == (1, 2)


async def test_a_mapped_value_too_large_for_a_task_is_422(
    client: TestClient[Any, Any], make_workflow: Any, pool: asyncpg.Pool, settings: Settings
) -> None:
    mapping = {"Company ID": "id", "Company Name": "to_string(@)", "Number of Employees": "@"}
    source = await _source(client, make_workflow, map=mapping)
    body = orjson.dumps({"id": "1", "pad": "x" * (settings.max_body_bytes // 2)})
    response = await client.post(hook_path(source), data=io.BytesIO(body), headers=JSON)
    assert response.status == 422
    error = await response.json()
    assert error["error"] == "mapping_failed"
    assert f"the task would exceed {settings.max_body_bytes} bytes" in error["message"]
    assert await written(pool) == (0, 0)


async def test_an_async_delivery_of_a_big_body_is_mapped_off_the_event_loop(
    client: TestClient[Any, Any], worker: Any, make_workflow: Any
) -> None:
    source = await _source(client, make_workflow)
    body = orjson.dumps({"id": "1", "name": "Acme", "size": 3, "pad": ["y" * 100] * 2000})
    response = await client.post(hook_path(source), data=io.BytesIO(body), headers=JSON)
    assert response.status == 202
    document = await final_status(client, (await response.json())["status_url"])
    assert document["http_status"] == 201


@pytest.fixture
async def limited(settings: Settings) -> AsyncIterator[TestClient[Any, Any]]:
    """The edge with a rate limit of one request a second, no burst."""
    limited = settings.model_copy(update={"rate_limit": 1.0, "rate_burst": 1})
    server = TestServer(create_app(limited), host="127.0.0.1", port=limited.port)
    async with TestClient(server) as client:
        yield client


async def test_the_rate_limit_of_the_workflow_applies_to_its_sources(
    limited: TestClient[Any, Any], make_workflow: Any
) -> None:
    source = await _source(limited, make_workflow, filter="`false`")
    started = time.monotonic()
    first = await limited.post(hook_path(source), json={"id": "1"})
    second = await limited.post(hook_path(source), json={"id": "1"})
    if time.monotonic() - started < 0.9:  # both within one second's budget
        assert first.status == 200
        assert second.status == 429
        assert second.headers["Retry-After"]
        assert (await second.json())["error"] == "rate_limited"
