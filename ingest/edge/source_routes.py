"""The routes of sources (SPEC §6), as `ingest.edge.routes` declares every route: a sender's
deliveries and their status URLs, and the admin API of sources. `ingest.edge.routes` lists them
in its table."""

from __future__ import annotations

from typing import Any

from ingest.edge import hooks, sources_admin
from ingest.edge import openapi_examples as examples
from ingest.edge.documents import (
    Accepted,
    DefinitionProblems,
    Error,
    Handshake,
    Ignored,
    StatusDocument,
    Task,
    ValidationErrors,
)
from ingest.edge.middleware import status_of
from ingest.edge.openapi_shared import (
    ADMIN_ANSWERS,
    BODY_ANSWERS,
    DEAD_LETTERED,
    LOCATION,
    NOT_AN_OBJECT,
    PREFER,
    RATE_LIMITED,
    REQUEST_ID,
    UNAVAILABLE,
    code_of,
)
from ingest.edge.openapi_terms import Answer, Operation, Parameter, RequestBody, Route, failure
from ingest.errors import DefinitionError, InvalidSignature, MalformedBody, MappingFailed, NotFound
from ingest.results import IDEMPOTENCY_KEY_REUSED_BODY
from ingest.sources import SourceDefinition, SourceSummary

HOOK = "/api/v1/hooks/{source_id}"
SOURCES = "/api/v1/admin/sources"
SOURCE = "/api/v1/admin/sources/{source_id}"

SOURCE_ID = Parameter(
    "SourceId",
    "source_id",
    "path",
    "The source's public id, the last segment of its URL (unguessable: under scheme `none` it "
    "is the only credential).",
    {"type": "string", "minLength": 1},
)
_NO_SUCH_SOURCE = failure("No source has this id", NotFound)

_DELIVERED = Answer(
    200,
    'The filter left the delivery out (`{"status": "ignored"}`), a handshake was answered, or '
    "(`respond: sync`) the task was updated; nothing is written for the first two.",
    Ignored | Handshake | Task,
)
_DELIVERY_INVALID = Answer(
    422,
    f"The filter or an expression of the map cannot be applied to this delivery "
    f"(`{status_of(MappingFailed)[1]}`, naming the field and the expression), this delivery id "
    f"came before with another body (`{code_of(IDEMPOTENCY_KEY_REUSED_BODY)}`), or (`respond: "
    "sync`) the mapped task is invalid (every problem at once, as the task API answers).",
    ValidationErrors | Error,
)
_DELIVERY_ACCEPTED = Answer(
    202,
    "The broker holds the delivery's task request (at once with `respond: async`, or when the "
    "wait ran out): its result will be at the status URL. A retry of the delivery (the same "
    "delivery id) gets the same answer.",
    Accepted,
    {"Location": LOCATION},
)

_HOOK_ROUTES = (
    Route(
        "POST",
        HOOK,
        hooks.receive,
        Operation(
            "receiveDelivery",
            "hooks",
            "Receive a webhook delivery",
            "Verifies the delivery's signature by the source's scheme before reading it, answers "
            "a handshake, applies the filter and the map, then submits the task as "
            "`POST /api/v1/workflows/{token}/tasks` does (its delivery id as the "
            "Idempotency-Key, so a sender's retry has one effect).",
            (
                _DELIVERED,
                Answer(201, "(`respond: sync`) The task was created.", Task),
                _DELIVERY_ACCEPTED,
                failure(NOT_AN_OBJECT, MalformedBody),
                failure(
                    "The signature does not verify: a header missing or malformed, a stale or "
                    "future timestamp, or no secret matching (the message says which)",
                    InvalidSignature,
                ),
                failure("No source has this id", NotFound),
                _DELIVERY_INVALID,
                RATE_LIMITED,
                DEAD_LETTERED,
                UNAVAILABLE,
                *BODY_ANSWERS,
            ),
            (SOURCE_ID, PREFER),
            RequestBody(dict[str, Any], "The sender's JSON object, exactly as it signed it."),
        ),
    ),
    Route(
        "GET",
        f"{HOOK}/requests/{{request_id}}",
        hooks.delivery_status,
        Operation(
            "getDeliveryStatus",
            "hooks",
            "Status of a delivery",
            "The status URL a delivery's 202 names: `pending`, or the final status code and "
            "outcome with the task or the errors.",
            (
                Answer(200, "Where it stands.", StatusDocument, example=examples.request_status),
                failure(
                    "No source has this id, or this id was not issued for its workflow", NotFound
                ),
                UNAVAILABLE,
            ),
            (SOURCE_ID, REQUEST_ID),
        ),
    ),
)

_ADMIN_ROUTES = (
    Route(
        "POST",
        SOURCES,
        sources_admin.create_source,
        Operation(
            "createSource",
            "admin",
            "Create a source",
            "Binds a webhook sender to a workflow. Every expression is compiled now: an invalid "
            "one, or a map key that is no field of the workflow, is refused with the others. "
            "Answers the source with its `url`, for the sender; its secrets are never shown.",
            (
                Answer(201, "The source was created.", SourceSummary),
                failure(NOT_AN_OBJECT, MalformedBody),
                *BODY_ANSWERS,
                Answer(
                    status_of(DefinitionError)[0],
                    "The definition is invalid (an expression with its position, a workflow "
                    "that does not exist, a field it does not have, …); `problems` lists every "
                    "problem.",
                    DefinitionProblems,
                ),
                *ADMIN_ANSWERS,
            ),
            body=RequestBody(SourceDefinition),
            admin=True,
        ),
    ),
    Route(
        "GET",
        SOURCES,
        sources_admin.list_sources,
        Operation(
            "listSources",
            "admin",
            "List sources",
            "Every source, oldest first (how many secrets each has, never the secrets).",
            (Answer(200, "The sources.", list[SourceSummary]), *ADMIN_ANSWERS),
            admin=True,
        ),
    ),
    Route(
        "GET",
        SOURCE,
        sources_admin.get_source,
        Operation(
            "getSource",
            "admin",
            "Get a source",
            "One source by its public id.",
            (Answer(200, "The source.", SourceSummary), _NO_SUCH_SOURCE, *ADMIN_ANSWERS),
            (SOURCE_ID,),
            admin=True,
        ),
    ),
    Route(
        "PATCH",
        SOURCE,
        sources_admin.update_source,
        Operation(
            "updateSource",
            "admin",
            "Update a source",
            "Fixes a source in place: its id and URL stay. The body holds any of the definition's "
            "keys; each replaces its value (`verify` whole, its secrets included; `null` removes a "
            "`filter` or `map`). The result is validated as a new definition is. Every edge uses "
            "it within a second; a rejected delivery can then be replayed "
            "(`POST /api/v1/admin/rejections/{rejection_id}/replay`).",
            (
                Answer(200, "The source as updated.", SourceSummary),
                failure(NOT_AN_OBJECT, MalformedBody),
                *BODY_ANSWERS,
                _NO_SUCH_SOURCE,
                Answer(
                    status_of(DefinitionError)[0],
                    "The definition would be invalid; `problems` lists every problem.",
                    DefinitionProblems,
                ),
                *ADMIN_ANSWERS,
            ),
            (SOURCE_ID,),
            RequestBody(dict[str, Any], "Any of the keys of a source definition."),
            admin=True,
        ),
    ),
    Route(
        "DELETE",
        SOURCE,
        sources_admin.delete_source,
        Operation(
            "deleteSource",
            "admin",
            "Delete a source",
            "Every edge stops taking deliveries at its URL within a second (a change notice; "
            "`INGEST_WORKFLOW_CACHE_TTL` seconds at worst); its tasks and results stay.",
            (Answer(204, "The source was deleted."), _NO_SUCH_SOURCE, *ADMIN_ANSWERS),
            (SOURCE_ID,),
            admin=True,
        ),
    ),
)

#: Every route of sources, in the order the document lists them.
SOURCE_ROUTES = (*_HOOK_ROUTES, *_ADMIN_ROUTES)
