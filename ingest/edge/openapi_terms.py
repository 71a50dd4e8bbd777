"""The terms a route is described in: what `ingest.edge.routes` declares next to each handler and
`ingest.edge.openapi` turns into the OpenAPI document.

Bodies are types (`ingest.edge.documents`, the workflow documents, pydantic models), never JSON
Schemas written out: the document asks pydantic for their schemas. An error answer names the error
classes it comes from and takes its status and codes from the middleware that answers them.
Examples are made by running the code that makes the real bodies (`ingest.edge.openapi_examples`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from aiohttp import web
from aiohttp.typedefs import Handler

from ingest.edge.documents import Error
from ingest.edge.middleware import status_of
from ingest.errors import IngestError
from ingest.workflows import Workflow

Schema = dict[str, Any]
JSON = "application/json"


@dataclass(frozen=True, slots=True)
class Sample:
    """What examples are made from: the server's base URL and a workflow."""

    base_url: str
    workflow: Workflow


#: Makes one example body from a sample, with the code that makes the real ones.
Example = Callable[[Sample], Any]


@dataclass(frozen=True, slots=True)
class Header:
    """A response header, described once under `components/headers` as `component`."""

    component: str
    description: str
    schema: Schema
    required: bool = True

    def document(self) -> Schema:
        return {"description": self.description, "required": self.required, "schema": self.schema}


@dataclass(frozen=True, slots=True)
class Parameter:
    """A parameter, described once under `components/parameters` as `component`; one in the path
    is required, any other optional. `extra` adds keywords (`example`, `style`, …)."""

    component: str
    name: str
    where: Literal["path", "query", "header"]
    description: str
    schema: Schema
    extra: Schema = field(default_factory=dict)

    def document(self) -> Schema:
        return {
            "name": self.name,
            "in": self.where,
            "required": self.where == "path",
            "description": self.description,
            "schema": self.schema,
            **self.extra,
        }


@dataclass(frozen=True, slots=True)
class Answer:
    """One response of an operation: a `body` type (None: no body) sent as `media`, headers by
    name, and an example; `codes`, when given, are the `error`s an `Error` body may carry. A
    shared answer is described once under `components/responses` as `component`."""

    status: int
    description: str
    body: Any = None
    headers: Mapping[str, Header] = field(default_factory=dict)
    media: str = JSON
    example: Example | None = None
    codes: tuple[str, ...] = ()
    component: str | None = None


@dataclass(frozen=True, slots=True)
class RequestBody:
    """A JSON request body of type `body`."""

    body: Any
    description: str | None = None


@dataclass(frozen=True, slots=True)
class Operation:
    """What one route does, as the OpenAPI document tells it."""

    id: str
    tag: str
    summary: str
    description: str
    answers: tuple[Answer, ...]
    parameters: tuple[Parameter, ...] = ()
    body: RequestBody | None = None
    #: Behind `Authorization: Bearer $INGEST_ADMIN_TOKEN`.
    admin: bool = False


@dataclass(frozen=True, slots=True)
class Route:
    """A handler, where it is served, and its description: one entry of the route table."""

    method: str
    path: str
    handler: Handler
    operation: Operation


#: The application's route table: `add_routes` registers it, the document handlers describe it.
ROUTE_TABLE: web.AppKey[tuple[Route, ...]] = web.AppKey("route_table")


def failure(
    description: str,
    *errors: type[IngestError],
    headers: Mapping[str, Header] | None = None,
) -> Answer:
    """The answer `error_middleware` gives for `errors`, which share one status: an `Error`
    whose `error` is one of their codes."""
    answers = [status_of(error) for error in errors]
    statuses = {status for status, _ in answers}
    if len(statuses) != 1:
        raise ValueError(f"{errors} are not answered with one status: {statuses}")
    codes = tuple(dict.fromkeys(code for _, code in answers))
    return Answer(statuses.pop(), description, Error, headers or {}, codes=codes)
