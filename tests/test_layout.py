"""Import direction: `ingest` never imports `worker`; shared contracts import no aiohttp."""

from __future__ import annotations

import ast
import subprocess
import sys

from tests.conftest import ROOT

CONTRACTS = [
    "ingest.settings",
    "ingest.workflows",
    "ingest.messages",
    "ingest.results",
    "ingest.store",
    "ingest.tasks",
    "ingest.errors",
    "ingest.broker",
    "ingest.migrations",
]


def test_ingest_never_imports_worker():
    for path in (ROOT / "ingest").rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            assert not any(n == "worker" or n.startswith("worker.") for n in names), path


def test_a_worker_process_never_loads_the_web_stack():
    code = "import sys, worker.main, worker.consumer; print('aiohttp' in sys.modules)"
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True
    )
    assert done.stdout.strip() == "False"


def test_shared_contracts_import_no_aiohttp():
    code = f"import sys; import {', '.join(CONTRACTS)}; print('aiohttp' in sys.modules)"
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True
    )
    assert done.stdout.strip() == "False"
