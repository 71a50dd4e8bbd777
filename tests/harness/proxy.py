"""A TCP proxy in the test's event loop that breaks, stalls, slows or resets connections on demand.

Faults are switched from the test (`await proxy.cut()`, ...); each control sets the whole state,
so `heal()` always returns to plain forwarding.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import struct
from collections.abc import Coroutine
from enum import Enum
from pathlib import Path
from types import TracebackType
from typing import Any

CHUNK = 64 * 1024
#: Chunks a direction holds while they wait out the delay: bounds memory (64 x 64 KiB) and pushes
#: back on the sender through TCP once full, as a slow link would.
QUEUE_CHUNKS = 64
CONNECT_TIMEOUT = 5.0


#: Ports of the machine's shared services and of rabbitmqctl's own distribution, never handed out.
RESERVED_PORTS = {4369, 5432, 5672, 6379, 8080, 15672, 25672, *range(35672, 35683)}


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port() -> int:
    """A port nothing is bound to now, from below the kernel's ephemeral range: a server restarted
    on it later must not find it taken meanwhile by some client's outgoing connection."""
    low = _ephemeral_low()
    for _ in range(200):
        port = random.randrange(20000, max(low, 20001))
        if port not in RESERVED_PORTS and _bindable(port):
            return port
    raise RuntimeError("no free TCP port found")


class Mode(Enum):
    FORWARD = "forward"
    CUT = "cut"
    BLACKHOLE = "blackhole"


def _rst(writer: asyncio.StreamWriter) -> None:
    """Close with an RST rather than a FIN: a zero linger makes close() discard and reset."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


class _Link:
    """One client connection and, unless it arrived while blackholed, its upstream connection."""

    def __init__(
        self,
        client: tuple[asyncio.StreamReader, asyncio.StreamWriter],
        upstream: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None,
    ) -> None:
        self.client = client
        self.upstream = upstream
        self.tasks: set[asyncio.Task[None]] = set()
        #: Directions still open; the link closes when both have passed their FIN on.
        self.open_directions = 2 if upstream else 1

    def close(self, *, reset: bool = False) -> None:
        writers = [self.client[1]] + ([self.upstream[1]] if self.upstream else [])
        for writer in writers:
            if reset:
                _rst(writer)
            else:
                writer.close()
        for task in self.tasks:
            if task is not asyncio.current_task():
                task.cancel()


Queue = asyncio.Queue[tuple[float, bytes] | None]


class FaultProxy:
    """`async with FaultProxy(target_port) as proxy:` forwards 127.0.0.1:proxy.port to the target.

    Controls (all coroutines; each returns once its effect on current connections is done):
    - `heal()`: forward normally, no delay.
    - `cut()`: close every connection (FIN) and refuse new ones (the port stops listening).
    - `blackhole()`: keep connections open but drop every byte both ways; new connections are
      accepted and go nowhere. Dropped bytes are gone, so a connection that lived through a
      blackhole is out of sync with its peer after `heal()` (unlike a real partition, where TCP
      retransmits); connections accepted while blackholed are closed by `heal()`.
    - `delay(seconds)`: forward, each chunk arriving `seconds` late (latency, not bandwidth).
    - `reset()`: abort every connection with an RST (both sides), then forward new ones.
    """

    def __init__(self, target_port: int, target_host: str = "127.0.0.1") -> None:
        self.target = (target_host, target_port)
        self.port = free_port()
        self.mode = Mode.FORWARD
        self.latency = 0.0
        self._server: asyncio.Server | None = None
        self._links: set[_Link] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def connections(self) -> int:
        """Connections the proxy holds open right now."""
        return len(self._links)

    async def __aenter__(self) -> FaultProxy:
        await self._listen()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        self._unlisten()
        for link in list(self._links):
            self._end(link, reset=False)
        for task in self._tasks:
            task.cancel()
        await self._settle(set(self._tasks))

    # --- controls ------------------------------------------------------------------------------

    async def heal(self) -> None:
        await self._forward(latency=0.0)
        await self._drop_links(reset=False, only_unconnected=True)

    async def delay(self, seconds: float) -> None:
        await self._forward(latency=seconds)

    async def cut(self) -> None:
        self.mode = Mode.CUT
        self._unlisten()
        await self._drop_links(reset=False)

    async def blackhole(self) -> None:
        await self._listen()
        self.mode = Mode.BLACKHOLE

    async def reset(self) -> None:
        await self._drop_links(reset=True)
        await self._forward(latency=self.latency)

    # --- internals -----------------------------------------------------------------------------

    async def _forward(self, latency: float) -> None:
        self.mode = Mode.FORWARD
        self.latency = latency
        await self._listen()

    async def _listen(self) -> None:
        if self._server is None:
            # reuse_address: the old listener's connections may linger in TIME_WAIT on this port.
            self._server = await asyncio.start_server(
                self._accept, "127.0.0.1", self.port, reuse_address=True
            )

    def _unlisten(self) -> None:
        if self._server is not None:
            self._server.close()  # closes the listening socket now; connections are ours to close
            self._server = None

    async def _drop_links(self, *, reset: bool, only_unconnected: bool = False) -> None:
        links = [link for link in self._links if not (only_unconnected and link.upstream)]
        tasks = {task for link in links for task in link.tasks}
        for link in links:
            self._end(link, reset=reset)
        await self._settle(tasks)

    @staticmethod
    async def _settle(tasks: set[asyncio.Task[None]]) -> None:
        if tasks:
            await asyncio.wait(tasks, timeout=5)
        await asyncio.sleep(0)  # transports finish closing on the next turn of the loop

    def _spawn(self, link: _Link | None, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        if link is not None:
            link.tasks.add(task)

    def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.mode is Mode.CUT:  # accepted just before the listener closed
            writer.close()
        elif self.mode is Mode.BLACKHOLE:
            link = _Link((reader, writer), None)
            self._links.add(link)
            self._spawn(link, self._read(link, reader, None))
        else:
            self._spawn(None, self._connect(reader, writer))

    async def _connect(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            upstream = await asyncio.wait_for(
                asyncio.open_connection(*self.target), CONNECT_TIMEOUT
            )
        except (OSError, TimeoutError):
            _rst(writer)  # what the client would see from a dead target
            return
        except asyncio.CancelledError:  # the proxy is closing
            writer.close()
            raise
        if self.mode is Mode.CUT:  # cut while we were connecting
            writer.close()
            upstream[1].close()
            return
        link = _Link((reader, writer), upstream)
        self._links.add(link)
        for source, sink in ((reader, upstream[1]), (upstream[0], writer)):
            queue: Queue = asyncio.Queue(QUEUE_CHUNKS)
            self._spawn(link, self._read(link, source, queue))
            self._spawn(link, self._write(link, sink, queue))

    async def _read(self, link: _Link, source: asyncio.StreamReader, queue: Queue | None) -> None:
        loop = asyncio.get_running_loop()
        try:
            while data := await source.read(CHUNK):
                if self.mode is Mode.FORWARD and queue is not None:
                    await queue.put((loop.time() + self.latency, data))
        except OSError:
            self._end(link, reset=True)  # pass a reset on as a reset
            return
        if queue is None:
            self._end(link, reset=False)
        else:
            await queue.put(None)  # end of stream: the writer passes the FIN on

    async def _write(self, link: _Link, sink: asyncio.StreamWriter, queue: Queue) -> None:
        loop = asyncio.get_running_loop()
        try:
            while item := await queue.get():
                due, data = item
                await asyncio.sleep(max(0.0, due - loop.time()))
                if self.mode is Mode.FORWARD:  # bytes in flight when the blackhole began vanish
                    sink.write(data)
                    await sink.drain()
            if sink.can_write_eof():
                sink.write_eof()
        except OSError:
            self._end(link, reset=True)
            return
        link.open_directions -= 1
        if link.open_directions == 0:
            self._end(link, reset=False)

    def _end(self, link: _Link, *, reset: bool) -> None:
        if link in self._links:
            self._links.discard(link)
            link.close(reset=reset)
