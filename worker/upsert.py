"""Applying a batch of task requests in one transaction (group commit).

The order of work inside the transaction:
1. skip requests whose result is already stored (a redelivery has no second effect), except a
   `dead` result of a request an operator replays;
2. validate every payload with its workflow's compiled model;
3. lock the existing tasks the batch names (`FOR UPDATE`, in id order);
4. replay the requests in arrival order against an in-memory copy of those tasks, so several
   requests for one Unique ID inside a batch merge in order, each with its own outcome and body;
5. write the final state once: one statement inserts the new tasks, one rewrites the changed ones
   (values included: a task is one row);
6. insert every request's result, the verdicts of culprits (worker.culprits) included, and a dead
   letter for each culprit whose verdict says so; then the caller's `before_commit`.
A concurrent create of the same Unique ID or a concurrent result write raises `RetryBatch`, a
deadlock asyncpg's own error; the caller runs the batch again in a new transaction.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import asyncpg
import orjson

from ingest import deadletters
from ingest.deadletters import DEAD_OUTCOME
from ingest.errors import IngestError, MalformedBody
from ingest.fields import encode_values, unique_key
from ingest.messages import Operation, TaskRequest, parse_payload
from ingest.results import Result, answer_to, insert_results, result_of, stored_results
from ingest.store import Connection, lock_tasks, workflow_by_id
from ingest.tasks import Outcome, TaskPublicIds, TaskRecord, Value, render
from ingest.workflows import Workflow
from worker.culprits import Verdict
from worker.validation import (
    BLANK,
    ParsedTask,
    TaskValidator,
    ValidatorCache,
    is_blank,
)


class RetryBatch(IngestError):
    """Raised when a batch lost a race with another transaction and must run again."""


class UnknownWorkflow(IngestError):
    """Raised when a request names a workflow (or a version) the database does not have."""


class WorkflowCache:
    """Workflows by id, refreshed when a request names a newer version than the cached one."""

    def __init__(self) -> None:
        self._by_id: dict[int, Workflow] = {}

    async def get(self, conn: Connection, workflow_id: int, version: int) -> Workflow:
        workflow = self._by_id.get(workflow_id)
        if workflow is None or workflow.version < version:
            workflow = await workflow_by_id(conn, workflow_id)
            if workflow is None or workflow.version < version:
                raise UnknownWorkflow(f"workflow {workflow_id} v{version} is not in the database")
            self._by_id[workflow_id] = workflow
        return workflow


@dataclass(slots=True)
class _TaskState:
    """A task as the batch has left it so far, and what must be written back."""

    record: TaskRecord
    is_new: bool
    builtins_changed: bool = False
    changed_fields: set[int] = field(default_factory=set)


def _same(a: Value, b: Value) -> bool:
    # Decimal("10") == Decimal("10.0"), but they render differently; compare what Flowdash shows.
    if isinstance(a, Decimal) and isinstance(b, Decimal):
        return format(a, "f") == format(b, "f")
    return type(a) is type(b) and a == b


def _json(body: dict[str, Any]) -> str:
    return orjson.dumps(body).decode()


def _errors_body(errors: dict[str, list[str]]) -> str:
    return _json({"errors": errors})


class BatchApplier:
    """Applies batches of task requests; holds the per-process caches it needs."""

    def __init__(self, base_url: str) -> None:
        self._base_url = base_url
        self._workflows = WorkflowCache()
        self._validators = ValidatorCache()
        self._public_ids = TaskPublicIds()

    async def apply(
        self,
        conn: Connection,
        requests: list[TaskRequest],
        *,
        settled: Mapping[int, Verdict] | None = None,
        replayed: Collection[uuid.UUID] = (),
        before_commit: Callable[[Connection], Awaitable[None]] | None = None,
        may_be_done: set[uuid.UUID] | None = None,
    ) -> list[Result]:
        """Apply `requests` in one transaction; results come back in request order.

        `settled` holds verdicts, by position in `requests`, of requests that are not to be
        applied (the culprits of an earlier failure of this batch): their results are stored like
        any other, with a dead letter where the verdict says so. `replayed` names requests an
        operator replayed from the dead letters: a `dead` result of theirs is no answer.
        `may_be_done` names the requests that can already have a stored result (None: any); the
        others skip that look-up. Should one be wrong, the result insert conflicts and the batch
        runs again with every request looked up.
        """
        settled = settled or {}
        async with conn.transaction():
            lookup = [r.id for r in requests if may_be_done is None or r.id in may_be_done]
            done = await stored_results(conn, lookup) if lookup else {}
            await _forget_dead(conn, done, replayed)
            made: dict[uuid.UUID, Result] = {}
            dead: list[tuple[TaskRequest, str]] = []
            by_workflow: dict[int, list[TaskRequest]] = defaultdict(list)
            # A request redelivered into the same batch as its first delivery runs once.
            for index, request in _first_deliveries(requests, done):
                verdict = settled.get(index)
                if verdict is None:
                    by_workflow[request.workflow_id].append(request)
                    continue
                made[request.id] = verdict.result
                if verdict.dead_reason is not None:
                    dead.append((request, verdict.dead_reason))
            gone: dict[uuid.UUID, Result] = {}
            for workflow_id, group in by_workflow.items():
                version = max(r.workflow_version for r in group)
                try:
                    workflow = await self._workflows.get(conn, workflow_id, version)
                except UnknownWorkflow:
                    # Permanent, and not storable (results reference their workflow): answered only.
                    gone.update((r.id, _workflow_gone(r)) for r in group)
                    continue
                made.update(await self._apply_workflow(conn, workflow, group))
            if made:
                try:
                    await insert_results(conn, list(made.values()))
                except asyncpg.UniqueViolationError as exc:
                    raise RetryBatch("another transaction stored one of these results") from exc
            for request, reason in dead:
                await deadletters.record_request(conn, request, reason)
            if before_commit is not None:
                await before_commit(conn)
        return [answer_to(r, done.get(r.id) or made.get(r.id) or gone[r.id]) for r in requests]

    async def _apply_workflow(
        self, conn: Connection, workflow: Workflow, requests: list[TaskRequest]
    ) -> dict[uuid.UUID, Result]:
        validator = self._validators.get(workflow)
        readings = [_read(request, validator) for request in requests]
        keys = sorted({reading.key for reading in readings if reading.key})
        existing = await lock_tasks(conn, workflow.id, keys)
        tasks = {key: _TaskState(record=record, is_new=False) for key, record in existing.items()}
        deleted: list[int] = []
        answers: list[_Answer] = []
        for request, reading in zip(requests, readings, strict=True):
            if reading.payload is None:
                body = _json({"error": "malformed_body", "message": "body is not a JSON object"})
                answers.append(_Answer(400, Outcome.INVALID, body))
            elif request.operation is Operation.DELETE:
                answers.append(_delete_one(reading.key, tasks, deleted))
            else:
                assert reading.parsed is not None
                answers.append(
                    self._apply_one(
                        workflow, reading.parsed, request, reading.payload, reading.key, tasks
                    )
                )
        await _delete_tasks(conn, deleted)
        await self._write(conn, workflow, tasks)
        # Results are made once the new tasks have their ids.
        return {
            request.id: answer.result(request, tasks)
            for request, answer in zip(requests, answers, strict=True)
        }

    def _apply_one(
        self,
        workflow: Workflow,
        parsed: ParsedTask,
        request: TaskRequest,
        payload: dict[str, Any],
        key: str | None,
        tasks: dict[str, _TaskState],
    ) -> _Answer:
        errors = {name: list(messages) for name, messages in parsed.errors.items()}
        unique = workflow.unique_field
        if unique is not None and key is None and unique.name not in errors:
            errors[unique.name] = [BLANK]
        if unique is None:
            key = self._public_ids.next()
        state = tasks.get(key) if key else None
        if state is None and request.operation is Operation.UPDATE and not errors:
            message = f"no task has {unique.name if unique else 'that id'} {key!r}"
            body = _json({"error": "not_found", "message": message})
            return _Answer(404, Outcome.NOT_FOUND, body)
        for spec in workflow.definition.fields:
            if not spec.required or spec.name in errors:
                continue
            missing_on_create = state is None and is_blank(payload.get(spec.name))
            blanked_on_update = (
                state is not None and spec.name in payload and is_blank(payload[spec.name])
            )
            if missing_on_create or blanked_on_update:
                errors[spec.name] = [BLANK]
        if errors:
            return _Answer(422, Outcome.INVALID, _errors_body(errors))
        assert key is not None
        if state is None:
            record = TaskRecord(
                public_id=key if unique is None else self._public_ids.next(),
                unique_key=key,
                stage=parsed.stage or workflow.default_stage,
                assigned_to=parsed.assigned_to,
                values={fid: v for fid, v in parsed.values.items() if v is not None},
            )
            state = tasks[key] = _TaskState(record, is_new=True, changed_fields=set(record.values))
            outcome, status = Outcome.CREATED, 201
        else:
            changed = _update(state, parsed)
            outcome = Outcome.UPDATED if changed else Outcome.UNCHANGED
            status = 200
        body = _json(render(workflow, state.record, self._base_url))
        return _Answer(status, outcome, body, key)

    async def _write(
        self, conn: Connection, workflow: Workflow, tasks: dict[str, _TaskState]
    ) -> None:
        """Two statements whatever the batch holds: the new tasks, then the changed ones."""
        await _insert_new_tasks(conn, workflow, [s for s in tasks.values() if s.is_new])
        await _update_changed(
            conn,
            [
                s.record
                for s in tasks.values()
                if not s.is_new and (s.builtins_changed or s.changed_fields)
            ],
        )


@dataclass(frozen=True, slots=True)
class _Answer:
    """What a request got, before the batch is written; `key` names the task it wrote."""

    status: int
    outcome: Outcome
    body: str
    key: str | None = None

    def result(self, request: TaskRequest, tasks: Mapping[str, _TaskState]) -> Result:
        state = tasks.get(self.key) if self.key else None
        task_id = state.record.id if state is not None else None
        return result_of(request, self.status, self.outcome.value, self.body, task_id)


def _delete_one(key: str | None, tasks: dict[str, _TaskState], deleted: list[int]) -> _Answer:
    state = tasks.pop(key, None) if key else None
    if state is None:
        body = _json({"error": "not_found", "message": "no task has this id"})
        return _Answer(404, Outcome.NOT_FOUND, body)
    if not state.is_new and state.record.id is not None:
        deleted.append(state.record.id)
    return _Answer(204, Outcome.DELETED, "null")


@dataclass(slots=True)
class _Reading:
    """A request's body as read: the payload (None: not a JSON object), its validation (None for
    a delete) and the Unique ID it names (None: missing, blank or invalid)."""

    payload: dict[str, Any] | None
    parsed: ParsedTask | None
    key: str | None


def _read(request: TaskRequest, validator: TaskValidator) -> _Reading:
    try:
        payload = parse_payload(request.body)
    except MalformedBody:
        return _Reading(None, None, None)
    parsed = None if request.operation is Operation.DELETE else validator.parse(payload)
    return _Reading(payload, parsed, _key_of(request, validator, payload, parsed))


def _key_of(
    request: TaskRequest,
    validator: TaskValidator,
    payload: dict[str, Any] | None,
    parsed: ParsedTask | None,
) -> str | None:
    """The canonical Unique ID a request names (None: missing, blank or invalid)."""
    if payload is None:
        return None
    if request.operation is Operation.DELETE:
        key = payload.get("key")
        return key if isinstance(key, str) and key else None
    unique = validator.workflow.unique_field
    if unique is None:
        return None
    if parsed is not None and not parsed.errors:
        value = parsed.values.get(unique.id)
        return None if value is None or is_blank(value) else unique_key(value)
    # Other fields failed validation, so the parse kept no values: check the Unique ID alone.
    return validator.unique_key(payload)


async def _delete_tasks(conn: Connection, task_ids: list[int]) -> None:
    if task_ids:
        await conn.execute("DELETE FROM tasks WHERE id = ANY($1::bigint[])", task_ids)


async def _forget_dead(
    conn: Connection, done: dict[uuid.UUID, Result], replayed: Collection[uuid.UUID]
) -> None:
    """A `dead` result of a request an operator replays is no answer (the replay's own removal of
    it may not be committed yet): the request runs. Any other request keeps its `dead` verdict."""
    dead = [
        request_id
        for request_id, result in done.items()
        if result.outcome == DEAD_OUTCOME and request_id in replayed
    ]
    if dead:
        await conn.execute(
            "DELETE FROM request_results WHERE request_id = ANY($1::uuid[]) AND outcome = $2",
            dead,
            DEAD_OUTCOME,
        )
        for request_id in dead:
            del done[request_id]


def _first_deliveries(
    requests: list[TaskRequest], done: dict[uuid.UUID, Result]
) -> list[tuple[int, TaskRequest]]:
    """Requests with no stored result, each id once, in arrival order, with their positions."""
    fresh: dict[uuid.UUID, tuple[int, TaskRequest]] = {}
    for index, request in enumerate(requests):
        if request.id not in done and request.id not in fresh:
            fresh[request.id] = (index, request)
    return list(fresh.values())


def _workflow_gone(request: TaskRequest) -> Result:
    body = _json({"error": "not_found", "message": "the workflow of this request no longer exists"})
    return result_of(request, 404, Outcome.NOT_FOUND.value, body)


def _update(state: _TaskState, parsed: Any) -> bool:
    """Apply the supplied fields to the task in memory; True when anything changed."""
    record = state.record
    changed = False
    if parsed.stage_supplied and parsed.stage != record.stage:
        record.stage, changed, state.builtins_changed = parsed.stage, True, True
    if parsed.assigned_to_supplied and parsed.assigned_to != record.assigned_to:
        record.assigned_to, changed, state.builtins_changed = parsed.assigned_to, True, True
    for field_id in parsed.supplied:
        new = parsed.values[field_id]
        if _same(record.values.get(field_id), new):
            continue
        changed = True
        state.changed_fields.add(field_id)
        if new is None:
            record.values.pop(field_id, None)
        else:
            record.values[field_id] = new
    return changed


async def _insert_new_tasks(conn: Connection, workflow: Workflow, states: list[_TaskState]) -> None:
    if not states:
        return
    states.sort(key=lambda s: s.record.unique_key)  # one lock order for every worker
    rows = await conn.fetch(
        "INSERT INTO tasks (workflow_id, public_id, unique_key, stage, assigned_to, fields)"
        " SELECT $1, t.public_id, t.unique_key, t.stage, t.assigned_to, t.fields::jsonb"
        " FROM unnest($2::text[], $3::text[], $4::text[], $5::text[], $6::text[])"
        "   AS t(public_id, unique_key, stage, assigned_to, fields)"
        " ON CONFLICT (workflow_id, unique_key) DO NOTHING"
        " RETURNING id, unique_key",
        workflow.id,
        [s.record.public_id for s in states],
        [s.record.unique_key for s in states],
        [s.record.stage for s in states],
        [s.record.assigned_to for s in states],
        [encode_values(s.record.values) for s in states],
    )
    if len(rows) != len(states):
        raise RetryBatch("another transaction created a task with the same Unique ID")
    ids = {row["unique_key"]: row["id"] for row in rows}
    for state in states:
        state.record.id = ids[state.record.unique_key]


async def _update_changed(conn: Connection, records: list[TaskRecord]) -> None:
    """Write each changed task's whole row: it is locked, and the batch holds its final state."""
    if not records:
        return
    await conn.execute(
        "UPDATE tasks SET stage = u.stage, assigned_to = u.assigned_to, fields = u.fields::jsonb,"
        " updated_at = now()"
        " FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[])"
        "   AS u(id, stage, assigned_to, fields)"
        " WHERE tasks.id = u.id",
        [r.id for r in records],
        [r.stage for r in records],
        [r.assigned_to for r in records],
        [encode_values(r.values) for r in records],
    )
