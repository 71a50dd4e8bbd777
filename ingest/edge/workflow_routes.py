"""The admin routes of workflows (SPEC §3, §8), as `ingest.edge.routes` declares every route;
`ingest.edge.routes` lists them in its table."""

from __future__ import annotations

from ingest.edge import admin
from ingest.edge import openapi_examples as examples
from ingest.edge.documents import DefinitionProblems
from ingest.edge.middleware import status_of
from ingest.edge.openapi_shared import ADMIN_ANSWERS, BODY_ANSWERS, NOT_AN_OBJECT, WORKFLOW_ID
from ingest.edge.openapi_terms import (
    Answer,
    Header,
    Operation,
    Parameter,
    RequestBody,
    Route,
    failure,
)
from ingest.errors import (
    Conflict,
    DefinitionError,
    InvalidHeader,
    MalformedBody,
    NotFound,
    PreconditionFailed,
)
from ingest.revisions import WorkflowChange
from ingest.workflows import CreatedWorkflow, WorkflowDefinition, WorkflowExample, WorkflowSummary

WORKFLOWS = "/api/v1/admin/workflows"
WORKFLOW = "/api/v1/admin/workflows/{workflow_id}"

NO_SUCH_WORKFLOW = failure("No workflow has this id", NotFound)
_ETAG = Header(
    "WorkflowETag",
    'The workflow\'s version, as an entity tag (`"3"`): what `If-Match` names to change it.',
    {"type": "string", "pattern": '^"[0-9]+"$'},
)
_IF_MATCH = Parameter(
    "IfMatch",
    "If-Match",
    "header",
    'The version the change was made from, as `ETag` gave it (`"3"`; unquoted, `3`, is '
    "taken too; several, comma-separated, accept any of them; `*` any version). When the "
    "workflow is at another version by now, nothing changes and the answer is 412: two admins "
    "editing one version cannot undo each other's changes. Without it, the last change wins.",
    {"type": "string"},
    {"example": '"3"'},
)
_INVALID_DEFINITION = Answer(
    status_of(DefinitionError)[0],
    "The definition is invalid; `problems` lists every problem.",
    DefinitionProblems,
    example=examples.invalid_definition,
)

WORKFLOW_ROUTES = (
    Route(
        "POST",
        WORKFLOWS,
        admin.create_workflow,
        Operation(
            "createWorkflow",
            "admin",
            "Create a workflow",
            "Stores the definition and answers with its token (shown only this once; only a "
            "SHA-256 of it is kept), its import URL and an example request.",
            (
                Answer(
                    201,
                    "The workflow was created.",
                    CreatedWorkflow,
                    example=examples.created_workflow,
                ),
                failure(NOT_AN_OBJECT, MalformedBody),
                *BODY_ANSWERS,
                _INVALID_DEFINITION,
                *ADMIN_ANSWERS,
            ),
            body=RequestBody(WorkflowDefinition),
            admin=True,
        ),
    ),
    Route(
        "GET",
        WORKFLOWS,
        admin.list_workflows,
        Operation(
            "listWorkflows",
            "admin",
            "List workflows",
            "Every workflow, oldest first.",
            (
                Answer(
                    200,
                    "The workflows.",
                    list[WorkflowSummary],
                    example=examples.workflow_summaries,
                ),
                *ADMIN_ANSWERS,
            ),
            admin=True,
        ),
    ),
    Route(
        "GET",
        WORKFLOW,
        admin.get_workflow,
        Operation(
            "getWorkflow",
            "admin",
            "Get a workflow",
            "One workflow by its public id.",
            (
                Answer(
                    200,
                    "The workflow.",
                    WorkflowSummary,
                    {"ETag": _ETAG},
                    example=examples.workflow_summary,
                ),
                NO_SUCH_WORKFLOW,
                *ADMIN_ANSWERS,
            ),
            (WORKFLOW_ID,),
            admin=True,
        ),
    ),
    Route(
        "GET",
        f"{WORKFLOW}/example",
        admin.workflow_example,
        Operation(
            "getWorkflowExample",
            "admin",
            "A workflow's import example",
            "The import URL (with `<token>` standing for the token), a sample task and a cURL "
            "request.",
            (
                Answer(200, "The example.", WorkflowExample, example=examples.workflow_example),
                NO_SUCH_WORKFLOW,
                *ADMIN_ANSWERS,
            ),
            (WORKFLOW_ID,),
            admin=True,
        ),
    ),
    Route(
        "PATCH",
        WORKFLOW,
        admin.update_workflow,
        Operation(
            "updateWorkflow",
            "admin",
            "Change a workflow",
            "Makes the next version of the definition: each key the body holds replaces its "
            "value (`fields` is the whole new list). A field named as a current one, by "
            "`renamed_from` or by its `id` keeps its values; any other is new (a removed field's "
            "values are no longer shown, and never become a new field's). A field may change its "
            "type only where every stored value stays valid (text to long text, number to "
            "currency and back, select, e-mail, URL, phone, person, date and date-time to text). "
            "Existing tasks keep their values and are shown under the new version, which every "
            "edge and worker uses within a second. A body that changes nothing keeps the version.",
            (
                Answer(
                    200,
                    "The workflow as it now is (as `GET` shows it).",
                    WorkflowSummary,
                    {"ETag": _ETAG},
                    example=examples.workflow_summary,
                ),
                failure(
                    f"{NOT_AN_OBJECT}; or `If-Match` is malformed", MalformedBody, InvalidHeader
                ),
                *BODY_ANSWERS,
                _INVALID_DEFINITION,
                failure(
                    "The Unique ID would change (to another field, be set or removed) while the "
                    "workflow has tasks, keyed by it; the message says why",
                    Conflict,
                ),
                failure(
                    "`If-Match` names another version than the one the workflow is at: it was "
                    "changed since (the message names its version); nothing was changed",
                    PreconditionFailed,
                ),
                NO_SUCH_WORKFLOW,
                *ADMIN_ANSWERS,
            ),
            (WORKFLOW_ID, _IF_MATCH),
            RequestBody(WorkflowChange),
            admin=True,
        ),
    ),
    Route(
        "DELETE",
        WORKFLOW,
        admin.delete_workflow,
        Operation(
            "deleteWorkflow",
            "admin",
            "Delete a workflow",
            "Removes the workflow with its tasks, request results, sources and tokens. At once "
            "(one short transaction) the workflow is gone from every read: within a second "
            "every edge and worker forgets it, its tokens and sources answer 404, requests it "
            "still had in the queue end as 404 (no workflow), and this API answers 404 for it. "
            "Then its tasks are deleted in short batches (writes to other workflows wait for one "
            "batch at most), and the answer comes once all are gone (a second for up to 20,000 "
            "tasks). Should the delete be cut short, a purge finishes it.",
            (
                Answer(204, "The workflow and all it held are deleted."),
                NO_SUCH_WORKFLOW,
                *ADMIN_ANSWERS,
            ),
            (WORKFLOW_ID,),
            admin=True,
        ),
    ),
)
