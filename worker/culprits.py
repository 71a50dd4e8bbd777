"""Finding the requests that make a batch fail, so that one request's failure stays its own.

A batch is applied in one transaction, so it fails as a whole. When it fails for a reason other
than the database or the broker being unavailable, some of its requests cause it: a value Postgres
refuses, or a bug one payload triggers. `find_culprits` finds them by bisection over dry runs
(transactions rolled back): a part that applies holds no culprit, a lone request that fails is one.
The consumer then applies the batch once more without them, each culprit with a final result of
its own (`verdict`), so the healthy requests of the batch commit after a single retry.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import orjson

from ingest.deadletters import DEAD_OUTCOME, DEAD_STATUS, failure_body
from ingest.messages import TaskRequest
from ingest.results import Result
from ingest.store import VALUE_REJECTED
from ingest.tasks import Outcome

#: Dry-runs the requests at these positions: None when they apply, else what they raised.
DryRun = Callable[[list[int]], Awaitable[BaseException | None]]

_REASON_CHARS = 500


async def find_culprits(
    dry_run: DryRun, positions: list[int], failure: BaseException
) -> dict[int, BaseException]:
    """The positions whose request fails alone, with what it raised, among `positions` (which
    failed together with `failure`). A failure that only a combination of requests causes yields
    no culprit in that part."""
    if len(positions) == 1:
        return {positions[0]: failure}
    middle = len(positions) // 2
    found: dict[int, BaseException] = {}
    for part in (positions[:middle], positions[middle:]):
        part_failure = await dry_run(part)
        if part_failure is not None:
            found.update(await find_culprits(dry_run, part, part_failure))
    return found


def commit_parts(messages: list[tuple[int, int]]) -> list[list[int]]:
    """How to commit a batch of messages, given (requests, earlier deliveries) of each: whole,
    unless a worker died holding one of its messages. A request may kill the worker (no exception
    to catch, no dry run survives it), so a redelivered message is applied in ever smaller parts,
    2 ** (earlier deliveries), each committed on its own, from alternating ends: the requests
    beside the killer commit before it, and within the default delivery limit (10) a message of
    up to 256 requests (the edge's default batch) leaves the killer dead-lettered alone. Parts
    are positions in the batch; messages keep their order."""
    parts: list[list[int]] = [[]]
    start = 0
    for count, deaths in messages:
        positions = list(range(start, start + count))
        start += count
        if deaths < 1:
            parts[-1].extend(positions)
            continue
        size = -(-count // min(2**deaths, count))
        chunks = [positions[i : i + size] for i in range(0, count, size)]
        parts.extend(chunks[::-1] if deaths % 2 else chunks)
        parts.append([])
    return [part for part in parts if part]


@dataclass(frozen=True, slots=True)
class Verdict:
    """A culprit's final result, and why it is dead-lettered (None: it is the client's 4xx)."""

    result: Result
    dead_reason: str | None = None


def verdict(request: TaskRequest, failure: BaseException) -> Verdict:
    """A value Postgres refuses is the client's 422; any other failure of a request alone is a
    bug it triggers: it is dead-lettered with its own 500, for an operator to replay."""
    if isinstance(failure, VALUE_REJECTED):
        message = f"the database cannot store this task: {failure}"[:_REASON_CHARS]
        body = {"error": "unstorable_value", "message": message}
        return Verdict(_result(request, 422, Outcome.INVALID.value, orjson.dumps(body).decode()))
    reason = f"{type(failure).__name__}: {failure}"[:_REASON_CHARS]
    return Verdict(_result(request, DEAD_STATUS, DEAD_OUTCOME, failure_body(reason)), reason)


def _result(request: TaskRequest, status: int, outcome: str, body: str) -> Result:
    return Result(
        request_id=request.id,
        workflow_id=request.workflow_id,
        http_status=status,
        outcome=outcome,
        body=body,
        received_at=request.received_at,
        fingerprint=request.fingerprint,
    )
