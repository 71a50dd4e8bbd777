"""A private RabbitMQ node per test, which the test may stop, kill and restart at will.

Nothing is shared with the machine's own node: its own name, ports, data directory, config and
cookie, and its own epmd on its own port (so killing our node can never disturb the shared epmd's
registry). The node keeps its name and data directory across restarts, which quorum queues need
to recover. Logs go to the workdir given (tmp_path); the data lives in /tmp/fault-rabbit-*.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
import signal
import string
import subprocess
import tempfile
from pathlib import Path
from types import TracebackType

from tests.harness.proxy import free_port

SBIN = Path(os.environ.get("INGEST_TEST_RABBITMQ_SBIN", "/usr/lib/rabbitmq/bin"))
EPMD = shutil.which("epmd") or "/usr/lib/erlang/bin/epmd"

#: Replaces /etc/rabbitmq/rabbitmq.conf, which would bind the shared node's port 5672.
CONFIG = """\
loopback_users.guest = true
vm_memory_high_watermark.relative = 0.4
disk_free_limit.absolute = 50MB
log.console = false
log.file.level = info
"""


class RabbitError(RuntimeError):
    """A rabbitmqctl command failed, or the node did not come up."""


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _group_alive(pgid: int) -> bool:
    """Whether any process of the group still runs. A zombie counts as gone only once its last
    thread has exited: until then the multi-threaded beam.smp still holds its sockets."""
    for proc in Path("/proc").iterdir():
        try:
            fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) == pgid and (fields[0] != "Z" or len(os.listdir(proc / "task")) > 1):
                return True
        except (OSError, IndexError, ValueError):
            continue
    return False


def _make_base() -> Path:
    base = Path(tempfile.mkdtemp(prefix="fault-rabbit-"))
    home = base / "home"
    home.mkdir()
    # A cookie of our own: a command aimed at the wrong node by mistake fails to authenticate
    # instead of reaching the shared node.
    cookie = home / ".erlang.cookie"
    cookie.write_text("".join(secrets.choice(string.ascii_uppercase) for _ in range(20)))
    cookie.chmod(0o400)
    (base / "rabbitmq.conf").write_text(CONFIG)
    (base / "rabbitmq-env.conf").write_text("")  # instead of /etc/rabbitmq's (NODENAME=rabbit)
    (base / "enabled_plugins").write_text("[].\n")
    return base


class PrivateRabbit:
    """`async with PrivateRabbit(tmp_path) as rabbit:` a running node at `rabbit.url`."""

    def __init__(self, workdir: Path, *, startup_timeout: float = 60.0) -> None:
        self.workdir = workdir
        self.startup_timeout = startup_timeout
        self.node = f"fault-{secrets.token_hex(4)}@localhost"
        self.port = free_port()
        self.dist_port = free_port()
        self.epmd_port = free_port()
        self.log_dir = workdir / f"rabbit-{self.node.split('@')[0]}"
        self.base: Path | None = None
        self._proc: asyncio.subprocess.Process | None = None
        self._epmd: asyncio.subprocess.Process | None = None

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}/"

    @property
    def pid(self) -> int | None:
        """The pid of the node's process group leader (the rabbitmq-server script) while up."""
        return self._proc.pid if self._proc and self._proc.returncode is None else None

    async def __aenter__(self) -> PrivateRabbit:
        try:
            self.base = _make_base()
            self.log_dir.mkdir(parents=True, exist_ok=True)
            await self._start_epmd()
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
        """Kill the node (its data is thrown away, so a clean stop buys nothing) and epmd."""
        try:
            await self.kill()
        finally:
            try:
                await self._kill_group(self._epmd)
            finally:
                self._epmd = None
                if self.base is not None:
                    shutil.rmtree(self.base, ignore_errors=True)
                    self.base = None

    def env(self) -> dict[str, str]:
        """The environment for rabbitmq-server and rabbitmqctl aimed at this node."""
        if self.base is None:
            raise RuntimeError("the node has not been created")
        base = self.base
        return {
            # Nothing inherited but PATH: no stray RABBITMQ_*/ERL_* setting can reach the node.
            "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
            "LANG": "C.UTF-8",
            "HOME": str(base / "home"),
            "LC_ALL": "C.UTF-8",
            "ERL_EPMD_ADDRESS": "127.0.0.1",
            "ERL_EPMD_PORT": str(self.epmd_port),
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_CONF_ENV_FILE": str(base / "rabbitmq-env.conf"),
            "RABBITMQ_CONFIG_FILE": str(base / "rabbitmq.conf"),
            "RABBITMQ_ADVANCED_CONFIG_FILE": str(base / "advanced.config"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(base / "enabled_plugins"),
            "RABBITMQ_MNESIA_BASE": str(base / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.log_dir),
            "RABBITMQ_PID_FILE": str(base / "node.pid"),
            # Our epmd is already up; the distribution listens on loopback only.
            "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": (
                "-start_epmd false -kernel inet_dist_use_interface {127,0,0,1}"
            ),
        }

    async def start(self) -> None:
        """Start the node and wait until `rabbitmqctl await_startup` says it is up."""
        if self.pid is not None:
            raise RuntimeError("the node is already running")
        with (self.log_dir / "stdout.log").open("ab") as log:
            self._proc = await asyncio.create_subprocess_exec(
                str(SBIN / "rabbitmq-server"),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.base,
                env=self.env(),
                # Its own process group: kill() takes the script, beam.smp and its helpers at once.
                start_new_session=True,
            )
        await self._await_startup(self.startup_timeout)

    async def kill(self) -> None:
        """SIGKILL the node's whole process tree: no shutdown, as in a crash."""
        await self._kill_group(self._proc)
        self._proc = None

    async def stop(self, within: float = 60.0) -> None:
        """A clean `rabbitmqctl stop`; past `within` seconds the node is killed."""
        proc = self._proc
        if proc is None:
            return
        try:
            if proc.returncode is None:
                await self.ctl("stop", within=within)
            await asyncio.wait_for(proc.wait(), within)
        except (TimeoutError, RabbitError):
            await self.kill()
            raise
        await self.kill()  # helpers the VM left behind, if any

    async def restart(self, clean: bool = True) -> None:
        """Stop (cleanly, or by SIGKILL) and start again with the same name and data."""
        if clean:
            await self.stop()
        else:
            await self.kill()
        await self.start()

    async def ctl(self, *args: str, within: float = 60.0) -> str:
        """Run `rabbitmqctl -n NODE ARGS...` against this node; its output, or RabbitError."""
        code, output = await self._run([str(SBIN / "rabbitmqctl"), "-n", self.node, *args], within)
        if code != 0:
            raise RabbitError(f"rabbitmqctl {' '.join(args)} exited {code}: {output}")
        return output

    async def sync_metadata(self) -> None:
        """Flush the node's dets files now, as the node itself does after ~0.5 s of quiet.

        RabbitMQ 3.10 (ra 2.2.0) writes a quorum queue's name -> data directory mapping lazily
        (ra_directory's names.dets). A node killed within about a second of declaring a quorum
        queue (measured here: lost at 0.8 s, kept at 1.0 s) comes back with the queue's log on
        disk but unreachable: a new, empty member that never elects a leader (ra PR #443,
        rabbitmq-server #15725). A test that declares a queue and then kills the node calls this
        in between, standing for a queue declared long ago.
        """
        await self.ctl("eval", "[dets:sync(T) || T <- dets:all()].")

    async def _await_startup(self, within: float) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while True:
            # Polling the AMQP listener is cheap, while each rabbitmqctl run boots an Erlang VM
            # (~0.7 s) and fails at once until the node has registered; the listener opens last
            # in the boot, so await_startup then usually confirms in a single run.
            if self.pid is None:
                raise RabbitError(f"{self.node} exited:\n{self._logs()}")
            remaining = deadline - loop.time()
            if remaining <= 0:
                await self.kill()
                raise RabbitError(f"{self.node} not up in {within}s:\n{self._logs()}")
            if await _listening(self.port):
                with contextlib.suppress(RabbitError, TimeoutError):
                    await self.ctl("await_startup", "--timeout", "5", within=min(remaining, 10))
                    return
            await asyncio.sleep(0.05)

    def _logs(self) -> str:
        return _tail(self.log_dir / "stdout.log") + "\n" + _tail(self.log_dir / f"{self.node}.log")

    async def _run(self, argv: list[str], within: float) -> tuple[int, str]:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=self.env(),
            start_new_session=True,
        )
        try:
            output, _ = await asyncio.wait_for(proc.communicate(), within)
        except TimeoutError:
            await self._kill_group(proc)
            raise
        assert proc.returncode is not None
        return proc.returncode, output.decode(errors="replace").strip()

    async def _start_epmd(self) -> None:
        with (self.log_dir / "epmd.log").open("ab") as log:
            self._epmd = await asyncio.create_subprocess_exec(
                EPMD,
                "-address",
                "127.0.0.1",
                "-port",
                str(self.epmd_port),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        await _wait_listening(self.epmd_port, 10)

    @staticmethod
    async def _kill_group(proc: asyncio.subprocess.Process | None, within: float = 15.0) -> None:
        """SIGKILL a process group led by `proc` and wait until nothing in it runs any more."""
        if proc is None:
            return
        # Once the leader is reaped, the group id stays ours only while a member lives.
        if proc.returncode is None or _group_alive(proc.pid):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
        await asyncio.wait_for(proc.wait(), within)
        # beam.smp is the script's child: orphaned by the kill, it is not ours to wait for.
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while _group_alive(proc.pid):
            if loop.time() > deadline:
                raise TimeoutError(f"process group {proc.pid} survived SIGKILL")
            await asyncio.sleep(0.05)


async def _listening(port: int) -> bool:
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 1)
    except OSError:  # TimeoutError included
        return False
    writer.close()
    await writer.wait_closed()
    return True


async def _wait_listening(port: int, within: float) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not await _listening(port):
        if loop.time() > deadline:
            raise TimeoutError(f"nothing listens on port {port} after {within}s")
        await asyncio.sleep(0.02)
