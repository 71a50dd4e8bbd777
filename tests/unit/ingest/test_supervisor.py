"""`ingest run`'s children: which get the shared metrics directory."""

from __future__ import annotations

from ingest.metrics import MULTIPROCESS_DIR
from ingest.settings import Settings
from ingest.supervisor import children


def test_edges_share_the_run_s_metrics_directory_and_workers_do_not():
    specs = children(Settings(edges=2, workers=2, worker_metrics_port=9100), "/run/metrics")
    edges = [spec for spec in specs if spec.name.startswith("edge-")]
    workers = [spec for spec in specs if spec.name.startswith("worker-")]
    assert len(edges) == 2
    assert len(workers) == 2
    for edge in edges:
        assert dict(edge.env)[MULTIPROCESS_DIR] == "/run/metrics"
    for worker in workers:
        assert MULTIPROCESS_DIR not in dict(worker.env)
    assert [dict(w.env)["INGEST_WORKER_METRICS_PORT"] for w in workers] == ["9100", "9101"]


def test_a_single_edge_keeps_its_own_registry():
    specs = children(Settings(edges=1, workers=1), None)
    assert all(MULTIPROCESS_DIR not in dict(spec.env) for spec in specs)
