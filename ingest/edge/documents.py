"""The bodies the edge answers with, as types.

The code that builds a body returns its type from here, so mypy holds body and description
together; the OpenAPI document describes each type by pydantic's JSON Schema of it
(`ingest.edge.openapi_schemas`; a docstring is a schema's description). They are `TypedDict`s, so
nothing is validated at run time: building a body costs what building a dict costs. The admin
API's workflow documents live with workflows (`ingest.workflows.WorkflowSummary`, …): the command
line shows them too.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Required

from pydantic import ConfigDict, Field, WithJsonSchema, with_config
from typing_extensions import TypeAliasType, TypedDict

from ingest.results import Outcome, RequestStatus
from ingest.workflows import ASSIGNED_TO, STAGE, TASK_URL

#: A task's field as `ingest.tasks.render` shows it.
_TASK_VALUE = {
    "description": (
        "A field's value: numbers and currency as decimal strings, dates as YYYY-MM-DD, "
        "date-times in UTC, checkboxes as booleans, multiple selects as arrays, unset fields as "
        "null."
    ),
    "type": ["string", "boolean", "array", "null"],
    "items": {"type": "string"},
}

#: A task in Flowdash's shape, as `ingest.tasks.render` makes it.
Task = TypeAliasType(
    "Task",
    Annotated[
        dict[str, Any],
        WithJsonSchema(
            {
                "type": "object",
                "description": "A task in Flowdash's shape: the built-ins, then the workflow's "
                "fields by name.",
                "required": [STAGE, ASSIGNED_TO, TASK_URL],
                "properties": {
                    STAGE: {"type": "string"},
                    ASSIGNED_TO: {"type": ["string", "null"]},
                    TASK_URL: {"type": "string", "format": "uri"},
                },
                "additionalProperties": _TASK_VALUE,
            }
        ),
    ],
)

#: A task as a client sends it. A workflow's own document replaces this schema with the workflow's
#: (`ingest.workflows.task_schema`).
TaskPayload = TypeAliasType(
    "TaskPayload",
    Annotated[
        dict[str, Any],
        WithJsonSchema(
            {
                "type": "object",
                "description": f"A task as sent: keys are the workflow's field names (plus the "
                f"built-ins `{STAGE}` and `{ASSIGNED_TO}`); values are any JSON, validated by the "
                "workflow's field types. Unknown fields and invalid values answer 422 with every "
                "problem at once. `GET /api/v1/workflows/{token}/openapi.json` describes a "
                "workflow's own fields.",
                "properties": {
                    STAGE: {"description": "One of the workflow's stages."},
                    ASSIGNED_TO: {"description": "A member's email address, or null."},
                },
                "additionalProperties": True,
            }
        ),
    ],
)

FieldErrors = TypeAliasType(
    "FieldErrors",
    Annotated[
        dict[str, Annotated[list[str], Field(min_length=1)]],
        Field(description="Messages by field name (`base` for the task as a whole)."),
    ],
)


class Error(TypedDict):
    """An error: a stable machine-readable code and a human-readable message."""

    error: Annotated[str, Field(description="Stable code, e.g. `not_found`.")]
    message: str


class ValidationErrors(TypedDict):
    """Flowdash's (Rails') validation errors: every invalid field with its messages."""

    errors: FieldErrors


#: A batch import's body (`ingest.batches`).
TaskBatchPayload = TypeAliasType(
    "TaskBatchPayload",
    Annotated[
        list[TaskPayload],
        Field(
            min_length=1,
            description="Task bodies, applied in order, at most `INGEST_BATCH_MAX_ITEMS` (1000 by "
            "default); an item that is not an object gets its own 400 result.",
        ),
    ],
)


class ItemResult(TypedDict):
    """One item of a batch import: the status and body it would have had as a request of its own
    (a body too large to keep whole is a `result_too_large` note with the task's `Task URL`)."""

    status: Annotated[int, Field(ge=100, le=599)]
    body: Task | ValidationErrors | Error


class BatchResults(TypedDict):
    """A batch import's answer: one result per item, in the items' order."""

    results: list[ItemResult]


class DefinitionProblems(TypedDict):
    """An invalid workflow definition, with every problem found at once."""

    error: Literal["invalid_definition"]
    problems: Annotated[list[str], Field(min_length=1)]


class Accepted(TypedDict):
    """A request the broker holds; its result will be at `status_url`."""

    id: str
    status: Literal[RequestStatus.PENDING]
    status_url: Annotated[str, Field(json_schema_extra={"format": "uri"})]


class Ignored(TypedDict):
    """A webhook delivery its source's filter left out: nothing was written."""

    status: Literal["ignored"]


#: The answer to a sender's handshake (GitHub's `ping`, Slack's `url_verification`): nothing was
#: written.
Handshake = TypeAliasType(
    "Handshake",
    Annotated[
        dict[str, Any],
        WithJsonSchema(
            {
                "type": "object",
                "description": "The answer a sender's handshake expects: "
                '`{"status": "pong"}` to a GitHub `ping`, `{"challenge": …}` to a Slack '
                "`url_verification`.",
            }
        ),
    ],
)


@with_config(
    ConfigDict(
        json_schema_extra={
            "dependentRequired": {"http_status": ["outcome"], "outcome": ["http_status"]}
        }
    )
)
class StatusDocument(TypedDict, total=False):
    """Where a task request stands. `pending` has only `id` and `status`. A finished request
    adds `http_status` and `outcome` (the answer it had or would have had), `completed_at`, and:
    `task` when it succeeded with a body, `errors` for a 422 of validation errors, `error` and
    `message` for other failures (and for an answer too large to keep, with the task's
    `Task URL`); `results`, one per item, for a batch import (outcome `batch`)."""

    id: Required[str]
    status: Required[RequestStatus]
    http_status: Annotated[int, Field(ge=100, le=599)]
    outcome: Outcome
    task: Task
    errors: FieldErrors
    error: str
    message: str
    results: list[ItemResult]
    completed_at: Annotated[str, Field(json_schema_extra={"format": "date-time"})]


class Health(TypedDict):
    """The process is up (or ready)."""

    status: Literal["ok"]


class Unready(TypedDict):
    """Not ready, and why."""

    status: Literal["unavailable"]
    problems: Annotated[
        list[str],
        Field(
            min_length=1,
            description="E.g. `database unreachable: ...`, `broker unreachable`.",
        ),
    ]


class OpenApiDocument(TypedDict):
    """An OpenAPI 3.1 document: this service's, or one workflow's."""

    openapi: str
    info: dict[str, Any]
    servers: list[dict[str, Any]]
    tags: list[dict[str, Any]]
    paths: dict[str, Any]
    components: dict[str, Any]


# --------------------------------------------------------------------------------------- builders


def accepted(base_url: str, token: str, public_id: str) -> Accepted:
    """The answer to a request accepted and not finished: its id and its status URL."""
    url = f"{base_url}/api/v1/workflows/{token}/requests/{public_id}"
    return {"id": public_id, "status": RequestStatus.PENDING, "status_url": url}


def definition_problems(problems: list[str]) -> DefinitionProblems:
    return {"error": "invalid_definition", "problems": problems}


HEALTHY: Health = {"status": "ok"}


def unready(problems: list[str]) -> Unready:
    return {"status": "unavailable", "problems": problems}
