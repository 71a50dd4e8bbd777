"""Tasks (ingest.tasks): unguessable public ids, and a stored task rendered as Flowdash shows it."""

from __future__ import annotations

import re
from decimal import Decimal

from ingest.tasks import TaskPublicIds, TaskRecord, render, task_url
from ingest.workflows import Workflow, WorkflowDefinition
from tests.conftest import SALES


def test_task_public_ids_are_unguessable_and_never_repeat():
    ids = TaskPublicIds(batch=3)
    made = [ids.next() for _ in range(1000)]
    assert len(set(made)) == 1000
    assert all(re.fullmatch(r"[A-Za-z0-9_-]{16}", public_id) for public_id in made)


def test_a_task_url_names_the_workflow_and_the_task_never_the_token():
    assert task_url("http://h:1", "wf", "task") == "http://h:1/workflows/wf/tasks/task"


def test_a_task_renders_built_ins_first_then_every_field_in_definition_order():
    workflow = Workflow(id=1, public_id="wf", version=1, definition=WorkflowDefinition.parse(SALES))
    ids = {spec.name: spec.id for spec in workflow.definition.fields}
    task = TaskRecord(
        public_id="t1",
        unique_value="42",
        stage="Done",
        assigned_to=None,
        values={
            ids["Company ID"]: "42",
            ids["Contract Value"]: Decimal("1E+4"),
            ids["International?"]: False,
        },
    )
    body = render(workflow, task, "http://h")
    assert list(body) == [
        "Stage",
        "Assigned To",
        "Task URL",
        *(spec.name for spec in workflow.definition.fields),
    ]
    assert body["Task URL"] == "http://h/workflows/wf/tasks/t1"
    assert body["Contract Value"] == "10000"
    assert body["International?"] is False
    assert body["Company Name"] is None
    assert body["Assigned To"] is None
