"""The edge's recorder of rejections (SPEC §8): a 4xx answered on a task or hook route is handed
to a bounded queue on the request path (references only, no database), and one writer task,
owned by the application's lifetime, stores what the queue holds in batches
(`ingest.rejections`).

It never slows a request: the request path only appends to the queue. When the queue is full, or
the database fails or is slower than `WRITE_TIMEOUT`, rejections are dropped and counted
(`ingest_rejections_dropped_total`): the ledger is a diagnostic, never a reason to refuse or delay
a request.

Nor does a flood fill it: each workflow (task writes) and source (hook deliveries) has a budget
on each edge (`RecordingBudget`); what it leaves out is counted
(`ingest_rejections_unrecorded_total`) and the next rejection recorded says how many.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import asyncpg
from aiohttp import web

from ingest import rejections
from ingest.edge.keys import BODY, EDGE, OUTCOME, SOURCE, WORKFLOW
from ingest.edge.metrics import EdgeMetrics
from ingest.rejections import BODY_LIMIT, Refused

log = logging.getLogger(__name__)

HOOK_DELIVERY = "POST /api/v1/hooks/{source_id}"
#: The routes whose 4xx answers are recorded: what writes tasks, and hook deliveries. Reads (a
#: task or status URL not found, a bad list filter) are answers, not refused data.
RECORDED_ROUTES = frozenset(
    [
        "POST /api/v1/workflows/{token}/tasks",
        "PUT /api/v1/workflows/{token}/tasks",
        "POST /api/v1/workflows/{token}/tasks/batch",
        "DELETE /api/v1/workflows/{token}/tasks/{task_id}",
        HOOK_DELIVERY,
    ]
)
#: What the queue holds at most, in rejections and in bytes (bodies are cut at 64 KiB, headers
#: are bounded by the edge's header limits): a flood of 4xx costs bounded memory.
MAX_QUEUED = 10_000
MAX_QUEUED_BYTES = 16 * 1024 * 1024
#: Rejections stored in one statement at most.
BATCH = 200
#: Longest a batch may take to store before it is dropped.
WRITE_TIMEOUT = 2.0
#: How long stopping waits for the queue to be stored.
FLUSH_TIMEOUT = 2.0
#: What one edge records of one workflow's or source's rejections: a burst of RECORD_BURST, then
#: RECORD_RATE a second. A sender refused at up to that rate (a broken map, a wrong secret) is
#: recorded whole, every delivery replayable; a flood leaves a sample, enough to see what is
#: wrong, of at most ~170,000 rows a day per workflow and edge (11 GB of bodies if every one is
#: 64 KiB, a few hundred MB as they usually come), stored in batches of up to BATCH rows.
RECORD_RATE = 2.0
RECORD_BURST = 20
#: A 429 says the rate limit works, and the next ones say the same: one is recorded per this many
#: seconds per workflow or source, so a client hammering a 429 costs a row each 5 s at most.
RATE_LIMITED_EVERY = 5.0
#: Budgets remembered before those at rest (full, their 429 interval over) are forgotten.
MAX_BUDGETS = 10_000
#: A request's outcomes (`ingest.edge.keys.OUTCOME`) when a worker's answer refused it.
_WORKER_OUTCOMES = frozenset(["answered", "replayed"])

LEDGER: web.AppKey[Ledger] = web.AppKey("ledger")


@dataclass(slots=True)
class _Budget:
    tokens: float
    #: When `tokens` was counted (the clock's seconds).
    at: float
    #: When a 429 was last recorded.
    rate_limited_at: float = -math.inf
    #: Rejections left out since one was last recorded.
    left_out: int = 0


class RecordingBudget:
    """How much of each workflow's or source's rejections one edge records: a token bucket
    (`RECORD_RATE`, `RECORD_BURST`), and 429s `RATE_LIMITED_EVERY` apart; memory only, so a
    flood costs no database work to judge."""

    def __init__(
        self,
        rate: float = RECORD_RATE,
        burst: int = RECORD_BURST,
        rate_limited_every: float = RATE_LIMITED_EVERY,
        clock: Callable[[], float] = time.monotonic,
        max_budgets: int = MAX_BUDGETS,
    ) -> None:
        self._rate = rate
        self._burst = burst
        self._rate_limited_every = rate_limited_every
        self._clock = clock
        self._max_budgets = max_budgets
        self._budgets: dict[str, _Budget] = {}
        self._pruned_at = -math.inf

    def take(self, key: str, status: int) -> int | None:
        """Spend `key`'s budget on a rejection of `status`: None when it is left out, otherwise
        how many of `key`'s were left out since the last one recorded."""
        now = self._clock()
        budget = self._budgets.get(key)
        if budget is None:
            self._forget_rested(now)
            budget = self._budgets[key] = _Budget(float(self._burst), now)
        if not self._spend(budget, status, now):
            budget.left_out += 1
            return None
        left_out, budget.left_out = budget.left_out, 0
        return left_out

    @property
    def remembered(self) -> int:
        return len(self._budgets)

    def _spend(self, budget: _Budget, status: int, now: float) -> bool:
        if status == 429:
            if now - budget.rate_limited_at < self._rate_limited_every:
                return False
            budget.rate_limited_at = now
            return True
        budget.tokens = min(float(self._burst), budget.tokens + (now - budget.at) * self._rate)
        budget.at = now
        if budget.tokens < 1:
            return False
        budget.tokens -= 1
        return True

    def _forget_rested(self, now: float) -> None:
        """Once `max_budgets` are remembered, forget those at rest (at most once per 429 interval,
        so a crowd of busy ones costs no scan per rejection). A forgotten budget's count of
        left-out rejections goes with it; the counter has them."""
        few = len(self._budgets) < self._max_budgets
        if few or now - self._pruned_at < self._rate_limited_every:
            return
        self._pruned_at = now
        self._budgets = {
            key: budget for key, budget in self._budgets.items() if not self._rested(budget, now)
        }

    def _rested(self, budget: _Budget, now: float) -> bool:
        refilled = budget.tokens + (now - budget.at) * self._rate >= self._burst
        return refilled and now - budget.rate_limited_at >= self._rate_limited_every


class Ledger:
    """A bounded queue of refused requests and the task that stores them."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        metrics: EdgeMetrics,
        max_queued: int = MAX_QUEUED,
        max_bytes: int = MAX_QUEUED_BYTES,
        budget: RecordingBudget | None = None,
    ) -> None:
        self._pool = pool
        self._metrics = metrics
        self._budget = budget or RecordingBudget()
        self._max_queued = max_queued
        self._max_bytes = max_bytes
        self._queue: deque[tuple[Refused, int]] = deque()
        self._bytes = 0
        self._ready = asyncio.Event()
        self._closing = False
        self._failing = False

    def admit(self, key: str, status: int) -> int | None:
        """Whether a rejection of workflow or source `key` is to be recorded: None when its budget
        leaves it out (counted), otherwise how many it left out since it recorded one."""
        left_out = self._budget.take(key, status)
        if left_out is None:
            self._metrics.rejections_unrecorded.inc()
        return left_out

    def offer(self, refused: Refused, size: int) -> None:
        """Queue `refused` (about `size` bytes) to be stored; drop it when the queue is full."""
        full = len(self._queue) >= self._max_queued or self._bytes + size > self._max_bytes
        if full or self._closing:
            self._metrics.rejections_dropped.inc()
            return
        self._queue.append((refused, size))
        self._bytes += size
        self._ready.set()

    @property
    def queued(self) -> int:
        return len(self._queue)

    async def run(self) -> None:
        """Store what is queued, batch after batch, until `stop` and the queue is empty."""
        while True:
            await self._ready.wait()
            batch = self._take()
            if batch:
                await self._store(batch)
            elif self._closing:
                return
            else:
                self._ready.clear()

    def stop(self) -> None:
        """Take nothing more; `run` returns once what is queued is stored."""
        self._closing = True
        self._ready.set()

    def drop_queued(self) -> None:
        """Count what is still queued as dropped (the writer did not get to it)."""
        if self._queue:
            self._metrics.rejections_dropped.inc(len(self._queue))
            self._queue.clear()
            self._bytes = 0

    def _take(self) -> list[Refused]:
        batch: list[Refused] = []
        while self._queue and len(batch) < BATCH:
            refused, size = self._queue.popleft()
            self._bytes -= size
            batch.append(refused)
        return batch

    async def _store(self, batch: list[Refused]) -> None:
        try:
            rows = [rejections.row_of(refused) for refused in batch]
            async with asyncio.timeout(WRITE_TIMEOUT):
                await rejections.insert(self._pool, rows)
        except asyncio.CancelledError:
            self._metrics.rejections_dropped.inc(len(batch))
            raise
        except Exception as exc:  # the ledger must outlive whatever the database does
            self._metrics.rejections_dropped.inc(len(batch))
            if not self._failing:  # once per outage, not once per batch
                log.warning("rejections dropped: the ledger cannot store them: %r", exc)
            self._failing = True
            return
        if self._failing:
            log.info("the ledger stores rejections again")
        self._failing = False


async def ledger_context(app: web.Application) -> AsyncIterator[None]:
    """The ledger of this edge, its writer running while the application runs (after
    `edge_context`, whose pool it uses; stopped before it)."""
    edge = app[EDGE]
    ledger = Ledger(edge.pool, edge.metrics)
    writer = asyncio.create_task(ledger.run(), name="rejection ledger")
    app[LEDGER] = ledger
    try:
        yield
    finally:
        ledger.stop()
        # What is queued gets FLUSH_TIMEOUT to be stored; then the writer is cancelled.
        await asyncio.wait({writer}, timeout=FLUSH_TIMEOUT)
        writer.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await writer
        ledger.drop_queued()


def note(request: web.Request, response: web.StreamResponse, elapsed: float) -> None:
    """Record `response` if it refused a request on a task or hook route (a 4xx, the caller
    checked) whose workflow or source exists, as its budget allows: an unknown token or source
    id is never recorded, so guessing them fills nothing. Counted by status and error always."""
    workflow = request.get(WORKFLOW)
    if workflow is None:
        return
    route = f"{request.method} {_route_of(request)}"
    if route not in RECORDED_ROUTES:
        return
    status = response.status
    answer = response.body if isinstance(response, web.Response) else None
    answer = answer if isinstance(answer, bytes) else None
    app = request.app
    app[EDGE].metrics.rejections.labels(str(status), rejections.error_code(status, answer)).inc()
    ledger = app.get(LEDGER)
    if ledger is None:
        return
    left_out = ledger.admit(_budget_key(request, workflow), status)
    if left_out is not None:
        ledger.offer(*_refused(request, route, status, answer, elapsed, left_out))


def _budget_key(request: web.Request, workflow: str) -> str:
    """Whose budget a rejection spends: its source's (a hook delivery) or its workflow's."""
    source = request.get(SOURCE)
    return f"workflow/{workflow}" if source is None else f"source/{source.id}"


def _refused(
    request: web.Request,
    route: str,
    status: int,
    answer: bytes | None,
    elapsed: float,
    left_out: int,
) -> tuple[Refused, int]:
    body = request.get(BODY)
    source = request.get(SOURCE)
    verification = source.definition.verify if source is not None else None
    headers = request.headers
    refused = Refused(
        at=time.time() - elapsed,
        route=route,
        status=status,
        answer=answer,
        headers=headers.items(),
        body=None if body is None else body[:BODY_LIMIT],
        body_size=None if body is None else len(body),
        workflow=request[WORKFLOW],
        source_id=None if source is None else source.id,
        # The header scheme `hmac` reads its signature from, whatever its name.
        signature_headers=(verification.header,) if verification and verification.header else (),
        reached_worker=request.get(OUTCOME) in _WORKER_OUTCOMES,
        unrecorded_before=left_out,
        path_secrets=_path_secrets(request),
    )
    size = min(len(body), BODY_LIMIT) if body is not None else 0
    size += sum(len(name) + len(value) for name, value in headers.items()) + len(answer or b"")
    return refused, size + 512  # and the objects themselves


def _path_secrets(request: web.Request) -> tuple[str, ...]:
    """The credentials in the request's path (a workflow token, a source id), which proxies copy
    into headers of their own (`Referer`, `X-Original-URI`, `X-Envoy-Original-Path` …)."""
    return tuple(
        value
        for name in ("token", "source_id")
        if len(value := request.match_info.get(name, "")) >= 8
    )


def _route_of(request: web.Request) -> str:
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else "unmatched"
