"""Metrics shared by every process: one registry of its own, or every edge's values merged."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

from prometheus_client import CollectorRegistry

from ingest.metrics import MULTIPROCESS_DIR, forget_process, served_registry

#: One edge process's part: it answers `requests`, holds `backlog` and reads `ready` from the
#: broker (mostrecent gauges keep the newest reading).
_EDGE = textwrap.dedent(
    """
    import sys
    from ingest.edge.metrics import EdgeMetrics
    requests, backlog, ready = (int(a) for a in sys.argv[1:4])
    metrics = EdgeMetrics()
    for _ in range(requests):
        metrics.answered("/r", "GET", 200, 0.01)
    metrics.backlog.set(backlog)
    metrics.queue_ready.set(ready)
    """
)

_SCRAPE = textwrap.dedent(
    """
    from ingest.edge.metrics import EdgeMetrics
    from ingest.metrics import exposition
    print(exposition(EdgeMetrics().exposed).decode())
    """
)


def _run(code: str, directory: Path, *args: str) -> str:
    env = {MULTIPROCESS_DIR: str(directory), "PATH": ""}
    done = subprocess.run(
        [sys.executable, "-c", code, *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        cwd=Path(__file__).resolve().parents[3],
    )
    return done.stdout


def _value(text: str, series: str) -> float:
    for line in text.splitlines():
        if line.startswith(series + " "):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{series} not in:\n{text}")


def test_a_process_without_a_directory_serves_its_own_registry():
    own = CollectorRegistry()
    assert served_registry(own) is own


def test_edges_sharing_a_directory_are_served_summed_and_read_gauges_are_not(tmp_path):
    _run(_EDGE, tmp_path, "3", "4", "12")
    _run(_EDGE, tmp_path, "2", "1", "10")  # the newer broker reading
    text = _run(_SCRAPE, tmp_path)
    series = 'ingest_http_requests_total{method="GET",route="/r",status="200"}'
    assert _value(text, series) == 5
    assert _value(text, 'ingest_http_request_duration_seconds_count{route="/r"}') == 5
    # Each edge's own backlog adds up; the broker's depth, read by both, is the newest reading.
    assert _value(text, "ingest_publish_backlog_requests") == 5
    assert _value(text, "ingest_queue_depth_messages") == 10  # not the sum, nor the max


def test_an_exited_process_loses_its_live_gauges_and_keeps_its_counts(tmp_path):
    for name in ("gauge_livesum_41.db", "gauge_livemostrecent_41.db", "counter_41.db"):
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "gauge_livesum_42.db").write_bytes(b"")
    forget_process(41, str(tmp_path))
    left = sorted(path.name for path in tmp_path.iterdir())
    assert left == ["counter_41.db", "gauge_livesum_42.db"]
