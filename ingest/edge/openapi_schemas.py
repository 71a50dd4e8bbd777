"""The JSON Schemas of the document's bodies, made from the types themselves: pydantic's schema
of each `TypedDict`, type alias and model, named schemas under `components/schemas`, with the
examples `ingest.edge.openapi_examples` makes."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import TypeAdapter
from pydantic.json_schema import GenerateJsonSchema
from pydantic_core import CoreSchema

from ingest.edge import openapi_examples as examples
from ingest.edge.documents import TaskPayload
from ingest.edge.openapi_terms import Example, Sample, Schema
from ingest.workflows import ASSIGNED_TO, STAGE, Workflow, task_schema

#: What a body schema describes: a request body as read, or an answer as written.
Mode = Literal["validation", "serialization"]
_REF = "#/components/schemas/{model}"
#: The name `TaskPayload` has under `components/schemas`.
TASK_PAYLOAD = TaskPayload.__name__

#: Examples of whole schemas (others are given with the answers they belong to).
_EXAMPLES: dict[str, Example] = {
    "TaskPayload": examples.task_payload,
    "Task": examples.task,
    "WorkflowDefinition": examples.definition,
    "ValidationErrors": examples.invalid_task,
}


class _Generator(GenerateJsonSchema):
    """pydantic's JSON Schemas, without a title on every property (its name says it)."""

    def field_title_should_be_set(self, schema: CoreSchema | Any) -> bool:
        return False


@dataclass(frozen=True, slots=True)
class BodySchemas:
    """Each body type's schema by (type, mode): a `$ref` for a named type, inline otherwise; and
    the named schemas, by name."""

    of: dict[tuple[Any, Mode], Schema]
    components: dict[str, Schema]


def body_schemas(
    bodies: Iterable[tuple[Any, Mode]], sample: Sample, workflow: Workflow | None
) -> BodySchemas:
    """The schemas of `bodies`, with the examples of `sample`; for `workflow`, with its own task
    schema as `TaskPayload`."""
    adapters = [((body, mode), mode, TypeAdapter(body)) for body, mode in dict.fromkeys(bodies)]
    found, definitions = TypeAdapter.json_schemas(
        adapters, ref_template=_REF, schema_generator=_Generator
    )
    components = {
        name: _tidied(schema) for name, schema in sorted(definitions.get("$defs", {}).items())
    }
    for name, make in _EXAMPLES.items():
        if name in components:
            components[name]["example"] = make(sample)
    if workflow is not None:
        components[TASK_PAYLOAD] = _workflow_task_payload(workflow, sample)
    return BodySchemas({key: schema for (key, _), schema in found.items()}, components)


def _tidied(schema: Schema) -> Schema:
    """Without the title pydantic gives every named schema (its name says it), and with its
    docstring's lines joined."""
    tidy = {key: value for key, value in schema.items() if key != "title"}
    if isinstance(tidy.get("description"), str):
        tidy["description"] = " ".join(tidy["description"].split())
    return tidy


def _workflow_task_payload(workflow: Workflow, sample: Sample) -> Schema:
    """`TaskPayload` for one workflow: the JSON Schema of its task bodies, with an example."""
    return {
        **task_schema(workflow.definition),
        "description": (
            f"A task of the workflow {workflow.name!r} as sent: its fields by name, each as its "
            f"type accepts it, and `{STAGE}` and `{ASSIGNED_TO}`; invalid values answer 422 with "
            "every problem at once. `x-required-on-create` names the fields a new task needs."
        ),
        "example": examples.task_payload(sample),
    }
