"""Regressions found by a hostile black-box probe: each case once answered 500, failed another
client's request, or answered something Flowdash's API would not."""

from __future__ import annotations

import subprocess
import uuid
from datetime import UTC, datetime
from decimal import Decimal

import orjson
import pytest
from pydantic_core import PydanticCustomError

from ingest.edge.preferences import parse_prefer
from ingest.edge.request_ids import RequestIds
from ingest.edge.status import status_document
from ingest.errors import DefinitionError
from ingest.results import Outcome, Result
from ingest.values import canonical_number, moment_text, to_datetime
from ingest.workflows import WorkflowDefinition
from tests.conftest import SEED_REQUEST, run_cli

# ---------------------------------------------------------------------------------- pure cases


@pytest.mark.parametrize(
    "value",
    [
        "0001-01-01T00:00:00Z",
        "0001-01-01T01:00:00+01:00",
        "9999-12-31T23:59:59.999999Z",
    ],
)
def test_datetimes_the_driver_would_store_as_infinity_are_invalid(value):
    with pytest.raises(PydanticCustomError):
        to_datetime(value)


def test_the_first_and_last_storable_moments_are_valid():
    assert to_datetime("0001-01-01T00:00:01Z") == datetime(1, 1, 1, 0, 0, 1, tzinfo=UTC)
    assert to_datetime("9999-12-31T23:59:58Z").year == 9999


def test_a_naive_moment_is_taken_as_utc():
    assert moment_text(datetime.min) == "0001-01-01T00:00:00Z"


@pytest.mark.parametrize("zero", ["0", "-0", "0.0", "-0.0", "0E+5", "-0E-3"])
def test_every_zero_is_one_unique_id(zero):
    assert canonical_number(Decimal(zero)) == "0"


@pytest.mark.parametrize("value", ["²", "⁹", "١", "1.5", "-1", ""])
def test_a_wait_preference_that_is_not_ascii_digits_is_ignored(value):
    assert parse_prefer([f"wait={value}"]).wait is None


def test_a_status_id_has_one_spelling():
    ids = RequestIds(b"k" * 32)
    request_id = uuid.uuid4()
    public = ids.public(request_id, 7)
    assert ids.parse(public, 7) == request_id
    for alias in (public + "==", public + "=", public.replace("-", "+").replace("_", "/")):
        if alias != public:
            assert ids.parse(alias, 7) is None, alias


KEY = {"name": "K", "type": "text"}


def _definition(**changes):
    base = {"name": "W", "fields": [{"name": "K", "type": "text"}], "unique_id": "K"}
    return {**base, **changes}


@pytest.mark.parametrize(
    ("changes", "problem"),
    [
        (
            {"fields": [{"name": "K", "type": "text"}, {"name": "cursor", "type": "text"}]},
            "reserved",
        ),
        (
            {"fields": [{"name": "K", "type": "text"}, {"name": "limit", "type": "text"}]},
            "reserved",
        ),
        ({"fields": [{"name": "K", "type": "text", "id": True}]}, "integer"),
        ({"fields": [{"name": "K", "type": "text", "id": "3"}]}, "integer"),
        ({"members": ["a@example.com", "A@example.com"]}, "more than once"),
        ({"stages": ["\ud800"]}, "surrogate"),
    ],
)
def test_definitions_the_probe_slipped_through_are_refused(changes, problem):
    with pytest.raises(DefinitionError) as refused:
        WorkflowDefinition.parse(_definition(**changes))
    assert problem in str(refused.value)


def test_a_result_too_large_to_keep_is_no_task_in_the_status_document():
    note = {"error": "result_too_large", "message": "…", "Task URL": "http://x/workflows/a/tasks/b"}
    result = Result(uuid.uuid4(), 1, 201, Outcome.CREATED, orjson.dumps(note).decode())
    document = status_document("id", result)
    assert "task" not in document
    assert document["error"] == "result_too_large"
    assert document["Task URL"] == note["Task URL"]


# ------------------------------------------------------------------------------- service cases


async def test_a_task_url_answers_alike_whichever_of_its_ids_is_wrong(client, make_workflow):
    workflow, _ = await make_workflow()
    answers = []
    for path in (f"/workflows/{workflow.public_id}/tasks/%00", "/workflows/zzzzzzzz/tasks/%00"):
        response = await client.get(path)
        answers.append((response.status, await response.json()))
    assert (
        answers[0] == answers[1] == (404, {"error": "not_found", "message": "no task has this URL"})
    )


async def test_two_different_idempotency_keys_are_400(client, make_workflow):
    _, token = await make_workflow()
    response = await client.post(
        f"/api/v1/workflows/{token}/tasks",
        json=SEED_REQUEST,
        headers=[("Idempotency-Key", "a"), ("Idempotency-Key", "b")],
    )
    assert response.status == 400
    assert (await response.json())["error"] == "invalid_header"


async def test_a_datetime_at_the_edge_of_time_is_422_and_harms_no_later_update(
    client, worker, make_workflow
):
    definition = {
        "name": "Times",
        "fields": [{"name": "N", "type": "number"}, {"name": "D", "type": "datetime"}],
        "unique_id": "N",
    }
    _, token = await make_workflow(definition)
    url = f"/api/v1/workflows/{token}/tasks"
    refused = await client.post(url, json={"N": 1, "D": "0001-01-01T00:00:00Z"})
    assert (refused.status, await refused.json()) == (422, {"errors": {"D": ["is invalid"]}})
    assert (await client.post(url, json={"N": 1, "D": "2020-01-31T09:30:00Z"})).status == 201
    assert (await client.post(url, json={"N": 1, "D": None})).status == 200


async def test_zero_and_minus_zero_name_one_task(client, worker, make_workflow, pool):
    definition = {"name": "Zero", "fields": [{"name": "N", "type": "number"}], "unique_id": "N"}
    _, token = await make_workflow(definition)
    url = f"/api/v1/workflows/{token}/tasks"
    statuses = []
    for body in (b'{"N": 0}', b'{"N": -0.0}', b'{"N": "-0"}'):
        response = await client.post(url, data=body, headers={"Content-Type": "application/json"})
        statuses.append(response.status)
    assert statuses == [201, 200, 200]
    assert await pool.fetchval("SELECT count(*) FROM tasks") == 1
    assert (await client.get(f"{url}/-0")).status == 200


def test_a_definition_file_that_is_not_utf8_is_a_clear_error(settings, tmp_path):
    path = tmp_path / "bad.json"
    path.write_bytes(b'\xff\xfe{"name": "x"}')
    with pytest.raises(subprocess.CalledProcessError) as failed:
        run_cli(settings, "workflow", "create", str(path))
    assert failed.value.returncode == 2
    assert "not UTF-8" in failed.value.stderr
    assert "Traceback" not in failed.value.stderr
