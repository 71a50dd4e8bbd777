"""A private Postgres cluster per test, which the test may stop, crash and restart at will.

The cluster lives in a fresh /tmp/fault-pg-* directory owned by the `postgres` OS user: initdb and
postgres refuse to run as root, the postgres user cannot enter pytest's 0700 tmp_path, and a unix
socket path must stay under ~100 bytes. The server's log goes to the workdir given (tmp_path), so
it outlives the cluster for post-mortems.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Literal

import asyncpg

from tests.harness.proxy import free_port

PG_BIN = Path(os.environ.get("INGEST_TEST_PG_BIN", "/usr/lib/postgresql/15/bin"))
OS_USER = "postgres"
StopMode = Literal["smart", "fast", "immediate"]
_STOP_SIGNALS = {"smart": signal.SIGTERM, "fast": signal.SIGINT, "immediate": signal.SIGQUIT}

#: Small and quick to start, but durable: crash tests are only meaningful with fsync and
#: synchronous commit on.
SETTINGS = {
    "listen_addresses": "127.0.0.1",
    "shared_buffers": "16MB",
    "max_connections": "100",
    "huge_pages": "off",
    "fsync": "on",
    "synchronous_commit": "on",
    "full_page_writes": "on",
    "logging_collector": "off",
    "log_line_prefix": "%m [%p] ",
}


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _pids_in(directory: Path) -> list[int]:
    """Live processes whose working directory is `directory`: postmaster and backends alike
    chdir into the data directory, so this finds a cluster's orphans after its postmaster died."""
    target = str(directory)
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if os.readlink(entry / "cwd") == target:
                    pids.append(int(entry.name))
            except OSError:  # gone, or a zombie
                continue
    return pids


def _make_base() -> Path:
    base = Path(tempfile.mkdtemp(prefix="fault-pg-")).resolve()
    shutil.chown(base, OS_USER, OS_USER)
    return base


class PrivatePostgres:
    """`async with PrivatePostgres(tmp_path) as pg:` a running cluster at `pg.dsn()`."""

    def __init__(
        self,
        workdir: Path,
        *,
        startup_timeout: float = 30.0,
        settings: dict[str, str] | None = None,
    ) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.startup_timeout = startup_timeout
        self.settings = {**SETTINGS, **(settings or {})}
        self.log_path = workdir / f"postgres-{self.port}.log"
        self.base: Path | None = None
        self._proc: asyncio.subprocess.Process | None = None

    @property
    def data_dir(self) -> Path:
        if self.base is None:
            raise RuntimeError("the cluster has not been created")
        return self.base / "data"

    @property
    def pid(self) -> int | None:
        """The postmaster's pid while it runs."""
        return self._proc.pid if self._proc and self._proc.returncode is None else None

    def dsn(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    async def __aenter__(self) -> PrivatePostgres:
        try:
            await self._initdb()
            await self.start()
        except BaseException:
            await self.aclose()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Stop (immediate: nothing here needs a checkpoint) and remove the cluster."""
        try:
            await self.stop("immediate")
        finally:
            if self.base is not None:
                try:
                    await self._reap_orphans(10)
                finally:
                    self._remove_shared_memory()
                    shutil.rmtree(self.base, ignore_errors=True)
                    self.base = None

    async def start(self) -> None:
        if self.pid is not None:
            raise RuntimeError("postgres is already running")
        options = [f"--{key}={value}" for key, value in self.settings.items()]
        options += [f"--port={self.port}", f"--unix_socket_directories={self.base}"]
        with self.log_path.open("ab") as log:
            self._proc = await self._spawn(
                [str(PG_BIN / "postgres"), "-D", str(self.data_dir), *options], log
            )
        try:
            await self.wait_ready(self.startup_timeout)
        except BaseException:
            await self.kill()  # no half-started server left behind for the next start()
            raise

    async def wait_ready(self, within: float = 30.0) -> None:
        """Until a client can connect and query; fails early if the postmaster exits."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while True:
            if self.pid is None:
                raise RuntimeError(f"postgres is not running:\n{_tail(self.log_path)}")
            try:
                conn = await asyncpg.connect(self.dsn(), timeout=min(2.0, within))
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                if loop.time() > deadline:
                    raise TimeoutError(f"postgres not ready in {within}s: {exc!r}") from exc
                await asyncio.sleep(0.05)
            else:
                await conn.close(timeout=5)
                return

    async def stop(self, mode: StopMode = "fast", within: float = 30.0) -> None:
        """A clean shutdown (`smart` waits for clients, `fast` disconnects them, `immediate` skips
        the checkpoint, so the next start recovers); past `within` seconds the server is killed."""
        proc = self._proc
        if proc is None:
            return
        if proc.returncode is None:
            proc.send_signal(_STOP_SIGNALS[mode])
        try:
            await asyncio.wait_for(proc.wait(), within)
        except TimeoutError:
            await self.kill()
            raise
        self._proc = None

    async def kill(self, within: float = 10.0) -> None:
        """SIGKILL the postmaster, then its backends (as a machine crash would take them too):
        the next start runs crash recovery from the WAL."""
        proc = self._proc
        if proc is None:
            return
        if proc.returncode is None:
            proc.kill()
        await asyncio.wait_for(proc.wait(), within)
        self._proc = None
        # The postmaster is dead, so no new backend can appear; the old ones would keep the
        # shared memory attached and stop the next postmaster from starting.
        await self._reap_orphans(within)

    async def restart(self, mode: StopMode = "fast") -> None:
        await self.stop(mode)
        await self.start()

    async def _initdb(self) -> None:
        self.base = _make_base()
        # --no-sync only skips flushing initdb's own files: they would matter after an OS crash,
        # which these tests do not simulate; the server itself keeps fsync on.
        args = [str(PG_BIN / "initdb"), "-D", str(self.data_dir), "-U", "postgres"]
        args += ["--auth=trust", "--encoding=UTF8", "--locale=C", "--no-sync"]
        with self.log_path.open("ab") as log:
            proc = await self._spawn(args, log)
        try:
            code = await asyncio.wait_for(proc.wait(), 60)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise
        if code != 0:
            raise RuntimeError(f"initdb failed ({code}):\n{_tail(self.log_path)}")

    async def _spawn(self, args: list[str], log: IO[Any]) -> asyncio.subprocess.Process:
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "LC_ALL": "C",
            "HOME": str(self.base),
        }
        return await asyncio.create_subprocess_exec(
            *args,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=self.base,
            env=env,
            # Straight to the postgres user (no runuser in between), so the pid is the postmaster's.
            user=OS_USER,
            group=OS_USER,
            extra_groups=[],
        )

    async def _reap_orphans(self, within: float) -> None:
        if self.base is None:
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while pids := _pids_in(self.data_dir):
            if loop.time() > deadline:
                raise TimeoutError(f"postgres processes {pids} survived SIGKILL")
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    continue
            await asyncio.sleep(0.02)

    def _remove_shared_memory(self) -> None:
        """A killed cluster leaves its small System V segment behind (the next start of the same
        cluster would reuse it); remove it when the cluster goes away for good."""
        try:
            lines = (self.data_dir / "postmaster.pid").read_text().splitlines()
            shmid = lines[6].split()[1]
        except (OSError, IndexError):
            return
        try:
            with open("/proc/sysvipc/shm") as table:
                rows = [row.split() for row in table.readlines()[1:]]
        except OSError:
            return
        # Columns: key shmid perms size cpid lpid nattch ...; only an unattached segment.
        if any(row[1] == shmid and row[6] == "0" for row in rows):
            subprocess.run(["ipcrm", "-m", shmid], check=False, capture_output=True, timeout=10)
