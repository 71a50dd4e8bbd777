"""The report: the table of figures, the ratios beside their targets, and the JSON kept in
bench/results."""

from __future__ import annotations

import os
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

from load import WrkResult
from plan import (
    BATCH_CONNECTIONS,
    BATCH_ITEMS,
    HOOK_CONNECTIONS,
    OVERLOAD_FACTOR,
    SYNC_CONNECTIONS,
    WARMUP,
)
from records import Run

# The report.

#: (a)/(n) landed/s at least this much, at these numbers of connections.
LANDED_VS_NAIVE = {64: 1.5, 256: 2.5}
LANDED_VS_BARE = 0.5
CPU_VS_NAIVE = {256: 0.4}
SYNC_P50_MS, SYNC_P99_MS = 10.0, 50.0
RSS_GROWTH = 1.25
#: Issue 11: a signed delivery's 202 within 20 ms at p99; batches land ≥ 10x the single path.
HOOK_P99_MS = 20.0
BATCH_VS_SINGLE = 10.0
NAIVE_ROLES = ("naive", "Postgres")
INGEST_ROLES = ("edge", "workers", "Postgres", "RabbitMQ")


def plural(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def judged(text: str, ok: bool | None) -> str:
    return text if ok is None else f"{text} {'✓' if ok else '✗'}"


def ratio(a: float, b: float) -> float:
    return a / b if b else 0.0


def table_rows(run: Run) -> list[tuple[str, list[str], str]]:
    """(label, one cell per number of connections, target) for the side-by-side figures."""
    cs = run.connections
    a, n, d = run.ingest, run.naive, run.bare
    vs_naive = {c: ratio(a[c].landed_rate, n[c].landed_rate) for c in cs}
    vs_bare = {c: ratio(a[c].landed_rate, d[c].rate) for c in cs}
    cpu = {c: ratio(a[c].cpu_per_task_us, n[c].cpu_per_task_us) for c in cs}
    per_message = [f"{a[c].tasks_per_message:,.1f}" for c in cs]
    return [
        ("(d) bare aiohttp req/s", [f"{d[c].rate:,.0f}" for c in cs], ""),
        ("(n) naive peer landed/s", [f"{n[c].landed_rate:,.0f}" for c in cs], ""),
        ("(a) ingest async accepted/s", [f"{a[c].answers.rate:,.0f}" for c in cs], ""),
        ("(a) ingest async landed/s", [f"{a[c].landed_rate:,.0f}" for c in cs], ""),
        ("(a) tasks per broker message", per_message, "grows with load"),
        (
            "(a)/(n) landed/s",
            [
                judged(f"{vs_naive[c]:.2f}x", _at_least(vs_naive[c], LANDED_VS_NAIVE.get(c)))
                for c in cs
            ],
            "≥ " + ", ≥ ".join(f"{v}x at {c}" for c, v in LANDED_VS_NAIVE.items()),
        ),
        (
            "(a)/(d) landed / bare req/s",
            [judged(f"{vs_bare[c]:.2f}x", vs_bare[c] >= LANDED_VS_BARE) for c in cs],
            f"≥ {LANDED_VS_BARE}x",
        ),
        (
            "(a)/(d) accepted / bare req/s",
            [f"{ratio(a[c].answers.rate, d[c].rate):.2f}x" for c in cs],
            "",
        ),
        ("CPU per landed task (n)", [f"{n[c].cpu_per_task_us:,.0f} µs" for c in cs], ""),
        ("CPU per landed task (a)", [f"{a[c].cpu_per_task_us:,.0f} µs" for c in cs], ""),
        ("  (n) naive+Postgres | rest", [n[c].split_us(NAIVE_ROLES) for c in cs], "µs"),
        (
            "  (a) edge+workers+Postgres+RabbitMQ | rest",
            [a[c].split_us(INGEST_ROLES) for c in cs],
            "µs",
        ),
        (
            "CPU per landed task (a)/(n)",
            [judged(f"{cpu[c]:.2f}x", _at_most(cpu[c], CPU_VS_NAIVE.get(c))) for c in cs],
            "≤ " + ", ≤ ".join(f"{v}x at {c}" for c, v in CPU_VS_NAIVE.items()),
        ),
        (
            "  the same, serving processes only",
            [f"{ratio(a[c].serving_per_task_us, n[c].serving_per_task_us):.2f}x" for c in cs],
            "(without the rest of a shared machine)",
        ),
    ]


def _at_least(value: float, target: float | None) -> bool | None:
    return None if target is None else value >= target


def _at_most(value: float, target: float | None) -> bool | None:
    return None if target is None else value <= target


def report(run: Run) -> list[str]:
    who = f"{plural(run.edges, 'edge')}, {plural(run.workers, 'worker')}"
    return [
        f"ingest bench, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {os.cpu_count()} CPUs: ingest as "
        f"`make run` runs it ({who}, access log on"
        + (f"; TUNED: {' '.join(run.tuned)}" if run.tuned else "")
        + f"); {run.duration:g} s a phase after {WARMUP:g} s of warm-up",
        "",
        *side_by_side(run),
        "",
        *sync_lines(run),
        *hook_lines(run),
        *batch_lines(run),
        *overload_lines(run),
        *(f"  note: {note}" for note in run.notes + failed_answers(run)),
    ]


def failed_answers(run: Run) -> list[str]:
    """Phases where some answers were not 2xx: their rates count only the 2xx ones."""
    phases: list[tuple[str, WrkResult | None]] = [("(b) sync", run.sync)]
    for c in run.connections:
        phases.append((f"(d) at {c}", run.bare[c]))
        phases += [(f"(n) at {c}", run.naive[c].answers), (f"(a) at {c}", run.ingest[c].answers)]
    return [
        f"{name}: {r.non2xx:,} non-2xx answers, {r.errors:,} socket errors of {r.requests:,}"
        for name, r in phases
        if r is not None and (r.non2xx or r.errors)
    ]


def side_by_side(run: Run) -> list[str]:
    rows = table_rows(run)
    headers = [f"{c} conns" for c in run.connections]
    label_width = max(len(label) for label, _, _ in rows)
    widths = [max(len(h), *(len(cells[i]) for _, cells, _ in rows)) for i, h in enumerate(headers)]

    def line(label: str, cells: list[str], target: str) -> str:
        padded = "  ".join(f"{cell:>{w}}" for cell, w in zip(cells, widths, strict=True))
        return f"  {label:<{label_width}}  {padded}  {target}".rstrip()

    return [line("", headers, "target"), *(line(*row) for row in rows)]


def sync_lines(run: Run) -> list[str]:
    if run.sync is None:
        return []
    s = run.sync
    p50 = judged(f"{s.p50_ms:.1f} ms", s.p50_ms < SYNC_P50_MS)
    p99 = judged(f"{s.p99_ms:.1f} ms", s.p99_ms < SYNC_P99_MS)
    return [
        f"  (b) ingest sync, {SYNC_CONNECTIONS} conns, closed loop: {s.rate:,.0f} req/s, "
        f"p50 {p50} (target < {SYNC_P50_MS:g} ms), p99 {p99} (target < {SYNC_P99_MS:g} ms)"
    ]


def hook_lines(run: Run) -> list[str]:
    if run.hooks is None:
        return []
    h = run.hooks
    p99 = judged(f"{h.p99_ms:.1f} ms", h.p99_ms < HOOK_P99_MS)
    return [
        f"  (h) signed webhook deliveries (GitHub, respond async), {HOOK_CONNECTIONS} conns, "
        f"closed loop: {h.rate:,.0f} req/s, p50 {h.p50_ms:.1f} ms, p99 {p99} "
        f"(target < {HOOK_P99_MS:g} ms)"
    ]


def batch_lines(run: Run) -> list[str]:
    if run.batch is None or not run.ingest:
        return []
    b, single = run.batch, run.ingest[min(run.connections)]
    times = ratio(b.landed_rate, single.landed_rate)
    judged_times = judged(f"{times:.2f}x", times >= BATCH_VS_SINGLE)
    return [
        f"  (t) batch imports of {BATCH_ITEMS:,} tasks, {BATCH_CONNECTIONS} conns, respond async: "
        f"{b.landed_rate:,.0f} tasks landed/s, {judged_times} (a)'s at {min(run.connections)} "
        f"conns (target ≥ {BATCH_VS_SINGLE:g}x); CPU per landed task {b.cpu_per_task_us:,.0f} µs"
    ]


def overload_lines(run: Run) -> list[str]:
    if run.overload is None:
        return []
    rss, o = run.rss_mib, run.overload
    flat = max(rss["peak"], rss["after"]) <= rss["normal"] * RSS_GROWTH
    figures = judged(f"{rss['normal']:.0f} / {rss['peak']:.0f} / {rss['after']:.0f} MiB", flat)
    return [
        f"  edge RSS, normal / peak under {run.overload_connections} sync conns "
        f"({OVERLOAD_FACTOR}x {min(run.connections)}) / after: {figures} "
        f"(target: peak and after within {RSS_GROWTH - 1:.0%} of normal)",
        f"  answers under {run.overload_connections} conns: {o.rate:,.0f} ok/s, "
        f"{o.non2xx:,} non-2xx, {o.errors:,} socket errors, p99 {o.p99_ms:,.0f} ms",
    ]


def figures(run: Run, lines: list[str]) -> dict[str, Any]:
    by_connections = {
        str(c): {
            "bare_rps": run.bare[c].rate,
            "naive_landed_per_s": run.naive[c].landed_rate,
            "naive_cpu_per_task_us": run.naive[c].cpu_per_task_us,
            "naive_serving_cpu_per_task_us": run.naive[c].serving_per_task_us,
            "ingest_accepted_per_s": run.ingest[c].answers.rate,
            "ingest_landed_per_s": run.ingest[c].landed_rate,
            "ingest_cpu_per_task_us": run.ingest[c].cpu_per_task_us,
            "ingest_serving_cpu_per_task_us": run.ingest[c].serving_per_task_us,
            "tasks_per_message": run.ingest[c].tasks_per_message,
            "ingest_vs_naive": ratio(run.ingest[c].landed_rate, run.naive[c].landed_rate),
            "ingest_vs_bare": ratio(run.ingest[c].landed_rate, run.bare[c].rate),
            "cpu_ingest_vs_naive": ratio(
                run.ingest[c].cpu_per_task_us, run.naive[c].cpu_per_task_us
            ),
            "naive": asdict(run.naive[c]),
            "ingest": asdict(run.ingest[c]),
            "bare": asdict(run.bare[c]),
        }
        for c in run.connections
    }
    return {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "cpus": os.cpu_count(),
        "edges": run.edges,
        "workers": run.workers,
        "duration_s": run.duration,
        "by_connections": by_connections,
        "sync": asdict(run.sync) if run.sync else None,
        "hooks": asdict(run.hooks) if run.hooks else None,
        "batch": asdict(run.batch) if run.batch else None,
        "overload": asdict(run.overload) if run.overload else None,
        "overload_connections": run.overload_connections,
        "edge_rss_mib": run.rss_mib,
        "notes": run.notes,
        "table": lines,
    }
