"""The submit use case: publish a task request, and answer it within a wait budget.

It knows nothing of HTTP: the handlers in `ingest.edge.tasks` turn what it returns into responses.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass

from ingest import store
from ingest.edge.context import Edge
from ingest.messages import TaskRequest
from ingest.results import Result, answer_to, fetch_result


@dataclass(frozen=True, slots=True)
class Final:
    """The request's final answer: the worker's, now or stored before. `how` is `answered`
    (it was applied while the client waited) or `replayed` (an Idempotency-Key's earlier answer)."""

    http_status: int
    body: str
    how: str


@dataclass(frozen=True, slots=True)
class Pending:
    """Accepted (the broker confirmed it) and not finished within the wait budget."""

    request_id: uuid.UUID


async def submit(
    edge: Edge, request: TaskRequest, budget: float, replay: bool = True
) -> Final | Pending:
    """Publish `request` and wait up to `budget` seconds (0: not at all) for its final answer.

    An idempotent request whose id already has a result is answered from it and not published
    again, unless `replay` is off: then a repeat is published as any request is (the worker
    applies one id at most once) and its answer is its status URL, what a caller that answers
    every request with its status URL wants, without a database read on its way.
    """
    if request.idempotent and replay:
        # Unreachable database: publish anyway; the worker applies one id at most once.
        stored = await _stored_if_reachable(edge.pool, request.id, request.workflow_id)
        if stored is not None:
            answer = answer_to(request, stored)
            return Final(answer.http_status, answer.body, "replayed")
    if budget <= 0:
        await _publish(edge, request)
        return Pending(request.id)
    return await _publish_and_wait(edge, request, budget) or Pending(request.id)


async def _publish(edge: Edge, request: TaskRequest) -> None:
    await edge.publisher.publish(request)
    edge.metrics.accept.observe(time.time() - request.received_at)


async def _publish_and_wait(edge: Edge, request: TaskRequest, budget: float) -> Final | None:
    """Publish, then wait up to `budget` seconds for the answer: the worker's reply, or its stored
    result when the reply was lost; None when neither came in time."""
    waiter = edge.replies.expect(request.id, request.fingerprint)
    try:
        await _publish(edge, request)
    except BaseException:
        edge.replies.forget(request.id, waiter)
        raise
    confirmed = time.monotonic()
    reply = await edge.replies.wait(request.id, waiter, budget)
    waited = edge.metrics.sync_replied if reply is not None else edge.metrics.sync_timed_out
    waited.observe(time.monotonic() - confirmed)
    if reply is not None:
        return Final(reply.http_status, reply.body, "answered")
    # The reply is only a wake-up: the result may be committed with its reply lost.
    stored = await _stored_if_reachable(edge.pool, request.id, request.workflow_id)
    if stored is None:
        return None
    answer = answer_to(request, stored)
    return Final(answer.http_status, answer.body, "answered")


async def _stored_if_reachable(
    pool: store.Pool, request_id: uuid.UUID, workflow_id: int
) -> Result | None:
    """The stored result, or None when there is none or the database cannot say so now.

    After a confirm, a database error must not become a 503, which would invite a retry (and a
    second effect): the client gets 202 and a status URL. Before publishing an idempotent request,
    the worker's dedupe by request id makes publishing without the look-up safe.
    """
    try:
        async with asyncio.timeout(1.0):
            return await fetch_result(pool, request_id, workflow_id)
    except store.DATABASE_UNAVAILABLE:
        return None
