"""What the edge's handlers share: the `Edge`, owned by the application's lifetime."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

import asyncpg

from ingest import store
from ingest.broker import BrokerLink
from ingest.edge.cursors import Cursors
from ingest.edge.metrics import EdgeMetrics
from ingest.edge.publisher import Publisher
from ingest.edge.ratelimit import RateLimiter
from ingest.edge.replies import ReplyWaiters
from ingest.edge.request_ids import RequestIds
from ingest.notices import Notice
from ingest.settings import Settings
from ingest.sources import Source
from ingest.workflows import Workflow, hash_token

K = TypeVar("K")
V = TypeVar("V")


class Expiring(Generic[K, V]):
    """Values by key, loaded on a miss and kept `ttl` seconds (none kept when `ttl` is 0), dropped
    at once by `forget` or `clear` when a change notice says they changed (`ingest.notices`).

    A load that began before a drop may have read what the change replaced, so it is answered but
    not kept: every drop starts a new generation, and only a load of the current one is cached.
    A miss (None) is never kept, so a new token or source works at once."""

    def __init__(self, ttl: float, size: int = 10_000) -> None:
        self._ttl = ttl
        self._size = size
        self._cached: dict[K, tuple[float, V]] = {}
        self._generation = 0

    async def get(self, key: K, load: Callable[[], Awaitable[V | None]]) -> V | None:
        now = time.monotonic()
        hit = self._cached.get(key)
        if hit is not None and hit[0] > now:
            return hit[1]
        generation = self._generation
        value = await load()
        if value is not None and self._ttl > 0 and generation == self._generation:
            if len(self._cached) >= self._size:
                self._cached.clear()
            self._cached[key] = (now + self._ttl, value)
        return value

    def forget(self, changed: Callable[[V], bool]) -> None:
        """Drop every value `changed` says a change touched."""
        self._generation += 1
        for key in [key for key, (_, value) in self._cached.items() if changed(value)]:
            del self._cached[key]

    def clear(self) -> None:
        self._generation += 1
        self._cached.clear()


class WorkflowsByToken:
    """Token → workflow, cached briefly so the hot path does no database read per request; a
    change of the workflow or of its tokens drops its entries (`Edge.hear`)."""

    def __init__(self, pool: asyncpg.Pool, ttl: float, size: int = 10_000) -> None:
        self._pool = pool
        # Keyed by the token's hash: the tokens themselves are not kept.
        self._cache: Expiring[bytes, Workflow] = Expiring(ttl, size)

    async def by_token(self, token: str) -> Workflow | None:
        return await self._cache.get(
            hash_token(token), lambda: store.workflow_by_token(self._pool, token)
        )

    def forget_workflow(self, workflow_id: int) -> None:
        self._cache.forget(lambda workflow: workflow.id == workflow_id)

    def clear(self) -> None:
        self._cache.clear()


class SourcesById:
    """Source public id → the source and its workflow, cached briefly like `WorkflowsByToken`; a
    change of the source or of its workflow drops its entry (`Edge.hear`)."""

    def __init__(self, pool: asyncpg.Pool, ttl: float, size: int = 10_000) -> None:
        self._pool = pool
        self._cache: Expiring[str, tuple[Source, Workflow]] = Expiring(ttl, size)

    async def by_public_id(self, public_id: str) -> tuple[Source, Workflow] | None:
        return await self._cache.get(public_id, lambda: self._read(public_id))

    async def _read(self, public_id: str) -> tuple[Source, Workflow] | None:
        source = await store.source_by_public_id(self._pool, public_id)
        if source is None:
            return None
        workflow = await store.workflow_by_id(self._pool, source.workflow_id)
        return None if workflow is None else (source, workflow)

    def forget_source(self, source_id: int) -> None:
        self._cache.forget(lambda found: found[0].id == source_id)

    def forget_workflow(self, workflow_id: int) -> None:
        self._cache.forget(lambda found: found[1].id == workflow_id)

    def clear(self) -> None:
        self._cache.clear()


@dataclass(slots=True)
class Edge:
    """Everything a request handler needs, owned by the application's lifetime."""

    settings: Settings
    metrics: EdgeMetrics
    pool: asyncpg.Pool
    link: BrokerLink
    publisher: Publisher
    replies: ReplyWaiters
    request_ids: RequestIds
    cursors: Cursors
    workflows: WorkflowsByToken
    rate_limiter: RateLimiter
    sources: SourcesById

    def hear(self, notice: Notice) -> None:
        """Drop what this edge cached of what a change notice names (`ingest.notices`)."""
        if notice.topic == "source":
            self.sources.forget_source(notice.row_id)
            return
        self.workflows.forget_workflow(notice.row_id)
        if notice.topic == "workflow":
            self.sources.forget_workflow(notice.row_id)

    def forget_everything(self) -> None:
        """Drop every cached workflow and source (notices may have been missed)."""
        self.workflows.clear()
        self.sources.clear()

    async def problems(self) -> list[str]:
        """What keeps this edge from serving; empty when ready."""
        found = []
        try:
            async with asyncio.timeout(2):
                await self.pool.fetchval("SELECT 1")
        except Exception as exc:
            found.append(f"database unreachable: {type(exc).__name__}")
        if not self.link.connected.is_set() or not self.publisher.attached:
            found.append("broker unreachable")
        if not self.replies.attached:
            found.append("reply consumer not attached")
        return found
