"""A Jepsen-style history of client requests, checked against Postgres once faults heal.

The workload is a workflow without a Unique ID, so every applied request creates one task; each
request carries a unique `Marker` (also its Idempotency-Key), so the effects of a request are the
tasks with its marker. After the run:
- lost:        acknowledged (200/201/202) but no effect, or a 202 whose status never became final;
- duplicated:  more than one effect;
- unexpected:  an effect for a request answered with a 4xx (a clean rejection);
- recovered:   no answer or a 5xx (outcome unknown to the client) yet applied once: allowed.
"""

from __future__ import annotations

import asyncio
import itertools
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field

import aiohttp
import asyncpg

from ingest.messages import idempotent_request_id

LEDGER = {
    "name": "Ledger",
    "fields": [
        {"name": "Marker", "type": "text", "required": True},
        {"name": "Seq", "type": "number"},
    ],
    "stages": ["New"],
}
ACKNOWLEDGED = {200, 201, 202}


@dataclass
class Op:
    marker: str
    seq: int
    status: int | None = None
    attempts: int = 0
    seconds: float = 0.0
    error: str = ""
    #: What every attempt got (None: no answer), retries included.
    seen: list[int | None] = field(default_factory=list)


@dataclass
class Report:
    sent: int
    acknowledged: int
    lost: list[str] = field(default_factory=list)
    duplicated: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    recovered: int = 0
    unknown_unapplied: int = 0
    statuses: dict[str, int] = field(default_factory=dict)
    #: Every attempt's answer, retries included: shows the fault was felt.
    attempts: dict[str, int] = field(default_factory=dict)
    slowest: float = 0.0

    @property
    def ok(self) -> bool:
        return not (self.lost or self.duplicated or self.unexpected)

    def __str__(self) -> str:
        return (
            f"sent={self.sent} acknowledged={self.acknowledged} lost={len(self.lost)}"
            f" duplicated={len(self.duplicated)} unexpected={len(self.unexpected)}"
            f" recovered={self.recovered} unknown-unapplied={self.unknown_unapplied}"
            f" final={self.statuses} attempts={self.attempts} slowest={self.slowest:.1f}s"
        )


class History:
    """Records what every client request got."""

    def __init__(self) -> None:
        self.ops: list[Op] = []
        self._seq = itertools.count()
        self.run = uuid.uuid4().hex[:8]

    def new_op(self) -> Op:
        seq = next(self._seq)
        op = Op(marker=f"{self.run}-{seq}", seq=seq)
        self.ops.append(op)
        return op


async def send(
    session: aiohttp.ClientSession,
    url: str,
    op: Op,
    *,
    retries: int = 0,
    prefer: str = "wait=2",
    request_timeout: float = 15.0,
) -> None:
    """POST one op (retrying an unknown outcome with the same Idempotency-Key)."""
    started = time.monotonic()
    body = {"Marker": op.marker, "Seq": op.seq}
    headers = {"Idempotency-Key": op.marker, "Prefer": prefer}
    for attempt in range(retries + 1):
        op.attempts = attempt + 1
        try:
            async with session.post(
                url,
                json=body,
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=request_timeout),
            ) as response:
                op.status = response.status
                await response.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            op.status, op.error = None, type(exc).__name__
        op.seen.append(op.status)
        if op.status is not None and op.status < 500:
            break
        await asyncio.sleep(min(0.2 * 2**attempt, 2.0))
    op.seconds = time.monotonic() - started


async def load(
    urls: list[str],
    token: str,
    history: History,
    *,
    until: asyncio.Event,
    count: int,
    concurrency: int = 16,
    retries: int = 0,
    prefer: str = "wait=2",
) -> None:
    """Send ops from `concurrency` clients spread over `urls` until `until` is set (at most
    `count` of them, so the loop is bounded however long the fault lasts)."""
    remaining = iter(range(count))

    async def client(n: int, session: aiohttp.ClientSession) -> None:
        url = f"{urls[n % len(urls)]}/api/v1/workflows/{token}/tasks"
        for _ in remaining:
            if until.is_set():
                return
            await send(session, url, history.new_op(), retries=retries, prefer=prefer)

    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        await asyncio.gather(*(client(n, session) for n in range(concurrency)))


async def settle(pool: asyncpg.Pool, workflow_id: int, history: History, within: float) -> None:
    """Wait until every acknowledged op has a final result (or `within` runs out)."""
    wanted = [
        idempotent_request_id(workflow_id, op.marker)
        for op in history.ops
        if op.status in ACKNOWLEDGED
    ]
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        done = await pool.fetchval(
            "SELECT count(*) FROM request_results WHERE request_id = ANY($1::uuid[])", wanted
        )
        if done >= len(wanted):
            return
        await asyncio.sleep(0.5)


async def check(pool: asyncpg.Pool, workflow_id: int, history: History) -> Report:
    effects = Counter(
        dict(
            await pool.fetch(
                "SELECT t.fields->>'1', count(*) FROM tasks t"
                " WHERE t.workflow_id = $1 AND t.fields ? '1' GROUP BY 1",
                workflow_id,
            )
        )
    )
    finals = {
        row["request_id"]
        for row in await pool.fetch(
            "SELECT request_id FROM request_results WHERE workflow_id = $1", workflow_id
        )
    }
    report = Report(
        sent=len(history.ops),
        acknowledged=sum(op.status in ACKNOWLEDGED for op in history.ops),
        statuses=dict(Counter(str(op.status) for op in history.ops)),
        attempts=dict(Counter(str(status) for op in history.ops for status in op.seen)),
        slowest=max((op.seconds / op.attempts for op in history.ops), default=0.0),
    )
    for op in history.ops:
        applied = effects.get(op.marker, 0)
        final = idempotent_request_id(workflow_id, op.marker) in finals
        if applied > 1:
            report.duplicated.append(op.marker)
        elif op.status in ACKNOWLEDGED and (applied == 0 or not final):
            report.lost.append(op.marker)
        elif op.status is not None and 400 <= op.status < 500 and applied:
            report.unexpected.append(op.marker)
        elif (op.status is None or op.status >= 500) and applied:
            report.recovered += 1
        elif op.status is None or op.status >= 500:
            report.unknown_unapplied += 1
    return report
