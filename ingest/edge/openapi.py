"""The OpenAPI 3.1 description of every route, and a self-contained HTML page rendering it.

The document is a plain dict built by small functions; it describes what `ingest.views` really
answers, including the errors `error_middleware` produces. Two answers of the middleware are left
out of every operation on purpose: `405` (with `Allow`) for a method a path does not have, and
`500 internal_error`, which is a bug whenever it happens.
"""

from __future__ import annotations

import html
import re
from typing import Any

import orjson

from ingest.fields import FieldType

Schema = dict[str, Any]

JSON = "application/json"
TITLE = "ingest"
VERSION = "0.1.0"

#: Tags, in the order the HTML page lists them.
TAGS = [
    ("tasks", "Flowdash's task import API: write and read tasks of a workflow, by its token."),
    ("requests", "Status URLs of task requests answered `202 Accepted`."),
    ("task-urls", "The `Task URL` of a task: an unguessable link that never carries the token."),
    ("admin", "Workflow administration; `Authorization: Bearer $INGEST_ADMIN_TOKEN`."),
    ("health", "Liveness and readiness probes, and Prometheus metrics."),
    ("meta", "This description of the API."),
]

DESCRIPTION = """\
A self-hosted, Flowdash-compatible task ingestion service: a Flowdash client works against it by \
changing only the base URL.

Task writes (POST, PUT, DELETE) travel through a broker to workers; the edge waits up to \
`INGEST_SYNC_TIMEOUT` seconds (or `Prefer: wait=N`, whichever is shorter) for the result and \
otherwise answers `202 Accepted` with a status URL (at once with `Prefer: respond-async`).

Every error body is JSON: `{"error": "<code>", "message": "<text>"}`, except validation errors \
(`{"errors": {"<field>": ["<message>", ...]}}`) and invalid workflow definitions \
(`{"error": "invalid_definition", "problems": ["<problem>", ...]}`).

Any path may also answer `404` (`not_found`) for an unknown path (under \
`/api/v1/workflows/` with the same body as an unknown token) and `405` \
(`method_not_allowed`, with `Allow`) for a method the path does not have. Every GET \
operation also answers HEAD. A `500` (`internal_error`) is never an expected answer."""


# ------------------------------------------------------------------------------------- primitives


def ref(name: str) -> Schema:
    """A reference to a schema of `components/schemas`."""
    return {"$ref": f"#/components/schemas/{name}"}


def _component_ref(kind: str, name: str) -> Schema:
    return {"$ref": f"#/components/{kind}/{name}"}


def json_content(schema: Schema, example: Any = None) -> dict[str, Any]:
    media: dict[str, Any] = {"schema": schema}
    if example is not None:
        media["example"] = example
    return {JSON: media}


def response(
    description: str,
    schema: Schema | None = None,
    headers: dict[str, Any] | None = None,
    example: Any = None,
) -> dict[str, Any]:
    """A response object: JSON `schema` (none for an empty body) and `headers` by name."""
    answer: dict[str, Any] = {"description": description}
    if headers:
        answer["headers"] = headers
    if schema is not None:
        answer["content"] = json_content(schema, example)
    return answer


def error_response(
    description: str, codes: list[str], headers: dict[str, Any] | None = None
) -> dict[str, Any]:
    """An `Error` response whose `error` is one of `codes`."""
    listed = ", ".join(f"`{code}`" for code in codes)
    schema = {"allOf": [ref("Error")], "properties": {"error": {"enum": codes}}}
    return response(f"{description} (`error`: {listed}).", schema, headers)


def header(name: str) -> Schema:
    return _component_ref("headers", name)


def param(name: str) -> Schema:
    return _component_ref("parameters", name)


def shared(name: str) -> Schema:
    return _component_ref("responses", name)


def operation(
    operation_id: str,
    tag: str,
    summary: str,
    description: str,
    responses: dict[str, Any],
    parameters: list[Schema] | None = None,
    request_body: dict[str, Any] | None = None,
    admin: bool = False,
) -> dict[str, Any]:
    op: dict[str, Any] = {
        "operationId": operation_id,
        "tags": [tag],
        "summary": summary,
        "description": description,
    }
    op["parameters"] = [*(parameters or []), param("RequestIdHeader")]
    if request_body is not None:
        op["requestBody"] = request_body
    if admin:
        op["security"] = [{"adminToken": []}]
    op["responses"] = {status: with_request_id(r) for status, r in sorted(responses.items())}
    return op


def with_request_id(answer: dict[str, Any]) -> dict[str, Any]:
    """Every response carries `X-Request-Id` (a `$ref`'d one has it in its component)."""
    if "$ref" in answer:
        return answer
    return {
        **answer,
        "headers": {**answer.get("headers", {}), "X-Request-Id": header("XRequestId")},
    }


# ---------------------------------------------------------------------------------------- schemas


def _error_schemas() -> dict[str, Schema]:
    return {
        "Error": {
            "type": "object",
            "description": "An error: a stable machine-readable code and a human-readable message.",
            "required": ["error", "message"],
            "properties": {
                "error": {"type": "string", "description": "Stable code, e.g. `not_found`."},
                "message": {"type": "string"},
            },
        },
        "DefinitionError": {
            "type": "object",
            "description": "An invalid workflow definition, with every problem found at once.",
            "required": ["error", "problems"],
            "properties": {
                "error": {"const": "invalid_definition"},
                "problems": {"type": "array", "items": {"type": "string"}, "minItems": 1},
            },
        },
        "FieldErrors": {
            "type": "object",
            "description": "Messages by field name (`base` for the task as a whole).",
            "additionalProperties": {"type": "array", "items": {"type": "string"}, "minItems": 1},
        },
        "ValidationErrors": {
            "type": "object",
            "description": (
                "Flowdash's (Rails') validation errors: every invalid field with its messages, "
                "e.g. `is invalid`, `can't be blank`, `is not included in the list`."
            ),
            "required": ["errors"],
            "properties": {"errors": ref("FieldErrors")},
            "example": {"errors": {"Expected Close Date": ["is invalid"]}},
        },
    }


def _task_schemas() -> dict[str, Schema]:
    return {
        "TaskPayload": {
            "type": "object",
            "description": (
                "A task as sent: keys are the workflow's field names (plus the built-ins `Stage` "
                "and `Assigned To`); values are any JSON, validated by the workflow's field types. "
                "Unknown fields and invalid values answer 422 with every problem at once."
            ),
            "properties": {
                "Stage": {"description": "One of the workflow's stages."},
                "Assigned To": {"description": "A member's email address, or null."},
            },
            "additionalProperties": True,
            "example": {
                "Company ID": "42",
                "Company Name": "Acme Corp",
                "Number of Employees": 10,
                "Contract Value": 10000,
                "Expected Close Date": "2020-01-31",
                "International?": False,
                "Stage": "In Progress",
                "Assigned To": "user@example.com",
            },
        },
        "TaskValue": {
            "description": (
                "A rendered field value: numbers and currency as decimal strings, dates as "
                "YYYY-MM-DD, date-times in UTC, checkboxes as booleans, multiple selects as "
                "arrays, unset fields as null."
            ),
            "type": ["string", "boolean", "array", "null"],
            "items": {"type": "string"},
        },
        "Task": {
            "type": "object",
            "description": "A task in Flowdash's shape: the built-ins, then the workflow's fields.",
            "required": ["Stage", "Assigned To", "Task URL"],
            "properties": {
                "Stage": {"type": "string"},
                "Assigned To": {"type": ["string", "null"]},
                "Task URL": {"type": "string", "format": "uri"},
            },
            "additionalProperties": ref("TaskValue"),
            "example": {
                "Stage": "In Progress",
                "Assigned To": "user@example.com",
                "Task URL": "http://127.0.0.1:8080/workflows/fhMDN7Wq/tasks/lQlocGSDdgN5T3UF",
                "Company ID": "42",
                "Company Name": "Acme Corp",
                "Number of Employees": "10",
                "Contract Value": "10000",
                "Expected Close Date": "2020-01-31",
                "International?": False,
            },
        },
        "Accepted": {
            "type": "object",
            "description": "A request the broker holds; its result will be at `status_url`.",
            "required": ["id", "status", "status_url"],
            "properties": {
                "id": {"type": "string"},
                "status": {"const": "pending"},
                "status_url": {"type": "string", "format": "uri"},
            },
        },
        "RequestStatus": _request_status_schema(),
    }


def _request_status_schema() -> Schema:
    return {
        "type": "object",
        "description": (
            "Where a task request stands. `pending` has only `id` and `status`. A finished request "
            "adds `http_status` and `outcome` (the answer it had or would have had), "
            "`completed_at`, and: `task` when it succeeded with a body, `errors` for a 422 of "
            "validation errors, `error` and `message` for other failures."
        ),
        "required": ["id", "status"],
        "properties": {
            "id": {"type": "string"},
            "status": {"enum": ["pending", "succeeded", "failed"]},
            "http_status": {"type": "integer", "minimum": 100, "maximum": 599},
            "outcome": {
                "enum": [
                    "created",
                    "updated",
                    "unchanged",
                    "deleted",
                    "invalid",
                    "not_found",
                    "dead",
                ]
            },
            "task": ref("Task"),
            "errors": ref("FieldErrors"),
            "error": {"type": "string"},
            "message": {"type": "string"},
            "completed_at": {"type": "string", "format": "date-time"},
        },
        "dependentRequired": {"http_status": ["outcome"], "outcome": ["http_status"]},
    }


def _workflow_schemas() -> dict[str, Schema]:
    field_types = [t.value for t in FieldType]
    definition_properties: dict[str, Schema] = {
        "name": {"type": "string", "minLength": 1, "maxLength": 200},
        "fields": {"type": "array", "items": ref("Field")},
        "unique_id": {
            "type": ["string", "null"],
            "description": "Name of the field whose value identifies a task (upsert key).",
        },
        "stages": {
            "type": "array",
            "items": {"type": "string"},
            "minItems": 1,
            "description": "The first stage is a new task's default.",
        },
        "members": {
            "type": "array",
            "items": {"type": "string"},
            "description": "Email addresses of the people tasks can be assigned to.",
        },
    }
    return {
        "Field": {
            "type": "object",
            "additionalProperties": False,
            "required": ["name", "type"],
            "properties": {
                "name": {"type": "string", "minLength": 1, "maxLength": 200},
                "type": {"enum": field_types},
                "required": {"type": "boolean", "default": False},
                "options": {
                    "type": "array",
                    "items": {"type": "string"},
                    "description": "The choices of a singleSelect or multipleSelect field.",
                },
                "id": {
                    "type": "integer",
                    "description": "Stable id of the field; assigned on create when 0 or absent.",
                },
            },
        },
        "WorkflowDefinition": {
            "type": "object",
            "description": "What a workflow is made from (JSON; the CLI also reads YAML).",
            "additionalProperties": False,
            "required": ["name"],
            "properties": definition_properties,
            "example": {
                "name": "Sales pipeline",
                "fields": [
                    {"name": "Company ID", "type": "text", "required": True},
                    {"name": "Company Name", "type": "text", "required": True},
                    {"name": "Contract Value", "type": "currency"},
                ],
                "unique_id": "Company ID",
                "stages": ["Not Started", "In Progress", "Done"],
                "members": ["user@example.com"],
            },
        },
        "Workflow": {
            "type": "object",
            "description": "A stored workflow (never its token: only a hash of it is kept).",
            "required": [
                "id",
                "version",
                "name",
                "fields",
                "unique_id",
                "stages",
                "members",
                "import_url",
            ],
            "properties": {
                "id": {"type": "string", "description": "Public id (as in its Task URLs)."},
                "version": {"type": "integer", "minimum": 1},
                **definition_properties,
                "fields": {"type": "array", "items": ref("Field")},
                "import_url": {
                    "type": "string",
                    "description": "The import URL, with `<token>` standing for the token.",
                },
            },
        },
        "WorkflowExample": {
            "type": "object",
            "description": "What Flowdash's Import from API modal shows: URL, sample task, cURL.",
            "required": ["import_url", "example_payload", "example_curl", "task_schema"],
            "properties": {
                "import_url": {"type": "string"},
                "example_payload": ref("TaskPayload"),
                "example_curl": {"type": "string"},
                "task_schema": {
                    "type": "object",
                    "description": (
                        "The JSON Schema of this workflow's task bodies (each field as its type "
                        "accepts it; `x-required-on-create` names the fields a new task needs)."
                    ),
                },
            },
        },
        "CreatedWorkflow": {
            "description": (
                "A new workflow: its summary, its secret `token` (shown only this once), and the "
                "import example with the real import URL."
            ),
            "allOf": [
                ref("Workflow"),
                ref("WorkflowExample"),
                {
                    "type": "object",
                    "required": ["token"],
                    "properties": {"token": {"type": "string", "minLength": 1}},
                },
            ],
        },
    }


def _health_schemas() -> dict[str, Schema]:
    return {
        "Health": {
            "type": "object",
            "required": ["status"],
            "properties": {"status": {"const": "ok"}},
        },
        "Unready": {
            "type": "object",
            "required": ["status", "problems"],
            "properties": {
                "status": {"const": "unavailable"},
                "problems": {
                    "type": "array",
                    "items": {"type": "string"},
                    "minItems": 1,
                    "description": "E.g. `database unreachable: ...`, `broker unreachable`.",
                },
            },
        },
    }


def schemas() -> dict[str, Schema]:
    return {**_error_schemas(), **_task_schemas(), **_workflow_schemas(), **_health_schemas()}


# ------------------------------------------------------------------------ parameters and headers


def parameters() -> dict[str, Schema]:
    def path(name: str, description: str, example: str | None = None) -> Schema:
        parameter: Schema = {
            "name": name,
            "in": "path",
            "required": True,
            "description": description,
            "schema": {"type": "string", "minLength": 1},
        }
        if example is not None:
            parameter["example"] = example
        return parameter

    return {
        "Token": path(
            "token", "The workflow's secret token (every unknown token answers the same 404)."
        ),
        "TaskKey": path(
            "task_id",
            "The task's Unique ID value (numbers compare numerically), or its task id "
            "(the last segment of its Task URL) where the workflow has no Unique ID.",
            "42",
        ),
        "RequestId": path("request_id", "The id from a 202 answer's `id` or status URL."),
        "WorkflowId": path("workflow_id", "The workflow's public id (not its token)."),
        "TaskPublicId": path("task_id", "The task's unguessable id from its Task URL."),
        "Prefer": {
            "name": "Prefer",
            "in": "header",
            "required": False,
            "description": (
                "RFC 7240. `respond-async` answers 202 at once; `wait=N` waits at most N seconds "
                "(never longer than the server's budget). Other preferences are ignored."
            ),
            "schema": {"type": "string"},
            "examples": {
                "async": {"value": "respond-async"},
                "wait": {"value": "wait=2"},
            },
        },
        "RequestIdHeader": {
            "name": "X-Request-Id",
            "in": "header",
            "required": False,
            "description": (
                "Correlates the request with the access log; its first 64 characters are kept and "
                "sent back. A fresh id is made when absent."
            ),
            "schema": {"type": "string"},
        },
        "IdempotencyKey": {
            "name": "Idempotency-Key",
            "in": "header",
            "required": False,
            "description": (
                "1 to 255 printable ASCII characters, optionally in double quotes. A retry with "
                "the same key and the same request gets the first answer again; the same key "
                "with a different request is a 422 `idempotency_key_reused`."
            ),
            "schema": {
                "type": "string",
                "minLength": 1,
                "maxLength": 255,
                "pattern": "^[!#-~]([ -~]*[!-~])?$",
            },
        },
        "Limit": {
            "name": "limit",
            "in": "query",
            "required": False,
            "description": "Tasks per page (a field named `limit` filters instead).",
            "schema": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100},
            "example": 10,
        },
        "Cursor": {
            "name": "cursor",
            "in": "query",
            "required": False,
            "description": "Where the page starts: the `X-Next-Cursor` of the previous page.",
            "schema": {"type": "string"},
        },
        "Filters": {
            "name": "filters",
            "in": "query",
            "required": False,
            "style": "form",
            "explode": True,
            "description": (
                "Any number of `<field name>=<value>` filters (e.g. `?Stage=Won&Company%20ID=42`): "
                "a field of the workflow, `Stage` or `Assigned To`. All must hold; an empty value "
                "matches tasks where the field is unset; values compare as the field's type. "
                "A name that is no field, or a value the field cannot hold, is a 400."
            ),
            "schema": {"type": "object", "additionalProperties": {"type": "string"}},
            "example": {"Stage": "In Progress"},
        },
    }


def headers() -> dict[str, Schema]:
    def described(description: str, schema: Schema, required: bool = True) -> Schema:
        return {"description": description, "required": required, "schema": schema}

    return {
        "XRequestId": described(
            "The request's id (the client's `X-Request-Id`, or a fresh one), as in the access log.",
            {"type": "string"},
        ),
        "RetryAfter": described("Seconds to wait before retrying.", {"type": "string"}),
        "Location": described(
            "The status URL of the request.", {"type": "string", "format": "uri"}
        ),
        "PreferenceApplied": described(
            "`respond-async` when the request asked for it.",
            {"const": "respond-async"},
            required=False,
        ),
        "Link": described(
            'The next page: `<URL>; rel="next"` (absent on the last page).',
            {"type": "string"},
            required=False,
        ),
        "XNextCursor": described(
            "The next page's `cursor` (absent on the last page).",
            {"type": "string"},
            required=False,
        ),
        "WWWAuthenticate": described(
            'The challenge, `Bearer realm="ingest-admin"`.', {"type": "string"}, required=False
        ),
    }


# -------------------------------------------------------------------------------------- responses


def shared_responses() -> dict[str, Any]:
    retry = {"Retry-After": header("RetryAfter")}
    answers = {
        "UnknownToken": error_response(
            "No workflow has this token (every wrong token gets the same answer)", ["not_found"]
        ),
        "Unavailable": error_response(
            "The database or the broker cannot take the request now, or the edge holds as many "
            "request-body bytes as `INGEST_MAX_BODY_BYTES_IN_FLIGHT` allows; retry after "
            "`Retry-After`",
            ["unavailable"],
            retry,
        ),
        "RateLimited": error_response(
            "The workflow sends faster than `INGEST_RATE_LIMIT` allows", ["rate_limited"], retry
        ),
        "TooLarge": error_response(
            "The body is larger than `INGEST_MAX_BODY_BYTES`", ["body_too_large"]
        ),
        "UnsupportedMediaType": error_response(
            "The body is not JSON (`application/json` or `application/*+json`, UTF-8), or its "
            "`Content-Encoding` is not one the edge decodes (gzip, deflate; see "
            "`Accept-Encoding`)",
            ["unsupported_media_type", "unsupported_content_encoding"],
        ),
        "BodyTimeout": error_response(
            "The body did not arrive within `INGEST_BODY_READ_TIMEOUT` seconds (or the headers "
            "within `INGEST_HEADER_READ_TIMEOUT`, answered before any route)",
            ["request_timeout"],
        ),
        "Unauthorized": error_response(
            "The bearer token is missing or wrong",
            ["unauthorized"],
            {"WWW-Authenticate": header("WWWAuthenticate")},
        ),
        "AdminDisabled": error_response(
            "The admin API is closed: `INGEST_ADMIN_TOKEN` is unset",
            ["admin_api_disabled"],
        ),
        "DeadLettered": error_response(
            "A worker could not process this request (a failure of its own, not of the "
            "requests beside it) and dead-lettered it alone (its status URL says "
            "`outcome: dead`); a waiting client or an Idempotency-Key retry gets this answer "
            "until an operator replays it",
            ["dead_lettered"],
        ),
    }
    return {name: with_request_id(answer) for name, answer in answers.items()}


def _accepted_response() -> dict[str, Any]:
    return response(
        "The wait budget ran out (or `Prefer: respond-async`): the request is queued and its "
        "result will be at the status URL.",
        ref("Accepted"),
        {"Location": header("Location"), "Preference-Applied": header("PreferenceApplied")},
    )


def _write_errors() -> dict[str, Any]:
    """Answers every task write (POST, PUT, DELETE) can give, whatever the body."""
    return {
        "202": _accepted_response(),
        "404": shared("UnknownToken"),
        "429": shared("RateLimited"),
        "500": shared("DeadLettered"),
        "503": shared("Unavailable"),
    }


def _body_errors() -> dict[str, Any]:
    """Answers of reading a JSON object body."""
    return {
        "400": error_response(
            "The body is empty, not JSON, not a JSON object, not UTF-8, nested more than 64 "
            "levels or contains `\\u0000`; or the Idempotency-Key header is malformed",
            ["malformed_body", "invalid_header"],
        ),
        "408": shared("BodyTimeout"),
        "413": shared("TooLarge"),
        "415": shared("UnsupportedMediaType"),
    }


def _task_invalid() -> dict[str, Any]:
    return response(
        "The task is invalid (every problem at once; at most 20 unknown keys are named, the "
        "rest counted under `base`), the Idempotency-Key was already used with a different "
        "request (`error`: `idempotency_key_reused`), or a value is beyond what the database "
        "stores (`error`: `unstorable_value`).",
        {"oneOf": [ref("ValidationErrors"), ref("Error")]},
        example={"errors": {"Expected Close Date": ["is invalid"], "Stage": ["is not included"]}},
    )


def _task_body() -> dict[str, Any]:
    return {
        "required": True,
        "description": "The task's fields by name; a missing Content-Type is taken as JSON.",
        "content": json_content(ref("TaskPayload")),
    }


# ------------------------------------------------------------------------------------ operations


def _task_write_parameters() -> list[Schema]:
    return [param("Token"), param("Prefer"), param("IdempotencyKey")]


def post_task() -> dict[str, Any]:
    return operation(
        "upsertTask",
        "tasks",
        "Create or update a task",
        "Upsert by the workflow's Unique ID: a new value creates a task (201), a known one updates "
        "only the supplied fields (200). Without a Unique ID field every request creates a task.",
        {
            "201": response("The task was created.", ref("Task")),
            "200": response("The task was updated (or already had these values).", ref("Task")),
            "422": _task_invalid(),
            **_write_errors(),
            **_body_errors(),
        },
        _task_write_parameters(),
        _task_body(),
    )


def put_task() -> dict[str, Any]:
    return operation(
        "updateTask",
        "tasks",
        "Update a task",
        "Update only: the supplied fields of the task with this Unique ID; 404 when none has it.",
        {
            "200": response("The task was updated (or already had these values).", ref("Task")),
            "422": _task_invalid(),
            **_write_errors(),
            "404": error_response(
                "No workflow has this token, or no task has this Unique ID value", ["not_found"]
            ),
            **_body_errors(),
        },
        _task_write_parameters(),
        _task_body(),
    )


def list_tasks() -> dict[str, Any]:
    next_page = {"Link": header("Link"), "X-Next-Cursor": header("XNextCursor")}
    return operation(
        "listTasks",
        "tasks",
        "List tasks",
        "The workflow's tasks matching every filter, oldest first, one page at a time: the next "
        'page is in `Link` (`rel="next"`) and `X-Next-Cursor` while there is one.',
        {
            "200": response(
                "One page of tasks.", {"type": "array", "items": ref("Task")}, next_page
            ),
            "400": error_response(
                "A filter names no field, a value its field cannot hold, a bad `limit` or a "
                "cursor this service did not hand out",
                ["invalid_filter"],
            ),
            "404": shared("UnknownToken"),
            "503": shared("Unavailable"),
        },
        [param("Token"), param("Limit"), param("Cursor"), param("Filters")],
    )


def get_task() -> dict[str, Any]:
    return operation(
        "getTask",
        "tasks",
        "Get a task",
        "One task by its Unique ID value (or its task id where the workflow has none).",
        {
            "200": response("The task.", ref("Task")),
            "404": error_response("No workflow has this token, or no such task", ["not_found"]),
            "503": shared("Unavailable"),
        },
        [param("Token"), param("TaskKey")],
    )


def delete_task() -> dict[str, Any]:
    return operation(
        "deleteTask",
        "tasks",
        "Delete a task",
        "Deletes travel through the queue like every write, so they serialise with upserts.",
        {
            "204": response("The task was deleted."),
            "400": error_response("The Idempotency-Key header is malformed", ["invalid_header"]),
            "422": error_response(
                "The Idempotency-Key was already used with a different request",
                ["idempotency_key_reused"],
            ),
            **_write_errors(),
            "404": error_response("No workflow has this token, or no such task", ["not_found"]),
        },
        [param("Token"), param("TaskKey"), param("Prefer"), param("IdempotencyKey")],
    )


def request_status() -> dict[str, Any]:
    return operation(
        "getRequestStatus",
        "requests",
        "Status of a task request",
        "The status URL a 202 answer names: `pending`, or the final status code and outcome with "
        "the task or the errors, read from the database.",
        {
            "200": response(
                "Where the request stands.",
                ref("RequestStatus"),
                example={
                    "id": "DaxFzlm5SDuBJc2aldMKkVarUh2rGuXlUsw",
                    "status": "succeeded",
                    "http_status": 201,
                    "outcome": "created",
                    "task": {"Stage": "Not Started", "Assigned To": None, "Task URL": "..."},
                    "completed_at": "2024-05-01T12:00:00.123456+00:00",
                },
            ),
            "404": error_response(
                "No workflow has this token, or this id was not issued for this workflow",
                ["not_found"],
            ),
            "503": shared("Unavailable"),
        },
        [param("Token"), param("RequestId")],
    )


def task_by_url() -> dict[str, Any]:
    return operation(
        "getTaskByUrl",
        "task-urls",
        "A task by its Task URL",
        "The `Task URL` of a task: an unguessable capability link that never carries the token.",
        {
            "200": response("The task.", ref("Task")),
            "404": error_response("No task has this URL", ["not_found"]),
            "503": shared("Unavailable"),
        },
        [param("WorkflowId"), param("TaskPublicId")],
    )


def _admin_errors() -> dict[str, Any]:
    return {
        "401": shared("Unauthorized"),
        "403": shared("AdminDisabled"),
        "503": shared("Unavailable"),
    }


def create_workflow() -> dict[str, Any]:
    return operation(
        "createWorkflow",
        "admin",
        "Create a workflow",
        "Stores the definition and answers with its token (shown only this once; only a SHA-256 "
        "of it is kept), its import URL and an example request.",
        {
            "201": response("The workflow was created.", ref("CreatedWorkflow")),
            **_body_errors(),
            "400": error_response(
                "The body is empty, not JSON, not a JSON object, not UTF-8, nested more than 64 "
                "levels or contains `\\u0000`",
                ["malformed_body"],
            ),
            "422": response(
                "The definition is invalid; `problems` lists every problem.",
                ref("DefinitionError"),
            ),
            **_admin_errors(),
        },
        request_body={"required": True, "content": json_content(ref("WorkflowDefinition"))},
        admin=True,
    )


def list_workflows() -> dict[str, Any]:
    return operation(
        "listWorkflows",
        "admin",
        "List workflows",
        "Every workflow, oldest first.",
        {
            "200": response("The workflows.", {"type": "array", "items": ref("Workflow")}),
            **_admin_errors(),
        },
        admin=True,
    )


def get_workflow() -> dict[str, Any]:
    return operation(
        "getWorkflow",
        "admin",
        "Get a workflow",
        "One workflow by its public id.",
        {
            "200": response("The workflow.", ref("Workflow")),
            "404": error_response("No workflow has this id", ["not_found"]),
            **_admin_errors(),
        },
        [param("WorkflowId")],
        admin=True,
    )


def workflow_example() -> dict[str, Any]:
    return operation(
        "getWorkflowExample",
        "admin",
        "A workflow's import example",
        "The import URL (with `<token>` standing for the token), a sample task and a cURL request.",
        {
            "200": response("The example.", ref("WorkflowExample")),
            "404": error_response("No workflow has this id", ["not_found"]),
            **_admin_errors(),
        },
        [param("WorkflowId")],
        admin=True,
    )


def openapi_document() -> dict[str, Any]:
    return operation(
        "getOpenApiDocument",
        "meta",
        "This OpenAPI document",
        "The OpenAPI 3.1 description of every route, with this service's base URL as its server.",
        {"200": response("The document.", {"type": "object", "required": ["openapi", "paths"]})},
    )


def openapi_docs() -> dict[str, Any]:
    return operation(
        "getDocs",
        "meta",
        "API documentation page",
        "This document as a self-contained HTML page (nothing loaded from the network).",
        {
            "200": {
                "description": "The page.",
                "content": {"text/html": {"schema": {"type": "string"}}},
            }
        },
    )


def metrics() -> dict[str, Any]:
    return operation(
        "metrics",
        "health",
        "Prometheus metrics",
        "This edge process's metrics in the Prometheus text format (requests by route, method and "
        "status, latencies, publishing, the database pool).",
        {
            "200": {
                "description": "The metrics.",
                "content": {"text/plain": {"schema": {"type": "string"}}},
            }
        },
    )


def healthz() -> dict[str, Any]:
    return operation(
        "healthz",
        "health",
        "Liveness",
        "The process is alive and serving HTTP; checks nothing else.",
        {"200": response("Alive.", ref("Health"))},
    )


def readyz() -> dict[str, Any]:
    return operation(
        "readyz",
        "health",
        "Readiness",
        "The database answers, the broker connection and publisher are up and the reply consumer "
        "is attached.",
        {
            "200": response("Ready.", ref("Health")),
            "503": response(
                "Not ready; `problems` says why.",
                ref("Unready"),
                example={"status": "unavailable", "problems": ["broker unreachable"]},
            ),
        },
    )


def paths() -> dict[str, dict[str, Any]]:
    """Every route of `ingest.views.add_routes`, by path and method."""
    return {
        "/api/v1/workflows/{token}/tasks": {
            "post": post_task(),
            "put": put_task(),
            "get": list_tasks(),
        },
        "/api/v1/workflows/{token}/tasks/{task_id}": {"get": get_task(), "delete": delete_task()},
        "/api/v1/workflows/{token}/requests/{request_id}": {"get": request_status()},
        "/workflows/{workflow_id}/tasks/{task_id}": {"get": task_by_url()},
        "/api/v1/admin/workflows": {"post": create_workflow(), "get": list_workflows()},
        "/api/v1/admin/workflows/{workflow_id}": {"get": get_workflow()},
        "/api/v1/admin/workflows/{workflow_id}/example": {"get": workflow_example()},
        "/api/v1/openapi.json": {"get": openapi_document()},
        "/api/v1/docs": {"get": openapi_docs()},
        "/metrics": {"get": metrics()},
        "/healthz": {"get": healthz()},
        "/readyz": {"get": readyz()},
    }


def spec(base_url: str) -> dict[str, Any]:
    """The OpenAPI document, with `base_url` as its server."""
    return {
        "openapi": "3.1.0",
        "info": {"title": TITLE, "version": VERSION, "description": DESCRIPTION},
        "servers": [{"url": base_url}],
        "tags": [{"name": name, "description": text} for name, text in TAGS],
        "paths": paths(),
        "components": {
            "schemas": schemas(),
            "parameters": parameters(),
            "headers": headers(),
            "responses": shared_responses(),
            "securitySchemes": {
                "adminToken": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "`INGEST_ADMIN_TOKEN`; the admin API is closed when unset.",
                }
            },
        },
    }


# ------------------------------------------------------------------------------------------- HTML

METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")

_STYLE = """
body{font-family:system-ui,sans-serif;margin:0 auto;max-width:60rem;padding:1rem 2rem;
line-height:1.45;color:#1d1d1f}
h1{margin-bottom:.2rem}h2{border-bottom:1px solid #ccc;padding-bottom:.2rem;margin-top:2.5rem}
section.op{border:1px solid #ddd;border-radius:6px;padding:.5rem 1rem;margin:1rem 0}
.method{display:inline-block;min-width:4.5rem;text-align:center;font-weight:bold;
border-radius:4px;color:#fff;padding:.1rem .4rem;text-transform:uppercase;font-size:.85rem}
.get{background:#2b7bb9}.post{background:#3a8f3a}.put{background:#b97a2b}
.delete{background:#b93a2b}.head,.patch,.options,.trace{background:#666}
code,pre{font-family:ui-monospace,monospace;font-size:.85rem}
pre{background:#f5f5f7;padding:.5rem;overflow-x:auto}
table{border-collapse:collapse;width:100%;margin:.4rem 0}
th,td{border:1px solid #ddd;padding:.25rem .5rem;text-align:left;vertical-align:top}
th{background:#f5f5f7}.path{font-family:ui-monospace,monospace;font-weight:bold}
""".strip()


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _prose(text: object) -> str:
    """Escaped text with its `code spans` set as code."""
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", _e(text))


def _resolve(document: dict[str, Any], item: Any) -> Any:
    """Follow a local `$ref` (one hop at a time) to the object it names."""
    while isinstance(item, dict) and set(item) == {"$ref"}:
        target: Any = document
        for part in str(item["$ref"]).removeprefix("#/").split("/"):
            target = target.get(part, {}) if isinstance(target, dict) else {}
        item = target
    return item


def _anchor(method: str, path: str) -> str:
    slug = "".join(c if c.isalnum() else "-" for c in path).strip("-")
    return f"op-{method}-{slug}"


def _schema_label(schema: Any) -> str:
    """A short, escaped description of a schema: links for refs, types otherwise."""
    if not isinstance(schema, dict):
        return ""
    reference = schema.get("$ref")
    if isinstance(reference, str):
        name = reference.rsplit("/", 1)[-1]
        if reference.startswith("#/components/schemas/") and reference.count("/") == 3:
            return f'<a href="#schema-{_e(name)}"><code>{_e(name)}</code></a>'
        return f"<code>{_e(reference)}</code>"
    for combinator in ("oneOf", "anyOf", "allOf"):
        if combinator in schema:
            parts = [_schema_label(s) for s in schema[combinator]]
            label = f"{combinator}(" + ", ".join(parts) + ")"
            extra = schema.get("properties", {}).get("error", {}).get("enum")
            if extra:
                label += " with <code>error</code> in " + _e(", ".join(extra))
            return label
    if schema.get("type") == "array":
        return "array of " + _schema_label(schema.get("items", {}))
    if "const" in schema:
        return f"<code>{_e(orjson.dumps(schema['const']).decode())}</code>"
    if "enum" in schema:
        return "one of " + _e(", ".join(str(v) for v in schema["enum"]))
    kind = schema.get("type", "any")
    text = " | ".join(kind) if isinstance(kind, list) else str(kind)
    details = [
        f"{key} {schema[key]}"
        for key in ("format", "minimum", "maximum", "minLength", "maxLength", "pattern", "default")
        if key in schema
    ]
    return _e(text + (f" ({', '.join(details)})" if details else ""))


def _parameters_html(document: dict[str, Any], op: dict[str, Any]) -> str:
    items = [_resolve(document, p) for p in op.get("parameters", [])]
    if not items:
        return ""
    rows = "".join(
        f"<tr><td><code>{_e(p.get('name'))}</code></td><td>{_e(p.get('in'))}</td>"
        f"<td>{'yes' if p.get('required') else 'no'}</td>"
        f"<td>{_schema_label(p.get('schema', {}))}</td>"
        f"<td>{_prose(p.get('description', ''))}</td></tr>"
        for p in items
    )
    head = "<tr><th>name</th><th>in</th><th>required</th><th>schema</th><th>description</th></tr>"
    return f"<h4>Parameters</h4><table>{head}{rows}</table>"


def _content_html(content: dict[str, Any]) -> str:
    return "<br>".join(
        f"<code>{_e(media)}</code>: {_schema_label(body.get('schema', {}))}"
        for media, body in content.items()
    )


def _request_body_html(document: dict[str, Any], op: dict[str, Any]) -> str:
    body = _resolve(document, op.get("requestBody"))
    if not isinstance(body, dict):
        return ""
    required = "required" if body.get("required") else "optional"
    description = f"<p>{_prose(body['description'])}</p>" if "description" in body else ""
    return (
        f"<h4>Request body ({required})</h4>{description}"
        f"<p>{_content_html(body.get('content', {}))}</p>"
    )


def _responses_html(document: dict[str, Any], op: dict[str, Any]) -> str:
    rows = []
    for status, item in op.get("responses", {}).items():
        answer = _resolve(document, item)
        names = [
            f"<code>{_e(name)}</code>" + ("" if _resolve(document, h).get("required") else "?")
            for name, h in answer.get("headers", {}).items()
        ]
        rows.append(
            f"<tr><td><b>{_e(status)}</b></td><td>{_prose(answer.get('description', ''))}</td>"
            f"<td>{', '.join(names)}</td><td>{_content_html(answer.get('content', {}))}</td></tr>"
        )
    head = "<tr><th>status</th><th>description</th><th>headers</th><th>body</th></tr>"
    return f"<h4>Responses</h4><table>{head}{''.join(rows)}</table>"


def _operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method, path, op)
        for path, item in document.get("paths", {}).items()
        for method, op in item.items()
        if method in METHODS
    ]


def _operation_html(document: dict[str, Any], method: str, path: str, op: dict[str, Any]) -> str:
    security = ""
    if op.get("security"):
        schemes = ", ".join(name for requirement in op["security"] for name in requirement)
        security = f"<p>Security: <code>{_e(schemes)}</code></p>"
    return (
        f'<section class="op" id="{_e(_anchor(method, path))}">'
        f'<h3><span class="method {_e(method)}">{_e(method)}</span> '
        f'<span class="path">{_e(path)}</span></h3>'
        f"<p><b>{_e(op.get('summary', ''))}</b>"
        f" <small>(<code>{_e(op.get('operationId', ''))}</code>)</small></p>"
        f"<p>{_prose(op.get('description', ''))}</p>{security}"
        f"{_parameters_html(document, op)}{_request_body_html(document, op)}"
        f"{_responses_html(document, op)}</section>"
    )


def _toc_html(operations: list[tuple[str, str, dict[str, Any]]]) -> str:
    items = "".join(
        f'<li><a href="#{_e(_anchor(method, path))}"><span class="method {_e(method)}">'
        f"{_e(method)}</span> <code>{_e(path)}</code></a> {_e(op.get('summary', ''))}</li>"
        for method, path, op in operations
    )
    return f'<nav><h2 id="contents">Operations</h2><ul>{items}</ul></nav>'


def _schemas_html(document: dict[str, Any]) -> str:
    parts = [
        f'<h3 id="schema-{_e(name)}">{_e(name)}</h3>'
        f"<pre>{_e(orjson.dumps(schema, option=orjson.OPT_INDENT_2).decode())}</pre>"
        for name, schema in document.get("components", {}).get("schemas", {}).items()
    ]
    return '<h2 id="schemas">Schemas</h2>' + "".join(parts)


def docs_html(document: dict[str, Any]) -> str:
    """A readable page of the document that needs nothing from the network."""
    info = document.get("info", {})
    title = _e(info.get("title", "API"))
    servers = ", ".join(f"<code>{_e(s.get('url', ''))}</code>" for s in document.get("servers", []))
    intro = "".join(f"<p>{_prose(part)}</p>" for part in info.get("description", "").split("\n\n"))
    operations = _operations(document)
    by_tag: dict[str, list[tuple[str, str, dict[str, Any]]]] = {}
    for method, path, op in operations:
        by_tag.setdefault((op.get("tags") or ["other"])[0], []).append((method, path, op))
    descriptions = {t["name"]: t.get("description", "") for t in document.get("tags", [])}
    sections = "".join(
        f"<h2>{_e(tag)}</h2><p>{_prose(descriptions.get(tag, ''))}</p>"
        + "".join(_operation_html(document, method, path, op) for method, path, op in ops)
        for tag, ops in by_tag.items()
    )
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{title} API</title><style>{_STYLE}</style></head><body>"
        f"<h1>{title} API</h1><p>Version {_e(info.get('version', ''))}"
        f" · OpenAPI {_e(document.get('openapi', ''))} · server {servers}"
        f' · <a href="openapi.json">openapi.json</a></p>{intro}'
        f"{_toc_html(operations)}{sections}{_schemas_html(document)}</body></html>"
    )
