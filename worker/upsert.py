"""Applying a batch of task requests in one transaction (group commit).

The order of work inside the transaction:
1. skip requests whose result is already stored (a redelivery has no second effect), except a
   `dead` result of a request an operator replays;
2. hold the rows of the batch's workflows and validate every payload with its workflow's
   compiled model at the version read (`_hold_workflows`): no request is keyed the way a
   committed change replaced;
3. lock the existing tasks the batch names (`FOR UPDATE`, in id order);
4. replay the requests in arrival order against an in-memory copy of those tasks, so several
   requests for one Unique ID inside a batch merge in order, each with its own outcome and body;
   a batch import's items are replayed in their order as upserts of their own (worker.readings),
   and its one result holds theirs (`ingest.batches.batch_body`);
5. write the final state once: one statement inserts the new tasks, one rewrites the changed ones
   (values included: a task is one row);
6. insert every request's result, the verdicts of culprits (worker.culprits) included, and a dead
   letter for each culprit whose verdict says so; then the caller's `before_commit`.
A concurrent create of the same Unique ID or a concurrent result write raises `RetryBatch`, a
deadlock asyncpg's own error; the caller runs the batch again in a new transaction.

A request whose workflow is not in the database (or not at the version it was sent for) is
permanently unanswerable: it gets a final 404 (`ingest.results.unknown_workflow`), stored when the
workflow's row exists and is not being deleted (a result references its workflow), and only
replied otherwise. Should a workflow's row vanish under a batch all the same (a foreign key
violation), the cache is dropped and the batch runs again.
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
from ingest.batches import batch_body
from ingest.errors import IngestError
from ingest.fields import encode_values
from ingest.messages import Operation, TaskRequest
from ingest.results import (
    Outcome,
    Result,
    answer_to,
    error_body,
    errors_body,
    forget_dead_results,
    insert_results,
    result_of,
    stored_results,
    unknown_workflow,
)
from ingest.store import Connection, lock_tasks, workflow_by_id
from ingest.tasks import TaskPublicIds, TaskRecord, Value, render
from ingest.workflows import Workflow
from worker.culprits import Verdict
from worker.readings import Reading, ReadRequest, read_request
from worker.validation import BLANK, ValidatorCache, is_blank


class RetryBatch(IngestError):
    """Raised when a batch lost a race with another transaction and must run again."""


class UnknownWorkflow(IngestError):
    """Raised when a request names a workflow (or a version) the database does not have;
    `stored` is the workflow as the database has it, at an older version (None: not at all)."""

    def __init__(self, workflow_id: int, version: int, stored: Workflow | None) -> None:
        super().__init__(f"workflow {workflow_id} v{version} is not in the database")
        self.workflow_id = workflow_id
        self.version = version
        self.stored = stored


class WorkflowCache:
    """Workflows by id, refreshed when a request (or the workflow's row, as the batch holds it)
    names a newer version than the cached one, or dropped when a change notice names them
    (`ingest.notices`, heard by the consumer). A read that began before a drop is used but not
    kept: it may hold what the change replaced."""

    def __init__(self) -> None:
        self._by_id: dict[int, Workflow] = {}
        self._generation = 0

    async def get(self, conn: Connection, workflow_id: int, version: int) -> Workflow:
        workflow = self._by_id.get(workflow_id)
        if workflow is None or workflow.version < version:
            generation = self._generation
            workflow = await workflow_by_id(conn, workflow_id)
            if workflow is not None and generation == self._generation:
                self._by_id[workflow_id] = workflow
            if workflow is None or workflow.version < version:
                raise UnknownWorkflow(workflow_id, version, stored=workflow)
        return workflow

    def forget(self, workflow_id: int) -> None:
        """Forget one workflow (it changed, or was deleted)."""
        self._generation += 1
        self._by_id.pop(workflow_id, None)

    def clear(self) -> None:
        """Forget every workflow (one was deleted, or change notices may have been missed)."""
        self._generation += 1
        self._by_id.clear()


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


class BatchApplier:
    """Applies batches of task requests; holds the per-process caches it needs."""

    def __init__(self, base_url: str, workflows: WorkflowCache | None = None) -> None:
        self._base_url = base_url
        self._workflows = workflows or WorkflowCache()
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
        lookup = [r.id for r in requests if may_be_done is None or r.id in may_be_done]
        try:
            async with conn.transaction():
                done = await stored_results(conn, lookup) if lookup else {}
                await _forget_dead(conn, done, replayed)
                made = await self._made(conn, _first_deliveries(requests, done), settled or {})
                if before_commit is not None:
                    await before_commit(conn)
        except asyncpg.ForeignKeyViolationError as exc:
            # Only a workflow can vanish under a batch (it holds its tasks locked).
            self._workflows.clear()
            raise RetryBatch("a workflow of this batch was deleted") from exc
        return [answer_to(r, done.get(r.id) or made[r.id]) for r in requests]

    async def _made(
        self,
        conn: Connection,
        fresh: list[tuple[int, TaskRequest]],
        settled: Mapping[int, Verdict],
    ) -> dict[uuid.UUID, Result]:
        """The results of the `fresh` requests (with their positions in the batch), applied or
        judged by their verdicts; stored, with the dead letters the verdicts call for."""
        made: dict[uuid.UUID, Result] = {}
        unstorable: dict[uuid.UUID, Result] = {}
        held = await _hold_workflows(conn, {request.workflow_id for _, request in fresh})
        by_workflow: dict[int, list[TaskRequest]] = defaultdict(list)
        judged: list[tuple[TaskRequest, Verdict]] = []
        for index, request in fresh:
            verdict = settled.get(index)
            if verdict is None:
                by_workflow[request.workflow_id].append(request)
            else:
                judged.append((request, verdict))
        # A verdict's result references its workflow, which may be gone by now: then it is only
        # answered, as any request of a workflow the database does not have.
        for request, verdict in judged:
            (made if request.workflow_id in held else unstorable)[request.id] = verdict.result
            if verdict.dead_reason is not None:
                await deadletters.record_request(conn, request, verdict.dead_reason)
        for workflow_id, group in by_workflow.items():
            applied = await self._apply_group(conn, workflow_id, group, held.get(workflow_id))
            (made if applied.storable else unstorable).update(applied.results)
        if made:
            try:
                await insert_results(conn, list(made.values()))
            except asyncpg.UniqueViolationError as exc:
                raise RetryBatch("another transaction stored one of these results") from exc
        return made | unstorable

    async def _apply_group(
        self, conn: Connection, workflow_id: int, requests: list[TaskRequest], held: int | None
    ) -> _Applied:
        """The results of one workflow's requests, under the version `held` (read as the batch
        locked its row; None: there is no such workflow, or it is being deleted). A request for a
        workflow, or a version of it, that the database does not have gets a final 404, stored
        only when the workflow's row exists (a result references it)."""
        if held is None:
            self._workflows.forget(workflow_id)
            return _Applied({r.id: unknown_workflow(r) for r in requests}, storable=False)
        version = max(held, *(r.workflow_version for r in requests))
        try:
            workflow = await self._workflows.get(conn, workflow_id, version)
        except UnknownWorkflow as exc:
            if exc.stored is None:
                return _Applied({r.id: unknown_workflow(r) for r in requests}, storable=False)
            workflow = exc.stored
        known = [r for r in requests if r.workflow_version <= workflow.version]
        results = await self._apply_workflow(conn, workflow, known) if known else {}
        if len(known) < len(requests):
            unknown = (r for r in requests if r.workflow_version > workflow.version)
            results.update((r.id, unknown_workflow(r)) for r in unknown)
        return _Applied(results)

    async def _apply_workflow(
        self, conn: Connection, workflow: Workflow, requests: list[TaskRequest]
    ) -> dict[uuid.UUID, Result]:
        validator = self._validators.get(workflow)
        read = [read_request(request, validator) for request in requests]
        named = sorted({r.unique_value for each in read for r in each.readings if r.unique_value})
        existing = await lock_tasks(conn, workflow.id, named)
        # The tasks the batch touches, by Unique ID value.
        tasks = {value: _TaskState(record, is_new=False) for value, record in existing.items()}
        deleted: list[int] = []
        answers = [
            [self._answer(workflow, reading, tasks, deleted) for reading in each.readings]
            for each in read
        ]
        await _delete_tasks(conn, deleted)
        await self._write(conn, workflow, tasks)
        # Results are made once the new tasks have their ids.
        return {
            each.request.id: _result(each, given, tasks)
            for each, given in zip(read, answers, strict=True)
        }

    def _answer(
        self,
        workflow: Workflow,
        reading: Reading,
        tasks: dict[str, _TaskState],
        deleted: list[int],
    ) -> _Answer:
        """What one body gets, applied to the batch's copy of the tasks."""
        if reading.payload is None:
            return _Answer(400, Outcome.INVALID, error_body("malformed_body", reading.problem))
        if reading.operation is Operation.DELETE:
            return _delete_one(reading.unique_value, tasks, deleted)
        return self._apply_one(workflow, reading, tasks)

    def _apply_one(
        self, workflow: Workflow, reading: Reading, tasks: dict[str, _TaskState]
    ) -> _Answer:
        """An upsert or update, applied to the batch's copy of the tasks."""
        assert reading.parsed is not None
        assert reading.payload is not None
        parsed = reading.parsed
        errors = {name: list(messages) for name, messages in parsed.errors.items()}
        unique = workflow.unique_field
        value = reading.unique_value if unique is not None else self._public_ids.next()
        if unique is not None and value is None and unique.name not in errors:
            errors[unique.name] = [BLANK]
        state = tasks.get(value) if value else None
        if state is None and reading.operation is Operation.UPDATE and not errors:
            message = f"no task has {unique.name if unique else 'that id'} {value!r}"
            return _Answer(404, Outcome.NOT_FOUND, error_body("not_found", message))
        errors.update(_blank_required(workflow, reading.payload, errors, is_new=state is None))
        if errors:
            return _Answer(422, Outcome.INVALID, errors_body(errors))
        assert value is not None
        if state is None:
            record = TaskRecord(
                public_id=value if unique is None else self._public_ids.next(),
                unique_value=value,
                stage=parsed.stage or workflow.default_stage,
                assigned_to=parsed.assigned_to,
                values={fid: v for fid, v in parsed.values.items() if v is not None},
            )
            state = tasks[value] = _TaskState(record, True, changed_fields=set(record.values))
            outcome, status = Outcome.CREATED, 201
        else:
            outcome = Outcome.UPDATED if _update(state, parsed) else Outcome.UNCHANGED
            status = 200
        body = _json(render(workflow, state.record, self._base_url))
        return _Answer(status, outcome, body, value)

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


async def _hold_workflows(conn: Connection, workflow_ids: set[int]) -> dict[int, int]:
    """The versions of those of these workflows that exist, their rows held `FOR KEY SHARE` until
    the batch commits. A change locks its workflow's row `FOR UPDATE`: it waits for the batch and
    then sees its tasks (a change of the Unique ID is refused), or the batch waits for it and reads
    the new version. Either way no batch is validated and keyed under a version a committed change
    replaced. (The tasks' foreign key takes this lock too, but as they are written, after the
    validation.) One being deleted (`ingest.deletions`) is left out, unlocked: a result
    stored for it would wait on its delete's last step."""
    if not workflow_ids:
        return {}
    rows = await conn.fetch(
        "SELECT id, version FROM workflows WHERE id = ANY($1::bigint[]) AND deleted_at IS NULL"
        " FOR KEY SHARE",
        list(workflow_ids),
    )
    return {row["id"]: row["version"] for row in rows}


@dataclass(frozen=True, slots=True)
class _Applied:
    """The results of one workflow's requests, and whether they can be stored."""

    results: dict[uuid.UUID, Result]
    storable: bool = True


def _blank_required(
    workflow: Workflow, payload: dict[str, Any], errors: dict[str, list[str]], is_new: bool
) -> dict[str, list[str]]:
    """The required fields a create leaves blank, or an update blanks (those without an error
    already)."""
    return {
        spec.name: [BLANK]
        for spec in workflow.definition.fields
        if spec.required
        and spec.name not in errors
        and (is_new or spec.name in payload)
        and is_blank(payload.get(spec.name))
    }


@dataclass(frozen=True, slots=True)
class _Answer:
    """What a request got, before the batch is written; `unique_value` names the task it wrote."""

    status: int
    outcome: Outcome
    body: str
    unique_value: str | None = None

    def result(self, request: TaskRequest, tasks: Mapping[str, _TaskState]) -> Result:
        state = tasks.get(self.unique_value) if self.unique_value else None
        task_id = state.record.id if state is not None else None
        return result_of(request, self.status, self.outcome, self.body, task_id)


def _result(read: ReadRequest, answers: list[_Answer], tasks: Mapping[str, _TaskState]) -> Result:
    """A request's result: its one answer, or a batch's answers in one."""
    if not read.batch:
        return answers[0].result(read.request, tasks)
    body = batch_body([(answer.status, answer.body) for answer in answers])
    return result_of(read.request, 200, Outcome.BATCH, body)


def _delete_one(
    unique_value: str | None, tasks: dict[str, _TaskState], deleted: list[int]
) -> _Answer:
    state = tasks.pop(unique_value, None) if unique_value else None
    if state is None:
        return _Answer(404, Outcome.NOT_FOUND, error_body("not_found", "no task has this id"))
    if not state.is_new and state.record.id is not None:
        deleted.append(state.record.id)
    return _Answer(204, Outcome.DELETED, "null")


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
        if result.outcome is Outcome.DEAD and request_id in replayed
    ]
    if dead:
        await forget_dead_results(conn, dead)
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
    states.sort(key=lambda s: s.record.unique_value)  # one lock order for every worker
    rows = await conn.fetch(
        "INSERT INTO tasks (workflow_id, public_id, unique_key, stage, assigned_to, fields)"
        " SELECT $1, t.public_id, t.unique_key, t.stage, t.assigned_to, t.fields::jsonb"
        " FROM unnest($2::text[], $3::text[], $4::text[], $5::text[], $6::text[])"
        "   AS t(public_id, unique_key, stage, assigned_to, fields)"
        " ON CONFLICT (workflow_id, unique_key) DO NOTHING"
        " RETURNING id, unique_key",
        workflow.id,
        [s.record.public_id for s in states],
        [s.record.unique_value for s in states],
        [s.record.stage for s in states],
        [s.record.assigned_to for s in states],
        [encode_values(s.record.values) for s in states],
    )
    if len(rows) != len(states):
        raise RetryBatch("another transaction created a task with the same Unique ID")
    ids = {row["unique_key"]: row["id"] for row in rows}
    for state in states:
        state.record.id = ids[state.record.unique_value]


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
