"""The naive direct baseline: one aiohttp handler that upserts each request into Postgres itself.

Same tables as ingest (tasks + typed task_values), same durability (synchronous_commit on), one
transaction per request with INSERT … ON CONFLICT on the Unique ID; no queue, no batching.

    python bench/direct.py PORT DSN WORKFLOW_ID
"""

from __future__ import annotations

import secrets
import sys
from decimal import Decimal
from typing import Any

import asyncpg
import orjson
import uvloop
from aiohttp import web

POOL = web.AppKey("pool", asyncpg.Pool)
UPSERT_TASK = (
    "INSERT INTO tasks (workflow_id, public_id, unique_key, stage, assigned_to)"
    " VALUES ($1, $2, $3, $4, $5) ON CONFLICT (workflow_id, unique_key)"
    " DO UPDATE SET stage = EXCLUDED.stage, assigned_to = EXCLUDED.assigned_to, updated_at = now()"
    " RETURNING id, (xmax = 0) AS created"
)
UPSERT_VALUES = (
    "INSERT INTO task_values (task_id, field_id, number_value, text_value, date_value, boolean_value)"
    " SELECT $1, f, n, t, d, b FROM unnest($2::int[], $3::numeric[], $4::text[], $5::date[],"
    " $6::bool[]) AS v(f, n, t, d, b)"
    " ON CONFLICT (task_id, field_id) DO UPDATE SET number_value = EXCLUDED.number_value,"
    " text_value = EXCLUDED.text_value, date_value = EXCLUDED.date_value,"
    " boolean_value = EXCLUDED.boolean_value"
)


def _values(body: dict[str, Any]) -> tuple[list[Any], ...]:
    from datetime import date

    fields = [1, 2, 3, 4, 5, 6]
    numbers = [None, None, Decimal(str(body["Number of Employees"])),
               Decimal(str(body["Contract Value"])), None, None]
    texts = [body["Company ID"], body["Company Name"], None, None, None, None]
    dates = [None, None, None, None, date.fromisoformat(body["Expected Close Date"]), None]
    flags = [None, None, None, None, None, body["International?"]]
    return fields, numbers, texts, dates, flags


async def accept(request: web.Request) -> web.Response:
    body = orjson.loads(await request.read())
    workflow_id = request.app["workflow_id"]
    async with request.app[POOL].acquire() as conn, conn.transaction():
        row = await conn.fetchrow(
            UPSERT_TASK, workflow_id, secrets.token_urlsafe(12), body["Company ID"],
            body.get("Stage", "Not Started"), body.get("Assigned To"),
        )
        await conn.execute(UPSERT_VALUES, row["id"], *_values(body))
    return web.Response(body=orjson.dumps(body), status=201 if row["created"] else 200,
                        content_type="application/json")


async def pool_context(app: web.Application):  # type: ignore[no-untyped-def]
    app[POOL] = await asyncpg.create_pool(app["dsn"], min_size=8, max_size=8)
    yield
    await app[POOL].close()


def main() -> None:
    app = web.Application()
    app["dsn"], app["workflow_id"] = sys.argv[2], int(sys.argv[3])
    app.cleanup_ctx.append(pool_context)
    app.router.add_post("/api/v1/workflows/{token}/tasks", accept)
    web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), access_log=None, print=None,
                loop=uvloop.new_event_loop())


if __name__ == "__main__":
    main()
