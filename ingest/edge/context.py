"""What the edge's handlers share: the `Edge`, owned by the application's lifetime."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import asyncpg

from ingest import store
from ingest.broker import BrokerLink
from ingest.edge.cursors import Cursors
from ingest.edge.metrics import EdgeMetrics
from ingest.edge.publisher import Publisher
from ingest.edge.ratelimit import RateLimiter
from ingest.edge.replies import ReplyWaiters
from ingest.edge.request_ids import RequestIds
from ingest.settings import Settings
from ingest.sources import Source
from ingest.workflows import Workflow, hash_token


class WorkflowsByToken:
    """Token → workflow, cached briefly so the hot path does no database read per request."""

    def __init__(self, pool: asyncpg.Pool, ttl: float, size: int = 10_000) -> None:
        self._pool = pool
        self._ttl = ttl
        self._size = size
        self._cached: dict[bytes, tuple[float, Workflow]] = {}

    async def by_token(self, token: str) -> Workflow | None:
        key = hash_token(token)
        now = time.monotonic()
        hit = self._cached.get(key)
        if hit is not None and hit[0] > now:
            return hit[1]
        workflow = await store.workflow_by_token(self._pool, token)
        if workflow is not None and self._ttl > 0:
            if len(self._cached) >= self._size:
                self._cached.clear()
            self._cached[key] = (now + self._ttl, workflow)
        return workflow


class SourcesById:
    """Source public id → the source and its workflow, cached briefly like `WorkflowsByToken`: a
    deleted source stops taking deliveries once its entry expires (`INGEST_WORKFLOW_CACHE_TTL`)."""

    def __init__(self, pool: asyncpg.Pool, ttl: float, size: int = 10_000) -> None:
        self._pool = pool
        self._ttl = ttl
        self._size = size
        self._cached: dict[str, tuple[float, tuple[Source, Workflow]]] = {}

    async def by_public_id(self, public_id: str) -> tuple[Source, Workflow] | None:
        now = time.monotonic()
        hit = self._cached.get(public_id)
        if hit is not None and hit[0] > now:
            return hit[1]
        found = await self._read(public_id)
        if found is not None and self._ttl > 0:
            if len(self._cached) >= self._size:
                self._cached.clear()
            self._cached[public_id] = (now + self._ttl, found)
        return found

    async def _read(self, public_id: str) -> tuple[Source, Workflow] | None:
        source = await store.source_by_public_id(self._pool, public_id)
        if source is None:
            return None
        workflow = await store.workflow_by_id(self._pool, source.workflow_id)
        return None if workflow is None else (source, workflow)


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
