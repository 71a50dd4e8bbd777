"""Per-request results: what each task request finally did, in one vocabulary, and their one writer.

- `Outcome` says what a request did, `RequestStatus` where it stands, `Result` is its final answer;
- the final answers a request gets when it has no effect (`error_body`, `dead_lettered`,
  `unknown_workflow`, …) and the Idempotency-Key reuse rule (`answer_to`), which the edge and the
  worker both apply;
- every write of `request_results` happens here: `insert_results` (a worker's batch, in the same
  transaction as the task change it describes), `insert_dead_results` (a dead-lettered message's
  unfinished requests) and `forget_dead_results` (a replay). The edge and the status URL only read
  them (`ingest.edge.status` shows them, by signed public id).
"""

from __future__ import annotations

import uuid
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import orjson

from ingest.messages import TaskRequest
from ingest.store import Connection, Pool
from ingest.values import fits_utf8
from ingest.workflows import STAGE, TASK_URL

#: A result's body is stored up to this many bytes. A larger one (a task with huge values) is
#: stored as a short note that points at the task; the live reply still carries the whole body.
MAX_STORED_BODY_BYTES = 256 * 1024
#: A batch import's answer (`ingest.batches.batch_body`) is bounded when it is made, to about
#: this many bytes: the live answer and the stored one are the same, whole.
MAX_BATCH_BODY_BYTES = 4 * 1024 * 1024


class Outcome(StrEnum):
    """What a task request did."""

    CREATED = "created"  #: a new task
    UPDATED = "updated"  #: an existing task changed
    UNCHANGED = "unchanged"  #: an existing task already had these values
    INVALID = "invalid"  #: rejected by validation (400, 422)
    NOT_FOUND = "not_found"  #: it named no task, or its workflow is gone (404)
    DELETED = "deleted"  #: a task was deleted
    DEAD = "dead"  #: the request could not be processed and was dead-lettered (500)
    BATCH = "batch"  #: a batch import was applied: each item has its own status and body (200)


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
    outcome: Outcome
    body: str
    task_id: int | None = None
    received_at: float = 0.0
    completed_at: datetime | None = None
    fingerprint: bytes | None = None

    @property
    def status(self) -> RequestStatus:
        return RequestStatus.SUCCEEDED if self.http_status < 400 else RequestStatus.FAILED


def result_of(
    request: TaskRequest, http_status: int, outcome: Outcome, body: str, task_id: int | None = None
) -> Result:
    """The final answer to `request`. An idempotent request's answer keeps its fingerprint: a
    retry with the same Idempotency-Key must repeat the request to get it. Any other request's id
    is its own (random), so nothing else can ask for its answer."""
    return Result(
        request.id,
        request.workflow_id,
        http_status,
        outcome,
        body,
        task_id,
        request.received_at,
        None,
        request.fingerprint if request.idempotent else None,
    )


# ---------------------------------------------------------------------------------- final answers


def error_body(error: str, message: str) -> str:
    """The body of an answer that is an error: `{"error": code, "message": why}`."""
    return orjson.dumps({"error": error, "message": message}).decode()


def errors_body(errors: Mapping[str, list[str]]) -> str:
    """The body of a 422 for invalid fields: every problem of every field at once."""
    return orjson.dumps({"errors": errors}).decode()


#: The status of a dead-lettered request's answer (why is for operators: `ingest dlq list`).
DEAD_STATUS = 500
DEAD_LETTERED_BODY = error_body(
    "dead_lettered", "the request could not be processed; it is kept for an operator to replay"
)
#: The answer to a request that reuses an Idempotency-Key with a different body (never stored).
IDEMPOTENCY_KEY_REUSED_BODY = error_body(
    "idempotency_key_reused", "this Idempotency-Key was already used with a different request body"
)
UNKNOWN_WORKFLOW_BODY = error_body("not_found", "the workflow of this request no longer exists")
UNSTORABLE_VALUE_BODY = error_body(
    "unstorable_value", "a value of this task is beyond what the database can store"
)


def dead_lettered(request: TaskRequest) -> Result:
    """The answer of a request kept as a dead letter: its own 500."""
    return result_of(request, DEAD_STATUS, Outcome.DEAD, DEAD_LETTERED_BODY)


def unknown_workflow(request: TaskRequest) -> Result:
    """The answer of a request whose workflow (or the version it was sent for) is not stored."""
    return result_of(request, 404, Outcome.NOT_FOUND, UNKNOWN_WORKFLOW_BODY)


def unstorable_value(request: TaskRequest) -> Result:
    """The answer of a request holding a value Postgres refuses: the client's 422."""
    return result_of(request, 422, Outcome.INVALID, UNSTORABLE_VALUE_BODY)


def answer_to(request: TaskRequest, stored: Result) -> Result:
    """`stored` as the answer to `request`, unless `request` only shares its id: its
    Idempotency-Key was used before with a different body, which is refused (422). The one
    statement of that rule: the edge (a retry answered before publishing) and the worker (a
    stored result found again) both ask it."""
    if stored.fingerprint is not None and stored.fingerprint != request.fingerprint:
        return result_of(request, 422, Outcome.INVALID, IDEMPOTENCY_KEY_REUSED_BODY)
    return stored


_TOO_LARGE = "result_too_large"


def is_note(body: Any) -> bool:
    """A `storable_body` note rather than a task (a task always has a Stage)."""
    return isinstance(body, dict) and body.get("error") == _TOO_LARGE and STAGE not in body


def storable_body(body: str, limit: int = MAX_STORED_BODY_BYTES) -> str:
    """`body`, or when it is over `limit` bytes a short JSON note saying so, with the task's
    `Task URL` when the body is a task (its status and outcome are kept as they were)."""
    if fits_utf8(body, limit):
        return body
    size = len(body.encode("utf-8", "surrogatepass"))
    note: dict[str, Any] = {
        "error": _TOO_LARGE,
        "message": (
            f"this answer was {size} bytes, more than the {limit} kept with a result; the"
            " request itself took effect as its status says"
        ),
    }
    task = orjson.loads(body)
    if isinstance(task, dict) and isinstance(task.get(TASK_URL), str):
        note[TASK_URL] = task[TASK_URL]
        note["message"] += "; read the task at its Task URL"
    return orjson.dumps(note).decode()


# ------------------------------------------------------------------------------------------ reads

_SELECTED = (
    "request_id, workflow_id, http_status, outcome, body, task_id, completed_at, fingerprint"
)


def _result(row: Any) -> Result:
    return Result(
        request_id=row["request_id"],
        workflow_id=row["workflow_id"],
        http_status=row["http_status"],
        outcome=Outcome(row["outcome"]),
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


async def finished(conn: Connection, request_ids: Collection[uuid.UUID]) -> set[uuid.UUID]:
    """Which of these requests have a final result."""
    rows = await conn.fetch(
        "SELECT request_id FROM request_results WHERE request_id = ANY($1::uuid[])",
        list(request_ids),
    )
    return {row["request_id"] for row in rows}


# ----------------------------------------------------------------------------------------- writes

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


async def insert_results(conn: Connection, results: list[Result]) -> None:
    """Record final answers (COPY: the cheapest insert), each body within MAX_STORED_BODY_BYTES
    (a batch's was bounded when made); a result already stored for one of these requests, even by
    a concurrent transaction, makes this raise UniqueViolationError."""
    await conn.copy_records_to_table(
        "request_results",
        records=[
            (
                r.request_id,
                r.workflow_id,
                r.http_status,
                r.outcome.value,
                r.body if r.outcome is Outcome.BATCH else storable_body(r.body),
                r.task_id,
                datetime.fromtimestamp(r.received_at, UTC),
                r.fingerprint,
            )
            for r in results
        ],
        columns=_RESULT_COLUMNS,
    )


async def insert_dead_results(conn: Connection, requests: Sequence[TaskRequest]) -> None:
    """Give these requests their `dead_lettered` answer (the broker gave up on their message),
    each unless it has a final result by now. A request whose workflow is gone gets none: a result
    references its workflow (and without the workflow's token, nothing could read it)."""
    dead = [dead_lettered(request) for request in requests]
    await conn.execute(
        "INSERT INTO request_results"
        " (request_id, workflow_id, http_status, outcome, body, received_at, fingerprint)"
        " SELECT r.id, r.wf, $3, $4, $5, to_timestamp(r.at), r.fp"
        " FROM unnest($1::uuid[], $2::bigint[], $6::float8[], $7::bytea[]) AS r(id, wf, at, fp)"
        " WHERE EXISTS (SELECT 1 FROM workflows w WHERE w.id = r.wf AND w.deleted_at IS NULL)"
        " ON CONFLICT (request_id) DO NOTHING",
        [r.request_id for r in dead],
        [r.workflow_id for r in dead],
        DEAD_STATUS,
        Outcome.DEAD.value,
        DEAD_LETTERED_BODY,
        [r.received_at for r in dead],
        [r.fingerprint for r in dead],
    )


async def forget_dead_results(conn: Connection, request_ids: Collection[uuid.UUID]) -> None:
    """Remove the `dead` results of these requests (an operator replays them); any other result
    stays."""
    await conn.execute(
        "DELETE FROM request_results WHERE request_id = ANY($1::uuid[]) AND outcome = $2",
        list(request_ids),
        Outcome.DEAD.value,
    )
