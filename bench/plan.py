"""What the bench runs, and where: names, paths, phase shapes."""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
RESULTS = BENCH / "results"
ADMIN_DSN = os.environ.get("BENCH_ADMIN_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")
AMQP_URL = os.environ.get("BENCH_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
DATABASE = "ingest_bench"
QUEUE = "bench.tasks"
SALES = ROOT / "examples" / "sales-pipeline.json"
WARMUP = 2.0
SYNC_CONNECTIONS = 16
#: Signed webhook deliveries (GitHub's scheme, `respond: async`): closed loop at this many.
HOOK_CONNECTIONS = 16
GITHUB_EXAMPLE = ROOT / "examples" / "sources" / "github-issues"
#: Batch imports: this many tasks a batch, this many connections (each holds a whole batch).
BATCH_ITEMS = 1000
BATCH_CONNECTIONS = 4
OVERLOAD_FACTOR = 8
#: ingest's tables that hold what requests wrote; TRUNCATE … CASCADE reaches the ones that refer to
#: them (task values, whatever the layout), so the bench works across storage changes.
INGEST_TABLES = ("tasks", "request_results", "dead_letters", "attempts")
PUBLISH_BATCH = "ingest_publish_batch_requests"
