"""The edge's routes: every path, method and handler, with what it does, takes and answers.

`add_routes` registers this table and the OpenAPI document (`ingest.edge.openapi`) is made from
it, so a route cannot exist without its description, nor a description without its route. Shared
parameters, headers and answers are in `ingest.edge.openapi_shared`; examples are made by running
the code (`ingest.edge.openapi_examples`).
"""

from __future__ import annotations

from aiohttp import web

from ingest.edge import batch, health, status, tasks
from ingest.edge import openapi_examples as examples
from ingest.edge.documents import (
    Health,
    OpenApiDocument,
    StatusDocument,
    Task,
    Unready,
)
from ingest.edge.filters import InvalidFilter
from ingest.edge.openapi_shared import (
    BATCH_ANSWERS,
    BATCH_BODY,
    BODY_ANSWERS,
    FILTERS,
    IDEMPOTENCY_KEY,
    IDEMPOTENCY_KEY_REUSED,
    LINK,
    MALFORMED_TASK_REQUEST,
    PAGE_CURSOR,
    PAGE_SIZE,
    PREFER,
    REQUEST_ID,
    TASK_BODY,
    TASK_INVALID,
    TASK_PUBLIC_ID,
    TASK_UNIQUE_ID,
    TOKEN,
    UNAVAILABLE,
    UNKNOWN_TOKEN,
    WORKFLOW_ID,
    WRITE_ANSWERS,
    X_NEXT_CURSOR,
)
from ingest.edge.openapi_terms import (
    ROUTE_TABLE,
    Answer,
    Operation,
    Route,
    failure,
)
from ingest.edge.rejection_routes import REJECTION_ROUTES
from ingest.edge.source_routes import SOURCE_ROUTES
from ingest.edge.token_routes import TOKEN_ROUTES
from ingest.edge.workflow_routes import WORKFLOW_ROUTES
from ingest.errors import InvalidHeader, NotFound

TASKS = "/api/v1/workflows/{token}/tasks"
TASK = "/api/v1/workflows/{token}/tasks/{task_id}"
BATCH = "/api/v1/workflows/{token}/tasks/batch"

_UPDATED = Answer(200, "The task was updated (or already had these values).", Task)
_TASK_WRITE = (TOKEN, PREFER, IDEMPOTENCY_KEY)

_TASK_ROUTES = (
    Route(
        "POST",
        TASKS,
        tasks.post_task,
        Operation(
            "upsertTask",
            "tasks",
            "Create or update a task",
            "Upsert by the workflow's Unique ID: a new value creates a task (201), a known one "
            "updates only the supplied fields (200). Without a Unique ID field every request "
            "creates a task.",
            (
                Answer(201, "The task was created.", Task),
                _UPDATED,
                TASK_INVALID,
                UNKNOWN_TOKEN,
                *WRITE_ANSWERS,
                MALFORMED_TASK_REQUEST,
                *BODY_ANSWERS,
            ),
            _TASK_WRITE,
            TASK_BODY,
        ),
    ),
    Route(
        "POST",
        BATCH,
        batch.post_batch,
        Operation(
            "importTasks",
            "tasks",
            "Import a batch of tasks",
            "A JSON array of task bodies, each upserted as `POST .../tasks` upserts one, in the "
            "array's order (two items with one Unique ID: the second updates what the first "
            "wrote), in one transaction. The answer holds one result per item, in order: the "
            "status and body the item would have had alone. An Idempotency-Key covers the whole "
            "batch; `Prefer: respond-async` answers 202, and the status URL shows the `results` "
            "once the batch is done.",
            BATCH_ANSWERS,
            _TASK_WRITE,
            BATCH_BODY,
        ),
    ),
    Route(
        "PUT",
        TASKS,
        tasks.put_task,
        Operation(
            "updateTask",
            "tasks",
            "Update a task",
            "Update only: the supplied fields of the task with this Unique ID; 404 when none has "
            "it.",
            (
                _UPDATED,
                TASK_INVALID,
                failure(
                    "No workflow has this token, or no task has this Unique ID value", NotFound
                ),
                *WRITE_ANSWERS,
                MALFORMED_TASK_REQUEST,
                *BODY_ANSWERS,
            ),
            _TASK_WRITE,
            TASK_BODY,
        ),
    ),
    Route(
        "GET",
        TASKS,
        tasks.list_tasks,
        Operation(
            "listTasks",
            "tasks",
            "List tasks",
            "The workflow's tasks matching every filter, oldest first, one page at a time: the "
            'next page is in `Link` (`rel="next"`) and `X-Next-Cursor` while there is one.',
            (
                Answer(
                    200,
                    "One page of tasks.",
                    list[Task],
                    {"Link": LINK, "X-Next-Cursor": X_NEXT_CURSOR},
                ),
                failure(
                    "A filter names no field, a value its field cannot hold, a bad `limit` or a "
                    "cursor this service did not hand out",
                    InvalidFilter,
                ),
                UNKNOWN_TOKEN,
                UNAVAILABLE,
            ),
            (TOKEN, PAGE_SIZE, PAGE_CURSOR, FILTERS),
        ),
    ),
    Route(
        "GET",
        TASK,
        tasks.get_task,
        Operation(
            "getTask",
            "tasks",
            "Get a task",
            "One task by its Unique ID value (or its task id where the workflow has none).",
            (
                Answer(200, "The task.", Task),
                failure("No workflow has this token, or no such task", NotFound),
                UNAVAILABLE,
            ),
            (TOKEN, TASK_UNIQUE_ID),
        ),
    ),
    Route(
        "DELETE",
        TASK,
        tasks.delete_task,
        Operation(
            "deleteTask",
            "tasks",
            "Delete a task",
            "Deletes travel through the queue like every write, so they serialise with upserts.",
            (
                Answer(204, "The task was deleted."),
                failure("The Idempotency-Key header is malformed", InvalidHeader),
                IDEMPOTENCY_KEY_REUSED,
                failure("No workflow has this token, or no such task", NotFound),
                *WRITE_ANSWERS,
            ),
            (TOKEN, TASK_UNIQUE_ID, PREFER, IDEMPOTENCY_KEY),
        ),
    ),
)

_REQUEST_ROUTES = (
    Route(
        "GET",
        "/api/v1/workflows/{token}/requests/{request_id}",
        status.request_status,
        Operation(
            "getRequestStatus",
            "requests",
            "Status of a task request",
            "The status URL a 202 answer names: `pending`, or the final status code and outcome "
            "with the task or the errors, read from the database.",
            (
                Answer(
                    200,
                    "Where the request stands.",
                    StatusDocument,
                    example=examples.request_status,
                ),
                failure(
                    "No workflow has this token, or this id was not issued for this workflow",
                    NotFound,
                ),
                UNAVAILABLE,
            ),
            (TOKEN, REQUEST_ID),
        ),
    ),
    Route(
        "GET",
        "/workflows/{workflow_id}/tasks/{task_id}",
        tasks.task_by_url,
        Operation(
            "getTaskByUrl",
            "task-urls",
            "A task by its Task URL",
            "The `Task URL` of a task: an unguessable capability link that never carries the "
            "token.",
            (
                Answer(200, "The task.", Task),
                failure("No task has this URL", NotFound),
                UNAVAILABLE,
            ),
            (WORKFLOW_ID, TASK_PUBLIC_ID),
        ),
    ),
)

_META_ROUTES = (
    Route(
        "GET",
        "/api/v1/openapi.json",
        health.openapi_document,
        Operation(
            "getOpenApiDocument",
            "meta",
            "This OpenAPI document",
            "The OpenAPI 3.1 description of every route, with this service's base URL as its "
            "server.",
            (Answer(200, "The document.", OpenApiDocument),),
        ),
    ),
    Route(
        "GET",
        "/api/v1/workflows/{token}/openapi.json",
        health.workflow_openapi_document,
        Operation(
            "getWorkflowOpenApiDocument",
            "meta",
            "A workflow's OpenAPI document",
            "This document made for one workflow: `TaskPayload` is the JSON Schema of its task "
            "bodies (each field as its type accepts it), and the examples are its own.",
            (Answer(200, "The document.", OpenApiDocument), UNKNOWN_TOKEN, UNAVAILABLE),
            (TOKEN,),
        ),
    ),
    Route(
        "GET",
        "/api/v1/docs",
        health.openapi_docs,
        Operation(
            "getDocs",
            "meta",
            "API documentation page",
            "This document as a self-contained HTML page (nothing loaded from the network).",
            (Answer(200, "The page.", str, media="text/html"),),
        ),
    ),
)

_HEALTH_ROUTES = (
    Route(
        "GET",
        "/metrics",
        health.metrics_page,
        Operation(
            "metrics",
            "health",
            "Prometheus metrics",
            "This edge process's metrics in the Prometheus text format (requests by route, "
            "method and status, latencies, publishing, the database pool).",
            (Answer(200, "The metrics.", str, media="text/plain"),),
        ),
    ),
    Route(
        "GET",
        "/healthz",
        health.healthz,
        Operation(
            "healthz",
            "health",
            "Liveness",
            "The process is alive and serving HTTP; checks nothing else.",
            (Answer(200, "Alive.", Health),),
        ),
    ),
    Route(
        "GET",
        "/readyz",
        health.readyz,
        Operation(
            "readyz",
            "health",
            "Readiness",
            "The database answers, the broker connection and publisher are up and the reply "
            "consumer is attached.",
            (
                Answer(200, "Ready.", Health),
                Answer(503, "Not ready; `problems` says why.", Unready, example=examples.not_ready),
            ),
        ),
    ),
)

#: Every route of the edge, in the order the document lists them.
ROUTES = (
    *_TASK_ROUTES,
    *_REQUEST_ROUTES,
    *WORKFLOW_ROUTES,
    *TOKEN_ROUTES,
    *SOURCE_ROUTES,
    *REJECTION_ROUTES,
    *_META_ROUTES,
    *_HEALTH_ROUTES,
)


def add_routes(app: web.Application) -> None:
    """Register every route of ROUTES (a GET answers HEAD too), and keep the table for the
    handlers that describe it."""
    app[ROUTE_TABLE] = ROUTES
    for route in ROUTES:
        if route.method == "GET":
            app.router.add_get(route.path, route.handler)
        else:
            app.router.add_route(route.method, route.path, route.handler)
