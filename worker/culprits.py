"""Finding the requests that make a batch fail, so that one request's failure stays its own.

A batch is applied in one transaction, so it fails as a whole. When it fails for a reason other
than the database or the broker being unavailable, some of its requests cause it: a value Postgres
refuses, or a bug one payload triggers. `find_culprits` finds them by bisection over dry runs
(transactions rolled back): a part that applies holds no culprit, a lone request that fails is one.
The settler (`worker.settling`) then applies the batch once more without them, each culprit with
a final result of its own (`verdict`), so the healthy requests of the batch commit after a single
retry.

A request may also kill the worker process: no exception to catch, no dry run survives it. Such
a message comes back redelivered; `commit_parts` cuts it in ever smaller parts, each committed
on its own, and a lone request is marked as attempted (`mark_attempt`) before it runs. A lone
request that other worker processes marked twice and never finished killed them: on its next
delivery it gets its verdict without running.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass

from ingest.errors import IngestError
from ingest.messages import TaskRequest
from ingest.results import Result, dead_lettered, unstorable_value
from ingest.store import VALUE_REJECTED, Connection

#: Dry-runs the requests at these positions: None when they apply, else what they raised.
DryRun = Callable[[list[int]], Awaitable[BaseException | None]]

_REASON_CHARS = 500


class WorkerKilled(IngestError):
    """Raised for a request that was being applied alone when its worker process died."""


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


def commit_parts(messages: list[tuple[int, int]], delivery_limit: int) -> list[list[int]]:
    """How to commit a batch of messages, given (requests, earlier deliveries) of each: whole,
    unless a message was delivered before (a worker may have died holding it). Such a message is
    cut into 2 ** (earlier deliveries + 1) parts, in order, each committed on its own, so the
    requests before one that kills the worker commit; early enough before the delivery limit
    for the killer to be convicted (`DEATHS_TO_CONVICT`), it is applied one request at a time,
    where `mark_attempt` catches the killer. Parts are positions in the batch; requests keep
    their order."""
    last_chance = delivery_limit - DEATHS_TO_CONVICT - 1
    parts: list[list[int]] = [[]]
    start = 0
    for count, deaths in messages:
        positions = list(range(start, start + count))
        start += count
        if deaths < 1:
            parts[-1].extend(positions)
            continue
        pieces = count if deaths >= last_chance else min(2 ** (deaths + 1), count)
        size = -(-count // pieces)
        parts.extend(positions[i : i + size] for i in range(0, count, size))
        parts.append([])
    return [part for part in parts if part]


#: Deaths of a worker applying one request alone that convict the request (one could be chance:
#: a worker killed from outside at that moment).
DEATHS_TO_CONVICT = 2


def request_key(request_id: uuid.UUID) -> str:
    """The attempt mark of a request applied alone."""
    return f"request:{request_id.hex}"


def message_key(message_id: str) -> str:
    """The attempt mark of a redelivered message being applied."""
    return f"message:{message_id}"


async def mark_attempt(conn: Connection, key: str, owner: uuid.UUID) -> int:
    """Mark what `owner` (one worker process) is about to apply, committed before it runs;
    returns how many other processes marked it before and never finished: each one a worker
    that died applying it. The same process marking again (a retry after an outage) is no
    death."""
    deaths: int = await conn.fetchval(
        "INSERT INTO attempts AS a (key, owner) VALUES ($1, $2)"
        " ON CONFLICT (key) DO UPDATE SET owner = EXCLUDED.owner,"
        "   attempts = a.attempts + (a.owner <> EXCLUDED.owner)::int"
        " RETURNING attempts - 1",
        key,
        owner,
    )
    return deaths


async def unfinished_attempts(conn: Connection, keys: Collection[str]) -> dict[str, int]:
    """Marks left by workers that died, by key (absent: none)."""
    rows = await conn.fetch(
        "SELECT key, attempts FROM attempts WHERE key = ANY($1::text[])", list(keys)
    )
    return {row["key"]: row["attempts"] for row in rows}


async def forget_attempts(conn: Connection, keys: Collection[str]) -> None:
    """What the marks stood for is finished."""
    await conn.execute("DELETE FROM attempts WHERE key = ANY($1::text[])", list(keys))


@dataclass(frozen=True, slots=True)
class Verdict:
    """A culprit's final result, and why it is dead-lettered (None: it is the client's 4xx)."""

    result: Result
    dead_reason: str | None = None


def verdict(request: TaskRequest, failure: BaseException) -> Verdict:
    """A value Postgres refuses is the client's 422; any other failure of a request alone is a
    bug it triggers: it is dead-lettered with its own 500, for an operator to replay. What went
    wrong inside is for the operator (the dead letter, the log), not the client."""
    if isinstance(failure, VALUE_REJECTED):
        return Verdict(unstorable_value(request))
    reason = f"{type(failure).__name__}: {failure}"[:_REASON_CHARS]
    return Verdict(dead_lettered(request), reason)
