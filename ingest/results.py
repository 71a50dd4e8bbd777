"""Per-request results: what each task request finally did.

Results are written by workers in the same transaction as the task change they describe; the edge
and the status URL only read them (`ingest.edge.status` shows them, by signed public id).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import orjson

from ingest.fields import fits_utf8
from ingest.messages import TaskRequest
from ingest.store import Connection, Pool
from ingest.tasks import Outcome
from ingest.workflows import STAGE, TASK_URL

_MAC_BYTES = 10
#: A result's body is stored up to this many bytes. A larger one (a task with huge values) is
#: stored as a short note that points at the task; the live reply still carries the whole body.
MAX_STORED_BODY_BYTES = 256 * 1024


class RequestStatus(StrEnum):
    """Where a task request stands."""

    PENDING = "pending"  #: accepted by the broker, not finished by a worker yet
    SUCCEEDED = "succeeded"  #: applied (created, updated, unchanged, deleted)
    FAILED = "failed"  #: finished without effect (invalid, not found, dead-lettered)


@dataclass(frozen=True, slots=True)
class Result:
    """The final answer to one task request."""

    request_id: uuid.UUID
    workflow_id: int
    http_status: int
    outcome: str
    body: str
    task_id: int | None = None
    received_at: float = 0.0
    completed_at: datetime | None = None
    fingerprint: bytes | None = None

    @property
    def status(self) -> RequestStatus:
        return RequestStatus.SUCCEEDED if self.http_status < 400 else RequestStatus.FAILED


def result_of(
    request: TaskRequest, http_status: int, outcome: str, body: str, task_id: int | None = None
) -> Result:
    """The final answer to `request`. A keyed request's answer keeps its fingerprint: a retry
    with the same Idempotency-Key must repeat the request to get it. Any other request's id is
    its own (random), so nothing else can ask for its answer."""
    return Result(
        request.id,
        request.workflow_id,
        http_status,
        outcome,
        body,
        task_id,
        request.received_at,
        None,
        request.fingerprint if request.keyed else None,
    )


#: The answer to a request that reuses an Idempotency-Key with a different body (never stored).
KEY_REUSED_BODY = orjson.dumps(
    {
        "error": "idempotency_key_reused",
        "message": "this Idempotency-Key was already used with a different request body",
    }
).decode()


def answer_to(request: TaskRequest, stored: Result) -> Result:
    """`stored` as the answer to `request`, unless `request` only shares its id: its
    Idempotency-Key was used before with a different body, which is refused (422)."""
    if stored.fingerprint is not None and stored.fingerprint != request.fingerprint:
        return result_of(request, 422, Outcome.INVALID.value, KEY_REUSED_BODY)
    return stored


_SELECTED = (
    "request_id, workflow_id, http_status, outcome, body, task_id, completed_at, fingerprint"
)


def _result(row: Any) -> Result:
    return Result(
        request_id=row["request_id"],
        workflow_id=row["workflow_id"],
        http_status=row["http_status"],
        outcome=row["outcome"],
        body=row["body"],
        task_id=row["task_id"],
        completed_at=row["completed_at"],
        fingerprint=row["fingerprint"],
    )


async def fetch_result(
    conn: Pool | Connection, request_id: uuid.UUID, workflow_id: int
) -> Result | None:
    row = await conn.fetchrow(
        f"SELECT {_SELECTED} FROM request_results WHERE request_id = $1 AND workflow_id = $2",
        request_id,
        workflow_id,
    )
    return None if row is None else _result(row)


async def stored_results(conn: Connection, request_ids: list[uuid.UUID]) -> dict[uuid.UUID, Result]:
    """Results already committed for these requests (a redelivery must not apply them twice)."""
    rows = await conn.fetch(
        f"SELECT {_SELECTED} FROM request_results WHERE request_id = ANY($1::uuid[])", request_ids
    )
    return {row["request_id"]: _result(row) for row in rows}


_RESULT_COLUMNS = [
    "request_id",
    "workflow_id",
    "http_status",
    "outcome",
    "body",
    "task_id",
    "received_at",
    "fingerprint",
]


_TOO_LARGE = "result_too_large"


def is_note(body: Any) -> bool:
    """A `storable_body` note rather than a task (a task always has a Stage)."""
    return isinstance(body, dict) and body.get("error") == _TOO_LARGE and STAGE not in body


def storable_body(body: str) -> str:
    """`body`, or when it is over MAX_STORED_BODY_BYTES a short JSON note saying so, with the
    task's `Task URL` when the body is a task (its status and outcome are kept as they were)."""
    if fits_utf8(body, MAX_STORED_BODY_BYTES):
        return body
    size = len(body.encode("utf-8", "surrogatepass"))
    note: dict[str, Any] = {
        "error": _TOO_LARGE,
        "message": (
            f"this answer was {size} bytes, more than the {MAX_STORED_BODY_BYTES} kept with a"
            " result; the request itself took effect as its status says"
        ),
    }
    task = orjson.loads(body)
    if isinstance(task, dict) and isinstance(task.get(TASK_URL), str):
        note[TASK_URL] = task[TASK_URL]
        note["message"] += "; read the task at its Task URL"
    return orjson.dumps(note).decode()


async def insert_results(conn: Connection, results: list[Result]) -> None:
    """Record final answers (COPY: the cheapest insert), each body within MAX_STORED_BODY_BYTES;
    a result already stored for one of these requests, even by a concurrent transaction, makes
    this raise UniqueViolationError."""
    await conn.copy_records_to_table(
        "request_results",
        records=[
            (
                r.request_id,
                r.workflow_id,
                r.http_status,
                r.outcome,
                storable_body(r.body),
                r.task_id,
                datetime.fromtimestamp(r.received_at, UTC),
                r.fingerprint,
            )
            for r in results
        ],
        columns=_RESULT_COLUMNS,
    )
