"""Deliveries to sources, for their tests: sources made from the examples, deliveries posted,
their results awaited, and what was written counted."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import asyncpg
import orjson
from aiohttp.test_utils import TestClient

from tests.conftest import ROOT

ADMIN = {"Authorization": "Bearer admin-secret"}  # the `settings` fixture's admin token
EXAMPLES = ROOT / "examples" / "sources"
PROVIDERS = (
    "github-issues",
    "stripe-payments",
    "shopify-orders",
    "slack-events",
    "standard-webhooks",
)
JSON = {"Content-Type": "application/json"}


def example(provider: str, name: str) -> Any:
    return orjson.loads((EXAMPLES / provider / f"{name}.json").read_bytes())


def example_bytes(provider: str, name: str) -> bytes:
    return Path(EXAMPLES / provider / f"{name}.json").read_bytes()


async def create_source(
    client: TestClient[Any, Any], definition: dict[str, Any], status: int = 201
) -> dict[str, Any]:
    response = await client.post("/api/v1/admin/sources", json=definition, headers=ADMIN)
    assert response.status == status, await response.text()
    created: dict[str, Any] = await response.json()
    return created


def hook_path(source: dict[str, Any]) -> str:
    return f"/api/v1/hooks/{source['id']}"


def path_of(url: str) -> str:
    return "/" + url.split("://", 1)[1].split("/", 1)[1]


async def final_status(client: TestClient[Any, Any], status_url: str) -> dict[str, Any]:
    """The status document once it is no longer pending (or after 15 s)."""
    deadline = time.monotonic() + 15
    while True:
        document: dict[str, Any] = await (await client.get(path_of(status_url))).json()
        if document["status"] != "pending" or time.monotonic() > deadline:
            return document
        await asyncio.sleep(0.05)


async def written(pool: asyncpg.Pool) -> tuple[int, int]:
    """How many tasks and request results the database holds."""
    tasks = await pool.fetchval("SELECT count(*) FROM tasks")
    results = await pool.fetchval("SELECT count(*) FROM request_results")
    return tasks, results
