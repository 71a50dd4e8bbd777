"""The routes of sources are true to the OpenAPI document: schemathesis sends generated requests
to the running edge (with a worker), with a real source id in the path, and checks every answer
(`test_openapi.py` runs the whole document with ids that name nothing)."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from typing import Any

import pytest
import schemathesis
from aiohttp.test_utils import TestClient
from schemathesis.engine import events, from_schema

from ingest.settings import Settings
from tests.deliveries import create_source
from tests.test_openapi import _schemathesis_config

#: What a generated delivery is mapped with: most succeed, some fail on what they are given.
_DEFINITION = {
    "name": "Fuzzed",
    "verify": {"scheme": "none"},
    "filter": "!ignore",
    "map": {
        "Company ID": "to_string(id)",
        "Company Name": "name",
        "Number of Employees": "size && length(size)",
        "Stage": "'Done'",
    },
}


def _run(base_url: str, source_id: str) -> tuple[list[str], Counter[str]]:
    config = _schemathesis_config(base_url, source_id=source_id)
    document = schemathesis.openapi.from_url(f"{base_url}/api/v1/openapi.json", config=config)
    schema = document.include(path_regex=r"^/api/v1/(hooks|admin/sources)")
    failures: list[str] = []
    seen: Counter[str] = Counter()
    for event in from_schema(schema).execute():
        if isinstance(event, events.ScenarioFinished):
            for interaction in event.recorder.interactions.values():
                status = interaction.response.status_code if interaction.response else None
                seen[f"{event.recorder.label} -> {status}"] += 1
            for checks in event.recorder.checks.values():
                for check in checks:
                    if check.failure_info is not None:
                        failure = check.failure_info.failure
                        failures.append(
                            f"{event.recorder.label} [{check.name}] {failure.title}: "
                            f"{failure.message}\n{check.failure_info.code_sample}"
                        )
        elif isinstance(event, events.NonFatalError | events.FatalError):
            failures.append(f"{event!r}")
    return failures, seen


@pytest.mark.filterwarnings("ignore::hypothesis.errors.HypothesisWarning")
async def test_schemathesis_finds_the_routes_of_sources_true_to_the_document(
    client: TestClient[Any, Any], settings: Settings, worker: Any, make_workflow: Any
) -> None:
    workflow, _ = await make_workflow()
    source = await create_source(client, {**_DEFINITION, "workflow": workflow.public_id})
    started = time.monotonic()
    failures, seen = await asyncio.to_thread(_run, settings.base_url, source["id"])
    for line, count in sorted(seen.items()):
        print(f"{count:5d}  {line}")
    print(f"schemathesis: {sum(seen.values())} requests in {time.monotonic() - started:.1f}s")
    assert not failures, "\n\n".join(dict.fromkeys(failures))
    for reached in (
        "POST /api/v1/hooks/{source_id} -> 202",
        "POST /api/v1/hooks/{source_id} -> 400",
        "GET /api/v1/admin/sources/{source_id} -> 200",
        "GET /api/v1/admin/sources -> 200",
        "POST /api/v1/admin/sources -> 422",
    ):
        assert seen[reached], reached
