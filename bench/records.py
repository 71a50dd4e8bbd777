"""What one run measured: its records, which the report reads."""

from __future__ import annotations

from dataclasses import dataclass, field

from load import WrkResult
from machine import Span


@dataclass
class Landing:
    """One load phase that writes: answers, rows landed, time and machine CPU until they did."""

    answers: WrkResult
    landed: int
    span: Span
    tasks_per_message: float | None = None

    @property
    def landed_rate(self) -> float:
        return self.landed / self.span.seconds

    @property
    def cpu_per_task_us(self) -> float:
        return self.per_task_us(self.span.cpu_seconds)

    def per_task_us(self, cpu_seconds: float) -> float:
        return cpu_seconds / max(self.landed, 1) * 1e6

    @property
    def serving_per_task_us(self) -> float:
        return self.per_task_us(sum(self.span.by_process.values()))

    def split_us(self, roles: tuple[str, ...]) -> str:
        """CPU per task of these processes, then of the rest of the machine, in µs."""
        parts = [self.per_task_us(self.span.by_process.get(role, 0.0)) for role in roles]
        rest = self.cpu_per_task_us - self.serving_per_task_us
        return " + ".join(f"{part:,.0f}" for part in parts) + f" | {max(rest, 0):,.0f}"


@dataclass
class Run:
    """Everything one `make bench` measured."""

    edges: int
    workers: int
    duration: float
    connections: list[int]
    bare: dict[int, WrkResult] = field(default_factory=dict)
    naive: dict[int, Landing] = field(default_factory=dict)
    ingest: dict[int, Landing] = field(default_factory=dict)
    sync: WrkResult | None = None
    #: Signed webhook deliveries answered 202 (GitHub's scheme), closed loop.
    hooks: WrkResult | None = None
    #: Batch imports, landed in tasks.
    batch: Landing | None = None
    overload_connections: int = 0
    overload: WrkResult | None = None
    rss_mib: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    #: Settings changed from ingest's defaults (`--set`): a tuned run, not `make run`'s.
    tuned: list[str] = field(default_factory=list)
