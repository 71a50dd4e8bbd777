"""Bad input at the edge gets a clear JSON error before anything is published."""

from __future__ import annotations

import gzip
import io
import json
import zlib

import pytest
from multidict import CIMultiDict

from tests.conftest import SEED_REQUEST

JSON = {"Content-Type": "application/json"}


@pytest.fixture
async def token(make_workflow):
    return (await make_workflow())[1]


@pytest.mark.parametrize(
    ("data", "status"),
    [
        (b"", 400),
        (b"{not json", 400),
        (b"[1, 2]", 400),
        (b'"a string"', 400),
        (b'{"Company ID": "\\u0000"}', 400),
        (b'{"Company ID": NaN}', 400),
        (b'{"a": Infinity}', 400),
        (b"\xff\xfe{}", 400),
        (b"[" * 100_000 + b"]" * 100_000, 400),
        (b'{"a":' + b"[" * 100_000 + b"]" * 100_000 + b"}", 400),
        (b'{"a":' * 200 + b"1" + b"}" * 200, 400),
    ],
)
async def test_malformed_bodies_are_400_json(client, token, data, status):
    response = await client.post(f"/api/v1/workflows/{token}/tasks", data=data, headers=JSON)
    assert response.status == status
    body = await response.json()
    assert body["error"] == "malformed_body"
    assert body["message"]


async def test_wrong_content_type_is_415(client, token):
    response = await client.post(
        f"/api/v1/workflows/{token}/tasks", data=b"a=b", headers={"Content-Type": "text/plain"}
    )
    assert response.status == 415
    assert "application/json" in (await response.json())["message"]


@pytest.mark.parametrize(
    ("codings", "compressed"),
    [
        (["foo"], False),
        (["x-gzip"], True),
        (["identity, gzip"], True),
        (["gzip, identity"], True),
        (["gzip, gzip"], True),
        (["gzip", "gzip"], True),
        (["identity", "gzip"], True),
    ],
)
@pytest.mark.parametrize("route", ["task", "admin"])
async def test_a_content_encoding_the_edge_does_not_decode_is_415(
    client, token, codings, compressed, route
):
    """Never read as if it were plain: `foo` used to pass as is, `x-gzip` reached the JSON parser
    still compressed (a 400 about UTF-8)."""
    plain = json.dumps(SEED_REQUEST).encode()
    headers = CIMultiDict(JSON)
    for coding in codings:
        headers.add("Content-Encoding", coding)
    path = f"/api/v1/workflows/{token}/tasks"
    if route == "admin":
        path = "/api/v1/admin/workflows"
        headers["Authorization"] = "Bearer admin-secret"
    data = gzip.compress(plain) if compressed else plain
    response = await client.post(path, data=data, headers=headers)
    assert response.status == 415
    assert response.headers["Accept-Encoding"] == "gzip, deflate"
    body = await response.json()
    assert body["error"] == "unsupported_content_encoding"
    assert "gzip or deflate" in body["message"]


@pytest.mark.parametrize("coding", ["gzip", "GZIP", " Gzip ", "deflate", "identity", ""])
async def test_the_codings_aiohttp_decodes_are_read(client, worker, token, coding):
    plain = json.dumps(SEED_REQUEST).encode()
    data = plain
    if coding.strip().lower() == "gzip":
        data = gzip.compress(plain)
    elif coding == "deflate":
        data = zlib.compress(plain)
    response = await client.post(
        f"/api/v1/workflows/{token}/tasks",
        data=data,
        headers={**JSON, "Content-Encoding": coding},
    )
    assert response.status in (200, 201), await response.text()


async def test_body_over_the_limit_is_413(client, token, settings):
    data = io.BytesIO(b'{"a": "' + b"x" * (settings.max_body_bytes + 10) + b'"}')
    response = await client.post(f"/api/v1/workflows/{token}/tasks", data=data, headers=JSON)
    assert response.status == 413
    assert (await response.json())["error"] == "body_too_large"


async def test_chunked_body_over_the_limit_is_413(client, token, settings):
    async def chunks():
        yield b'{"a": "'
        for _ in range(settings.max_body_bytes // 65536 + 2):
            yield b"x" * 65536
        yield b'"}'

    response = await client.post(f"/api/v1/workflows/{token}/tasks", data=chunks(), headers=JSON)
    assert response.status == 413


async def test_huge_numbers_are_refused_not_stored_as_float(client, worker, token):
    response = await client.post(
        f"/api/v1/workflows/{token}/tasks",
        data=b'{"Company ID": "1", "Company Name": "a", "Contract Value": 1e999999}',
        headers=JSON,
    )
    assert response.status == 422
    assert (await response.json()) == {"errors": {"Contract Value": ["is not a number"]}}


async def test_unknown_routes_and_methods_are_json(client, token):
    response = await client.get("/nowhere")
    assert response.status == 404
    assert (await response.json())["error"] == "not_found"
    response = await client.patch(f"/api/v1/workflows/{token}/tasks", json=SEED_REQUEST)
    assert response.status == 405
    assert "POST" in response.headers["Allow"]


async def test_health_endpoints(client):
    assert (await client.get("/healthz")).status == 200
    response = await client.get("/readyz")
    assert response.status == 200
    assert (await response.json()) == {"status": "ok"}
