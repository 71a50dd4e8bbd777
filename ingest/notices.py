"""Change notices: a workflow, its tokens or a source changed, so every edge and worker drops
what it cached of it at once, not when the cache's TTL runs out.

Postgres `NOTIFY` carries them. `announce` runs inside the transaction that makes the change:
Postgres delivers the notice when (and only if) that transaction commits. A `ChangeListener`
hears them on a connection of its own. Notices sent while it was not listening are lost for good,
so each time it starts listening it calls `on_lost`: drop everything cached, whatever it was.
While it cannot listen, caches expire by their TTL (`INGEST_WORKFLOW_CACHE_TTL`) as before.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Literal, get_args

import asyncpg

from ingest.settings import Settings

log = logging.getLogger(__name__)

#: The one channel every process listens on.
CHANNEL = "ingest_changes"

#: What changed: a workflow's definition (or the workflow was deleted), its tokens, or a source.
Topic = Literal["workflow", "tokens", "source"]


async def announce(
    conn: asyncpg.Pool | asyncpg.Connection | asyncpg.pool.PoolConnectionProxy,
    topic: Topic,
    row_id: int,
) -> None:
    """Tell every listening process that `topic` row `row_id` changed (on commit)."""
    await conn.execute("SELECT pg_notify($1, $2)", CHANNEL, f"{topic}:{row_id}")


#: Seconds between two looks at an idle listening connection (a dead peer can stay silent).
_PING_EVERY = 5.0
#: Waits before reconnecting: the first, doubling up to the last.
_FIRST_BACKOFF = 0.1
_MAX_BACKOFF = 5.0
#: A row id is a bigint: at most 19 digits.
_MAX_ID_DIGITS = 19


@dataclass(frozen=True, slots=True)
class Notice:
    """One change: `topic` row `row_id`."""

    topic: Topic
    row_id: int


def parse(payload: str) -> Notice | None:
    """The notice a payload carries; None for one that is none of ours (logged by the caller)."""
    topic, colon, digits = payload.partition(":")
    if not colon or topic not in get_args(Topic):
        return None
    if not (digits.isascii() and digits.isdigit()) or len(digits) > _MAX_ID_DIGITS:
        return None
    return Notice(topic, int(digits))  # type: ignore[arg-type]  # checked against Topic above


def backoff(failures: int) -> float:
    """Seconds to wait after `failures` failures in a row (jittered, so processes spread out)."""
    ceiling = min(_MAX_BACKOFF, _FIRST_BACKOFF * 2 ** min(max(failures - 1, 0), 32))
    return random.uniform(ceiling / 2, ceiling)


class ChangeListener:
    """LISTENs on `CHANNEL` over a connection of its own for as long as its `async with` lasts,
    and calls `on_notice` for each notice heard. Each time it starts listening (the first time
    too: what was cached before it listened heard nothing) it calls `on_lost`. A lost connection
    is made again, with backoff, until the context ends. Both callbacks run in the event loop
    and must not block."""

    def __init__(
        self,
        settings: Settings,
        role: str,
        on_notice: Callable[[Notice], None],
        on_lost: Callable[[], None],
    ) -> None:
        self._settings = settings
        self._on_notice = on_notice
        self._on_lost = on_lost
        #: What `pg_stat_activity` shows for its connection.
        self.application_name = f"ingest-changes-{role}-{os.getpid()}"
        #: Set while LISTEN is in force.
        self.listening = asyncio.Event()
        #: How many times it started listening.
        self.sessions = 0
        self._failures = 0
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> ChangeListener:
        self._task = asyncio.create_task(self._run(), name=self.application_name)
        try:
            # Start with notices heard when the database lets us; the TTL covers it otherwise.
            async with asyncio.timeout(self._settings.database_timeout):
                await self.listening.wait()
        except TimeoutError:
            log.warning("not listening for changes yet: caches rely on their TTL meanwhile")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._task is not None:
            self._task.cancel()
            # wait() raises nothing of the task's own, yet lets our own cancellation through.
            await asyncio.wait([self._task], timeout=self._settings.database_timeout)

    async def _run(self) -> None:
        while True:
            try:
                await self._listen()
            except Exception as exc:  # whatever broke it, listening must resume
                log.warning("listening for changes failed: %s: %s", type(exc).__name__, exc)
            self._failures += 1
            await asyncio.sleep(backoff(self._failures))

    async def _listen(self) -> None:
        """Listen until the connection is lost; it is closed however this ends (terminate()
        needs no await, so cancellation cannot leak it)."""
        timeout = self._settings.database_timeout
        conn = await asyncpg.connect(
            self._settings.database_url,
            timeout=timeout,
            server_settings={"application_name": self.application_name},
        )
        lost = asyncio.Event()
        try:
            conn.add_termination_listener(lambda _conn: lost.set())
            async with asyncio.timeout(timeout):
                await conn.add_listener(CHANNEL, self._heard)
            self._started()
            while not lost.is_set():
                await self._idle(conn, lost)
        finally:
            self.listening.clear()
            conn.terminate()
        log.warning("the connection listening for changes was lost; connecting again")

    def _started(self) -> None:
        self._failures = 0
        self.sessions += 1
        self.listening.set()
        self._on_lost()

    async def _idle(self, conn: asyncpg.Connection, lost: asyncio.Event) -> None:
        try:
            async with asyncio.timeout(_PING_EVERY):
                await lost.wait()
        except TimeoutError:
            await conn.execute("SELECT 1", timeout=self._settings.database_timeout)

    def _heard(
        self,
        _conn: asyncpg.Connection | asyncpg.pool.PoolConnectionProxy,
        _pid: int,
        _channel: str,
        payload: object,
    ) -> None:
        notice = parse(payload) if isinstance(payload, str) else None
        if notice is None:
            log.warning("ignored a change notice that is none of ours: %.100r", payload)
            return
        try:
            self._on_notice(notice)
        except Exception:
            # A failing callback must not stop the notices after it; dropping every cache
            # keeps what it missed from being served stale.
            log.exception("a change notice's handler failed: dropping every cache")
            self._on_lost()
