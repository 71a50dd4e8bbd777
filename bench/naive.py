"""The naive peer: the webhook handler a team writes in an afternoon instead of running ingest.

aiohttp + uvloop + orjson and a pool of 10 asyncpg connections; each request is one
`INSERT … ON CONFLICT` of one jsonb row keyed by "Company ID" (a second request for the same key
merges its fields into the stored ones). Nothing validated beyond "a JSON object with a key", no
queue, no batching, defaults everywhere else (synchronous_commit on, asyncpg's pool as it comes).

Usage: python bench/naive.py PORT DSN
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator

import asyncpg
import orjson
import uvloop
from aiohttp import web

POOL = web.AppKey("pool", asyncpg.Pool)
DSN = web.AppKey("dsn", str)
UNIQUE_KEY = "Company ID"
CREATE_TABLE = """
CREATE TABLE IF NOT EXISTS naive_tasks (
    unique_key text        PRIMARY KEY,
    payload    jsonb       NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
)
"""
UPSERT = """
INSERT INTO naive_tasks (unique_key, payload) VALUES ($1, $2::jsonb)
ON CONFLICT (unique_key) DO UPDATE
    SET payload = naive_tasks.payload || EXCLUDED.payload, updated_at = now()
RETURNING xmax = 0 AS created
"""


def bad_request(message: str) -> web.Response:
    return web.Response(
        body=orjson.dumps({"error": message}), status=400, content_type="application/json"
    )


async def upsert(request: web.Request) -> web.Response:
    try:
        body = orjson.loads(await request.read())
    except orjson.JSONDecodeError:
        return bad_request("body is not JSON")
    if not isinstance(body, dict):
        return bad_request("body is not a JSON object")
    key = body.get(UNIQUE_KEY)
    if key is None:
        return bad_request(f"{UNIQUE_KEY} is required")
    created = await request.app[POOL].fetchval(UPSERT, str(key), orjson.dumps(body).decode())
    answer = {"unique_key": str(key), "created": created}
    return web.Response(
        body=orjson.dumps(answer), status=201 if created else 200, content_type="application/json"
    )


async def pool_context(app: web.Application) -> AsyncIterator[None]:
    pool = await asyncpg.create_pool(app[DSN], min_size=10, max_size=10)
    await pool.execute(CREATE_TABLE)
    app[POOL] = pool
    yield
    await pool.close()


def main() -> None:
    app = web.Application()
    app[DSN] = sys.argv[2]
    app.cleanup_ctx.append(pool_context)
    app.router.add_post("/api/v1/workflows/{token}/tasks", upsert)
    web.run_app(
        app, host="127.0.0.1", port=int(sys.argv[1]), print=None, loop=uvloop.new_event_loop()
    )


if __name__ == "__main__":
    main()
