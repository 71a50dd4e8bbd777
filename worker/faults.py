"""Fault points: deterministic crashes for the fault suite, armed only by INGEST_FAULT_POINTS.

`poison:MARKER` makes any batch holding a request whose body contains MARKER raise (a handler
crash); `kill:MARKER` kills the worker process with SIGKILL instead (a crash no handler survives);
`exit-before-commit` and `exit-after-commit` kill it at that point of its first batch. Unset (the
default), every check is a cheap no-op.
"""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import Iterable

from ingest.messages import TaskRequest

log = logging.getLogger(__name__)


class PoisonFault(RuntimeError):
    """Raised by the `poison:` fault point, standing for a bug that crashes the handler."""


class FaultPoints:
    def __init__(self, spec: str) -> None:
        points = [p.strip() for p in spec.split(",") if p.strip()]
        self._markers = [p.removeprefix("poison:") for p in points if p.startswith("poison:")]
        self._killers = [p.removeprefix("kill:") for p in points if p.startswith("kill:")]
        self._exits = {p for p in points if p.startswith("exit-")}

    def check_poison(self, requests: Iterable[TaskRequest]) -> None:
        if not (self._markers or self._killers):
            return
        bodies = [r.body for r in requests]
        if any(m in body for body in bodies for m in self._killers):
            log.error("fault point kill: killing worker %d", os.getpid())
            os.kill(os.getpid(), signal.SIGKILL)
        if any(m in body for body in bodies for m in self._markers):
            raise PoisonFault("a request matched a poison fault point")

    def maybe_exit(self, point: str) -> None:
        if point in self._exits:
            log.error("fault point %s: killing worker %d", point, os.getpid())
            os.kill(os.getpid(), signal.SIGKILL)
