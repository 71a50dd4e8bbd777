"""Examples for the OpenAPI document, made by running the code that makes the real bodies.

A sample workflow is created as the admin API creates one; a task is converted by its fields'
converters and rendered as a worker renders it; a bad task is judged by those same converters
(what the worker's validator says of each value); a status document comes from the status URL's
own function. So no example can say what the service does not.
"""

from __future__ import annotations

import functools
import uuid
from datetime import UTC, datetime
from typing import Any

import orjson
from pydantic_core import PydanticCustomError

from ingest.edge.documents import (
    Accepted,
    DefinitionProblems,
    StatusDocument,
    Unready,
    ValidationErrors,
    accepted,
    definition_problems,
    unready,
)
from ingest.edge.openapi_terms import Sample
from ingest.edge.request_ids import RequestIds
from ingest.edge.status import status_document
from ingest.errors import DefinitionError
from ingest.fields import kind_of
from ingest.results import Outcome, Result
from ingest.tasks import TaskRecord, render
from ingest.values import Converter, choice, member
from ingest.workflows import (
    ASSIGNED_TO,
    STAGE,
    CreatedWorkflow,
    Workflow,
    WorkflowDefinition,
    WorkflowExample,
    WorkflowSummary,
    created_document,
    example,
    example_payload,
    import_url,
)

#: The sample workflow: Flowdash's sales pipeline, as a user writes it.
SALES_PIPELINE: dict[str, Any] = {
    "name": "Sales pipeline",
    "fields": [
        {"name": "Company ID", "type": "text", "required": True},
        {"name": "Company Name", "type": "text", "required": True},
        {"name": "Number of Employees", "type": "number"},
        {"name": "Contract Value", "type": "currency"},
        {"name": "Expected Close Date", "type": "date"},
        {"name": "International?", "type": "checkbox"},
    ],
    "unique_id": "Company ID",
    "stages": ["Not Started", "In Progress", "Done"],
    "members": ["user@example.com"],
}
#: A definition with two problems (an option list missing, a Unique ID naming no field).
_BAD_DEFINITION = {
    "name": "Sales pipeline",
    "fields": [{"name": "Region", "type": "singleSelect"}],
    "unique_id": "Company ID",
}
#: What the bad task gives its first field that refuses it, and its stage.
WRONG_VALUE = "2020-31-01"
UNKNOWN_STAGE = "Shipped"
#: Ids and secrets of the examples: fixed, so the document is the same on every request.
_WORKFLOW_ID = "fhMDN7Wq"
_TASK_ID = "lQlocGSDdgN5T3UF"
_TOKEN = "Zt0hN4uY3o3mUtJv1Jj6n2Qh5W9Gk0qkOQeR0a2ZHtM"
_REQUEST = uuid.UUID("6f1c2a0e-0b5e-4c1a-9d7e-3f1b2c4d5e6f")
_REQUEST_ID_KEY = b"the examples' request id key"
_COMPLETED_AT = datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=UTC)


@functools.cache
def sample_workflow() -> Workflow:
    """The sales pipeline, stored as the admin API stores a new workflow."""
    definition = WorkflowDefinition.parse(SALES_PIPELINE)
    return Workflow(id=1, public_id=_WORKFLOW_ID, version=1, definition=definition)


# ------------------------------------------------------------------------------------ task bodies


def task_payload(sample: Sample) -> dict[str, Any]:
    return example_payload(sample.workflow.definition)


def task(sample: Sample) -> dict[str, Any]:
    """The sample task as a worker stores and renders it."""
    workflow, payload = sample.workflow, task_payload(sample)
    values = {
        spec.id: _converter(workflow, spec.name)(payload[spec.name])
        for spec in workflow.definition.fields
        if spec.name in payload
    }
    record = TaskRecord(
        public_id=_TASK_ID,
        unique_value=_TASK_ID,
        stage=payload[STAGE],
        assigned_to=payload.get(ASSIGNED_TO),
        values=values,
    )
    return render(workflow, record, sample.base_url)


def bad_task(workflow: Workflow) -> dict[str, Any]:
    """A task with a wrong value for the first field that refuses WRONG_VALUE, and a stage the
    workflow does not have."""
    task: dict[str, Any] = {}
    for spec in workflow.definition.fields:
        if field_errors(workflow, {spec.name: WRONG_VALUE}):
            task[spec.name] = WRONG_VALUE
            break
    if UNKNOWN_STAGE not in workflow.definition.stages:
        task[STAGE] = UNKNOWN_STAGE
    return task


def field_errors(workflow: Workflow, task: dict[str, Any]) -> dict[str, list[str]]:
    """What the converters of `workflow`'s fields (and built-ins) say of `task`'s values, by
    field: the message each refusal carries as its type, as the worker reports it."""
    errors = {}
    for name, value in task.items():
        try:
            _converter(workflow, name)(value)
        except PydanticCustomError as refusal:
            errors[name] = [refusal.type]
    return errors


def _converter(workflow: Workflow, name: str) -> Converter:
    definition = workflow.definition
    if name == STAGE:
        return choice(definition.stages)
    if name == ASSIGNED_TO:
        return member(definition.members)
    spec = workflow.field(name)
    if spec is None:
        raise KeyError(f"{name!r} is no field of {definition.name!r}")
    return kind_of(spec.type).converter(spec, definition.members)


def invalid_task(sample: Sample) -> ValidationErrors:
    """The 422 of `bad_task`."""
    return {"errors": field_errors(sample.workflow, bad_task(sample.workflow))}


# -------------------------------------------------------------------------------------- requests


def _public_request_id(sample: Sample) -> str:
    issued_at = _COMPLETED_AT.timestamp() - 1  # a fixed time: the document never changes
    return RequestIds(_REQUEST_ID_KEY).public(_REQUEST, sample.workflow.id, issued_at)


def accepted_request(sample: Sample) -> Accepted:
    return accepted(sample.base_url, "<token>", _public_request_id(sample))


def request_status(sample: Sample) -> StatusDocument:
    """The status document of the sample task's creation."""
    result = Result(
        request_id=_REQUEST,
        workflow_id=sample.workflow.id,
        http_status=201,
        outcome=Outcome.CREATED,
        body=orjson.dumps(task(sample)).decode(),
        completed_at=_COMPLETED_AT,
    )
    return status_document(_public_request_id(sample), result)


# ------------------------------------------------------------------------------------- workflows


def definition(sample: Sample) -> dict[str, Any]:
    return SALES_PIPELINE


def invalid_definition(sample: Sample) -> DefinitionProblems:
    try:
        WorkflowDefinition.parse(_BAD_DEFINITION)
    except DefinitionError as exc:
        return definition_problems(exc.problems)
    raise AssertionError("the bad definition was accepted")


def created_workflow(sample: Sample) -> CreatedWorkflow:
    return created_document(sample.workflow, _TOKEN, sample.base_url)


def workflow_summary(sample: Sample) -> WorkflowSummary:
    return sample.workflow.summary(sample.base_url)


def workflow_summaries(sample: Sample) -> list[WorkflowSummary]:
    return [workflow_summary(sample)]


def workflow_example(sample: Sample) -> WorkflowExample:
    return example(sample.workflow.definition, import_url(sample.base_url, "<token>"))


def not_ready(sample: Sample) -> Unready:
    return unready(["broker unreachable"])
