"""Dead letters: requests the workers could not apply, kept one request a letter.

A request is dead-lettered alone when it fails by itself with an error that is not about its data
(a bug it triggers; the worker records it), or when its whole broker message reached the queue's
delivery limit without a final result for it (a worker crashing on it; the broker dead-letters the
message and a worker records one letter per unfinished request). Its status URL says `failed`
(500 `dead_lettered`); operators list and replay letters (`ingest dlq list`, `ingest dlq replay`),
which publishes their requests again, not the messages they came in. The `dead` results that go
with the letters are written and removed by `ingest.results`, like every result.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import aio_pika
from aio_pika.abc import AbstractExchange, DeliveryMode

from ingest import results
from ingest.errors import DecodeError
from ingest.messages import CONTENT_TYPE, TASKS_MESSAGE_TYPE, TaskBatch, TaskRequest
from ingest.store import Connection, Pool


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


async def record_request(conn: Connection, request: TaskRequest, reason: str) -> int:
    """Keep one request that cannot be applied as a dead letter of its own (its result,
    `results.dead_lettered`, is written by the caller in the same transaction)."""
    (letter_id,) = await _insert_letters(conn, request.id.hex, reason, [request])
    return letter_id


async def record(conn: Connection, message_id: str | None, body: bytes, reason: str) -> list[int]:
    """Keep a message the broker dead-lettered: one letter per request that has no final result
    yet (the others were applied before the message died), each marked failed; an undecodable
    message is kept whole."""
    try:
        batch: TaskBatch | None = TaskBatch.decode(body)
    except Exception:
        batch = None
    async with conn.transaction():
        if batch is None:
            letter_id = await conn.fetchval(
                "INSERT INTO dead_letters (message_id, body, reason) VALUES ($1, $2, $3)"
                " RETURNING id",
                message_id,
                body,
                reason,
            )
            return [letter_id]
        done = await results.finished(conn, [r.id for r in batch.requests])
        requests = list({r.id: r for r in batch.requests if r.id not in done}.values())
        if not requests:
            return []
        letters = await _insert_letters(conn, message_id, reason, requests)
        await results.insert_dead_results(conn, requests)
    return letters


async def _insert_letters(
    conn: Connection, message_id: str | None, reason: str, requests: list[TaskRequest]
) -> list[int]:
    rows = await conn.fetch(
        "INSERT INTO dead_letters (message_id, body, reason, request_ids)"
        " SELECT $1, l.body, $2, ARRAY[l.id] FROM unnest($3::bytea[], $4::uuid[]) AS l(body, id)"
        " RETURNING id",
        message_id,
        reason,
        [TaskBatch((r,)).encode() for r in requests],
        [r.id for r in requests],
    )
    return [row["id"] for row in rows]


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


@dataclass(frozen=True, slots=True)
class Replay:
    """What `replay` did with the letters it was given."""

    #: Letters whose unfinished requests were published again (and the letters removed).
    replayed: int = 0
    #: Letters whose requests all have a final result by now: removed, nothing published.
    finished: int = 0
    #: Letters kept: their body is no task batch this version can read.
    unreadable: list[int] = field(default_factory=list)


async def replay(
    pool: Pool, exchange: AbstractExchange, routing_key: str, ids: list[int] | None
) -> Replay:
    """Publish the requests of dead letters again (all letters when `ids` is None).

    Only requests that have no final result, or a `dead` one, are published: a letter kept from
    an older whole-message dead letter does not replay the requests it carried that succeeded.
    Each letter's `dead` results are removed in the same transaction that removes the letter, and
    that transaction commits only after the broker confirmed the new publish.
    """
    replayed = finished = 0
    unreadable: list[int] = []
    async with pool.acquire(timeout=10) as conn:
        for letter in await _letters(conn, ids):
            try:
                batch = TaskBatch.decode(letter.body)
            except DecodeError:
                unreadable.append(letter.id)
                continue
            if await _replay_letter(conn, letter, batch, exchange, routing_key):
                replayed += 1
            else:
                finished += 1
    return Replay(replayed, finished, unreadable)


async def _letters(conn: Connection, ids: list[int] | None) -> list[DeadLetter]:
    if ids is None:
        rows = await conn.fetch("SELECT * FROM dead_letters ORDER BY id")
    else:
        rows = await conn.fetch(
            "SELECT * FROM dead_letters WHERE id = ANY($1::bigint[]) ORDER BY id", ids
        )
    return [_letter(row) for row in rows]


async def _replay_letter(
    conn: Connection,
    letter: DeadLetter,
    batch: TaskBatch,
    exchange: AbstractExchange,
    routing_key: str,
) -> bool:
    """Remove the letter and its `dead` results, publishing its unfinished requests again before
    that commits; False when it has none left (nothing is published)."""
    async with conn.transaction():
        await results.forget_dead_results(conn, letter.request_ids)
        await conn.execute("DELETE FROM dead_letters WHERE id = $1", letter.id)
        done = await results.finished(conn, [r.id for r in batch.requests])
        pending = tuple(r for r in batch.requests if r.id not in done)
        if not pending:
            return False
        await exchange.publish(
            _replay_message(letter, TaskBatch(pending)),
            routing_key=routing_key,
            mandatory=True,
            timeout=10,
        )
        return True


def _replay_message(letter: DeadLetter, batch: TaskBatch) -> aio_pika.Message:
    return aio_pika.Message(
        batch.encode(),
        content_type=CONTENT_TYPE,
        delivery_mode=DeliveryMode.PERSISTENT,
        message_id=letter.message_id,
        type=TASKS_MESSAGE_TYPE,
        headers={"x-requests": len(batch.requests), "x-replayed": True},
    )
