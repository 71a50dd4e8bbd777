"""The machine under the bench: CPU over a window (whole machine and per process), memory and
processes."""

from __future__ import annotations

import os
import resource
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from plan import DATABASE

# The machine: CPU over a window, memory and processes.


def busy_seconds() -> float:
    """CPU time every core spent on anything but idle and iowait since boot."""
    with open("/proc/stat") as stat:
        fields = [int(v) for v in stat.readline().split()[1:]]
    idle = fields[3] + fields[4]
    return (sum(fields) - idle) / os.sysconf("SC_CLK_TCK")


def own_cpu_seconds() -> float:
    """This script's CPU plus that of the children it has reaped (wrk, nothing else)."""
    total = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        usage = resource.getrusage(who)
        total += usage.ru_utime + usage.ru_stime
    return total


@dataclass
class Span:
    """What a Window saw: wall time, machine CPU, and the CPU of the processes serving the load."""

    seconds: float
    cpu_seconds: float
    by_process: dict[str, float]


class Window:
    """Wall time and machine CPU (less wrk's and this script's) from its creation to `close`.

    The CPU of the server under test (its process tree), of the bench database's Postgres backends
    and of RabbitMQ is also taken per process: the rest of the machine is Postgres' background
    writers, the kernel, and other people's work on a shared machine.
    """

    def __init__(self, server: subprocess.Popen[bytes]) -> None:
        self._server = server
        self._processes = self._serving()
        self.started = time.monotonic()
        self._busy, self._own = busy_seconds(), own_cpu_seconds()

    def close(self) -> Span:
        machine = busy_seconds() - self._busy - (own_cpu_seconds() - self._own)
        seconds = time.monotonic() - self.started
        by_process: dict[str, float] = {}
        for pid, (role, cpu) in self._serving().items():
            before = self._processes.get(pid, (role, 0.0))[1]
            by_process[role] = by_process.get(role, 0.0) + cpu - before
        return Span(seconds, max(0.0, machine), by_process)

    def _serving(self) -> dict[int, tuple[str, float]]:
        """Role and CPU seconds so far of each process that serves the load."""
        tree = {self._server.pid, *descendants(self._server.pid)}
        found = {}
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit() and (role := serving_role(int(entry.name), tree)):
                found[int(entry.name)] = (role, process_cpu_seconds(int(entry.name)))
        return found


def serving_role(pid: int, tree: set[int]) -> str | None:
    line = cmdline(pid)
    if pid in tree:
        roles = {"ingest serve": "edge", "-m worker": "workers", "naive.py": "naive"}
        return next((role for mark, role in roles.items() if mark in line), "supervisor")
    if line.startswith("postgres: ") and DATABASE in line.split():  # backends, autovacuum
        return "Postgres"
    return "RabbitMQ" if "beam.smp" in line else None


def process_cpu_seconds(pid: int) -> float:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat.rsplit(")", 1)[1].split()  # after the command name, which may hold spaces
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_kib(pid: int, field: str = "VmRSS") -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def descendants(pid: int) -> list[int]:
    found = []
    listed = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True, timeout=10)
    for child in map(int, listed.stdout.split()):
        found.append(child)
        found.extend(descendants(child))
    return found


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""
