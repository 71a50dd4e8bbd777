"""Load: wrk with bench/post.lua (the seed task, a unique Company ID per request), and what it
saw."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass

from plan import BENCH

# Load: wrk with bench/post.lua (the seed task, a unique Company ID per request).


@dataclass
class WrkResult:
    requests: int
    seconds: float
    non2xx: int
    errors: int
    p50_ms: float
    p99_ms: float

    @property
    def ok(self) -> int:
        return self.requests - self.non2xx - self.errors

    @property
    def rate(self) -> float:
        return self.ok / self.seconds


def wrk(
    url: str,
    duration: float,
    connections: int,
    prefer: str = "",
    watch: Callable[[], None] | None = None,
    script: str = "post.lua",
    script_env: dict[str, str] | None = None,
) -> WrkResult:
    """Run wrk with bench/`script` for `duration` seconds; `watch` is called every 0.2 s while it
    runs; `script_env` is what the script reads from its environment."""
    command = ["wrk", f"-t{min(2, connections)}", f"-c{connections}", f"-d{duration:g}s"]
    command += ["--timeout", "10s", "-s", str(BENCH / script), url]
    env = {**os.environ, "WRK_PREFER": prefer, **(script_env or {})}
    deadline = time.monotonic() + duration + 60
    with subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as process:
        while process.poll() is None and time.monotonic() < deadline:
            if watch is not None:
                watch()
            with suppress(subprocess.TimeoutExpired):
                process.wait(0.2)
        out, err = process.communicate(timeout=10)
    if process.returncode:
        raise RuntimeError(f"wrk failed ({process.returncode}): {err.strip()}")
    line = next(line for line in out.splitlines() if line.startswith("JSON "))
    raw = json.loads(line[5:])
    errors = raw["connect"] + raw["read"] + raw["write"] + raw["timeout"]
    return WrkResult(
        raw["requests"],
        raw["duration_us"] / 1e6,
        raw["non2xx"],
        errors,
        raw["p50_us"] / 1000,
        raw["p99_us"] / 1000,
    )
