"""The document's examples are what the service says: the 422 example is what the worker's own
validator answers for the same task (once an example said `is not included` where the service says
`is not included in the list`), and every example fits its schema.

Pure: no Postgres, no RabbitMQ.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from ingest.edge import openapi
from ingest.edge.openapi_examples import SALES_PIPELINE, bad_task, sample_workflow
from ingest.edge.routes import ROUTES
from ingest.workflows import Workflow, WorkflowDefinition
from worker.validation import TaskValidator

BASE = "http://127.0.0.1:8080"
JSON = "application/json"
EVERY_TYPE = {
    "name": "Every type",
    "fields": [
        {"name": "Title", "type": "text"},
        {"name": "Notes", "type": "longText"},
        {"name": "Due", "type": "datetime"},
        {"name": "Priority", "type": "singleSelect", "options": ["Low", "High"]},
        {"name": "Tags", "type": "multipleSelect", "options": ["a", "b"]},
        {"name": "Owner", "type": "person"},
        {"name": "Contact", "type": "email"},
        {"name": "Site", "type": "url"},
        {"name": "Phone", "type": "phone"},
    ],
    "stages": ["Open", "Closed"],
    "members": ["owner@example.com"],
}


def _workflow(definition: dict[str, Any]) -> Workflow:
    return Workflow(id=7, public_id="w", version=1, definition=WorkflowDefinition.parse(definition))


def _document(definition: dict[str, Any] | None) -> dict[str, Any]:
    """The service's document, or the one of a workflow made from `definition`."""
    workflow = None if definition is None else _workflow(definition)
    return dict(openapi.spec(BASE, ROUTES, workflow))


def _invalid_task_example(document: dict[str, Any]) -> Any:
    answer = document["paths"]["/api/v1/workflows/{token}/tasks"]["post"]["responses"]["422"]
    return answer["content"][JSON]["example"]


@pytest.mark.parametrize(
    "workflow",
    [sample_workflow(), _workflow(SALES_PIPELINE), _workflow(EVERY_TYPE)],
    ids=["sample", "sales", "every type"],
)
def test_the_422_example_is_what_the_worker_answers(workflow: Workflow) -> None:
    document = openapi.spec(BASE, ROUTES, None if workflow is sample_workflow() else workflow)
    example = _invalid_task_example(dict(document))
    answered = TaskValidator(workflow).parse(bad_task(workflow)).errors
    assert answered, "the bad task must be refused"
    assert example == {"errors": answered}


def test_the_422_example_names_a_field_and_the_stage_with_the_services_messages() -> None:
    example = _invalid_task_example(dict(openapi.spec(BASE, ROUTES)))
    assert example == {
        "errors": {
            "Number of Employees": ["is not a number"],
            "Stage": ["is not included in the list"],
        }
    }


def _examples(document: dict[str, Any]) -> Iterator[tuple[str, Any, Any]]:
    """(where, schema, example) of every example of the document."""
    for name, schema in document["components"]["schemas"].items():
        if "example" in schema:
            yield f"schema {name}", schema, schema["example"]
    for path, item in document["paths"].items():
        for method, op in item.items():
            for status, answer in op["responses"].items():
                for media in answer.get("content", {}).values():
                    if "example" in media:
                        yield f"{method} {path} {status}", media["schema"], media["example"]


@pytest.mark.parametrize(
    "definition", [None, SALES_PIPELINE, EVERY_TYPE], ids=["service", "sales", "every type"]
)
def test_every_example_fits_its_schema(definition: dict[str, Any] | None) -> None:
    document = _document(definition)
    checked = 0
    for where, schema, example in _examples(document):
        # `$ref`s resolve against the document's components, carried along in the root.
        root = {**schema, "components": document["components"]}
        errors = [e.message for e in Draft202012Validator(root).iter_errors(example)]
        assert not errors, (where, errors)
        checked += 1
    assert checked >= 12
