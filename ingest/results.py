"""Per-request results: what each task request finally did, and the status documents about it.

Results are written by workers in the same transaction as the task change they describe; the edge
and the status URL only read them. A status URL names a request by a public id that carries an HMAC,
so the edge can answer `pending` for a request it accepted (but no worker has finished) and 404 for
an id it never issued, without a database write per request.
"""

from __future__ import annotations

import hashlib
import hmac
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import orjson

from ingest import opaque
from ingest.fields import fits_utf8
from ingest.messages import TaskRequest
from ingest.store import Connection, Pool
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


class RequestIds:
    """Turns request UUIDs into signed public ids bound to their workflow, and back."""

    def __init__(self, key: bytes) -> None:
        self._key = key

    def _mac(self, request_id: uuid.UUID, workflow_id: int) -> bytes:
        message = request_id.bytes + workflow_id.to_bytes(8, "big")
        return hmac.new(self._key, message, hashlib.sha256).digest()[:_MAC_BYTES]

    def public(self, request_id: uuid.UUID, workflow_id: int) -> str:
        return opaque.encode(request_id.bytes + self._mac(request_id, workflow_id))

    def parse(self, public_id: str, workflow_id: int) -> uuid.UUID | None:
        """The request's UUID, or None when the id was not issued for this workflow."""
        raw = opaque.decode(public_id, 16 + _MAC_BYTES)
        if raw is None:
            return None
        request_id = uuid.UUID(bytes=raw[:16])
        if not hmac.compare_digest(raw[16:], self._mac(request_id, workflow_id)):
            return None
        return request_id


def status_document(public_id: str, result: Result | None) -> dict[str, Any]:
    """The body of a status URL: pending, or the final status code, outcome and task or errors."""
    if result is None:
        return {"id": public_id, "status": RequestStatus.PENDING.value}
    document: dict[str, Any] = {
        "id": public_id,
        "status": result.status.value,
        "http_status": result.http_status,
        "outcome": result.outcome,
    }
    body = orjson.loads(result.body) if result.body else None
    if body is None:
        pass  # 204: nothing to show
    elif result.http_status < 300 and not _is_note(body):
        document["task"] = body
    else:
        # {"errors": {...}} for 422; {"error", "message"} otherwise, or for a result too large
        # to keep (whose Task URL comes along).
        document.update(body)
    if result.completed_at is not None:
        document["completed_at"] = result.completed_at.isoformat()
    return document


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


def _is_note(body: Any) -> bool:
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
