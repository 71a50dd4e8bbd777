"""Dead letters: messages the workers could not process within the queue's delivery limit.

A worker records each dead-lettered message in Postgres and marks its requests `failed`, so their
status URLs say so; operators list them and replay them (`ingest dlq list`, `ingest dlq replay`).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import aio_pika
import orjson
from aio_pika.abc import AbstractExchange, DeliveryMode

from ingest.messages import CONTENT_TYPE, TASKS_MESSAGE_TYPE, TaskBatch
from ingest.store import Connection, Pool

DEAD_OUTCOME = "dead"
DEAD_STATUS = 500


@dataclass(frozen=True, slots=True)
class DeadLetter:
    id: int
    message_id: str | None
    reason: str
    request_ids: list[uuid.UUID]
    dead_at: datetime
    body: bytes

    def summary(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "message_id": self.message_id,
            "reason": self.reason,
            "requests": [r.hex for r in self.request_ids],
            "dead_at": self.dead_at.isoformat(),
        }


def death_reason(headers: dict[str, Any] | None) -> str:
    """Why RabbitMQ dead-lettered a message, from its x-death header."""
    deaths = (headers or {}).get("x-death") or []
    if deaths and isinstance(deaths[0], dict):
        reason = deaths[0].get("reason", "unknown")
        return reason.decode() if isinstance(reason, bytes) else str(reason)
    return "unknown"


def _failure_body(reason: str) -> str:
    return orjson.dumps(
        {
            "error": "dead_lettered",
            "message": f"the request could not be processed ({reason}); an operator can replay it",
        }
    ).decode()


async def record(conn: Connection, message_id: str | None, body: bytes, reason: str) -> int:
    """Keep a dead message and mark its requests failed (unless they already have a result)."""
    try:
        batch: TaskBatch | None = TaskBatch.decode(body)
    except Exception:
        batch = None
    requests = batch.requests if batch else ()
    async with conn.transaction():
        letter_id: int = await conn.fetchval(
            "INSERT INTO dead_letters (message_id, body, reason, request_ids)"
            " VALUES ($1, $2, $3, $4) RETURNING id",
            message_id,
            body,
            reason,
            [r.id for r in requests],
        )
        if requests:
            await conn.execute(
                "INSERT INTO request_results"
                " (request_id, workflow_id, http_status, outcome, body, received_at)"
                " SELECT r.id, r.wf, $3, $4, $5, to_timestamp(r.at)"
                " FROM unnest($1::uuid[], $2::bigint[], $6::float8[]) AS r(id, wf, at)"
                " WHERE EXISTS (SELECT 1 FROM workflows w WHERE w.id = r.wf)"
                " ON CONFLICT (request_id) DO NOTHING",
                [r.id for r in requests],
                [r.workflow_id for r in requests],
                DEAD_STATUS,
                DEAD_OUTCOME,
                _failure_body(reason),
                [r.received_at for r in requests],
            )
    return letter_id


def _letter(row: Any) -> DeadLetter:
    return DeadLetter(
        id=row["id"],
        message_id=row["message_id"],
        reason=row["reason"],
        request_ids=list(row["request_ids"]),
        dead_at=row["dead_at"],
        body=bytes(row["body"]),
    )


async def list_letters(pool: Pool, limit: int = 1000) -> list[DeadLetter]:
    rows = await pool.fetch("SELECT * FROM dead_letters ORDER BY id LIMIT $1", limit)
    return [_letter(row) for row in rows]


async def replay(
    pool: Pool, exchange: AbstractExchange, routing_key: str, ids: list[int] | None
) -> int:
    """Publish dead letters again (all when `ids` is None); returns how many were replayed.

    Each letter's `failed` results are removed in the same transaction that removes the letter, and
    that transaction commits only after the broker confirmed the new publish.
    """
    replayed = 0
    async with pool.acquire(timeout=10) as conn:
        query = "SELECT * FROM dead_letters ORDER BY id"
        rows = (
            await conn.fetch(query)
            if ids is None
            else await conn.fetch(
                "SELECT * FROM dead_letters WHERE id = ANY($1::bigint[]) ORDER BY id", ids
            )
        )
        for letter in (_letter(row) for row in rows):
            async with conn.transaction():
                await conn.execute(
                    "DELETE FROM request_results"
                    " WHERE request_id = ANY($1::uuid[]) AND outcome = $2",
                    letter.request_ids,
                    DEAD_OUTCOME,
                )
                await conn.execute("DELETE FROM dead_letters WHERE id = $1", letter.id)
                message = aio_pika.Message(
                    letter.body,
                    content_type=CONTENT_TYPE,
                    delivery_mode=DeliveryMode.PERSISTENT,
                    message_id=letter.message_id,
                    type=TASKS_MESSAGE_TYPE,
                    headers={"x-requests": max(len(letter.request_ids), 1), "x-replayed": True},
                )
                await exchange.publish(message, routing_key=routing_key, mandatory=True, timeout=10)
            replayed += 1
    return replayed
