"""The OpenAPI 3.1 document, made from the route table (`ingest.edge.routes`).

Paths and operations come from the routes `add_routes` registers, each with its own description;
schemas from the types of the bodies (`ingest.edge.openapi_schemas`); examples from running the
code (`ingest.edge.openapi_examples`). What is written here is prose: the title and the overview.
A workflow's own document is the same with its task schema and its examples.

Two answers of the middleware are left out of every operation on purpose: `405` (with `Allow`)
for a method a path does not have, and `500 internal_error`, which is a bug whenever it happens.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator, Sequence
from typing import Any

import orjson
from aiohttp import web

from ingest.edge import openapi_examples as examples
from ingest.edge.documents import OpenApiDocument
from ingest.edge.openapi_page import docs_html
from ingest.edge.openapi_schemas import TASK_PAYLOAD, BodySchemas, Mode, body_schemas
from ingest.edge.openapi_shared import REQUEST_ID_HEADER, X_REQUEST_ID
from ingest.edge.openapi_terms import (
    JSON,
    Answer,
    Header,
    Parameter,
    RequestBody,
    Route,
    Sample,
    Schema,
)
from ingest.workflows import Workflow

TITLE = "ingest"
VERSION = "0.1.0"

#: Tags, in the order the HTML page lists them.
TAGS = [
    ("tasks", "Flowdash's task import API: write and read tasks of a workflow, by its token."),
    ("requests", "Status URLs of task requests answered `202 Accepted`."),
    ("task-urls", "The `Task URL` of a task: an unguessable link that never carries the token."),
    ("hooks", "Webhook deliveries to sources: verified, filtered, mapped to tasks; status URLs."),
    ("admin", "Workflows and sources; `Authorization: Bearer $INGEST_ADMIN_TOKEN`."),
    ("health", "Liveness and readiness probes, and Prometheus metrics."),
    ("meta", "This description of the API."),
]

DESCRIPTION = """\
A self-hosted, Flowdash-compatible task ingestion service: a Flowdash client works against it by \
changing only the base URL.

Task writes (POST, PUT, DELETE) travel through a broker to workers; the edge waits up to \
`INGEST_SYNC_TIMEOUT` seconds (or `Prefer: wait=N`, whichever is shorter) for the result and \
otherwise answers `202 Accepted` with a status URL (at once with `Prefer: respond-async`).

Every error body is JSON: `{"error": "<code>", "message": "<text>"}` (`Error`), except validation \
errors (`ValidationErrors`) and invalid workflow definitions (`DefinitionProblems`).

Any path may also answer `404` (`not_found`) for an unknown path (under \
`/api/v1/workflows/` with the same body as an unknown token) and `405` \
(`method_not_allowed`, with `Allow`) for a method the path does not have. Every GET \
operation also answers HEAD. A `500` (`internal_error`) is never an expected answer."""

_SECURITY_SCHEMES = {
    "adminToken": {
        "type": "http",
        "scheme": "bearer",
        "description": "`INGEST_ADMIN_TOKEN`; the admin API is closed when unset.",
    }
}


def spec(
    base_url: str, routes: Sequence[Route], workflow: Workflow | None = None
) -> OpenApiDocument:
    """The document of `routes`, with `base_url` as its server; for `workflow`, with its task
    schema and examples made from it."""
    sample = Sample(base_url, workflow or examples.sample_workflow())
    schemas = body_schemas(_bodies(routes), sample, workflow)
    parts = _Parts(schemas, sample)
    paths = parts.paths(routes)
    return {
        "openapi": "3.1.0",
        "info": _info(workflow),
        "servers": [{"url": base_url}],
        "tags": [{"name": name, "description": text} for name, text in TAGS],
        "paths": paths,
        "components": {
            "schemas": schemas.components,
            "parameters": parts.parameters,
            "headers": parts.headers,
            "responses": parts.responses,
            "securitySchemes": _SECURITY_SCHEMES,
        },
    }


class Documents:
    """The served documents, each made once: making one takes milliseconds of the event loop (a
    pydantic schema per body type), so a client asking again and again must not pay it again.
    A workflow's own document is kept per workflow version, the most recent `most` of them."""

    def __init__(self, base_url: str, routes: Sequence[Route], most: int = 256) -> None:
        self._base_url = base_url
        self._routes = routes
        self._most = most
        self._api: bytes | None = None
        self._page: str | None = None
        self._of_workflow: OrderedDict[tuple[int, int], bytes] = OrderedDict()

    def api(self) -> bytes:
        if self._api is None:
            self._api = orjson.dumps(spec(self._base_url, self._routes))
        return self._api

    def page(self) -> str:
        if self._page is None:
            self._page = docs_html(spec(self._base_url, self._routes))
        return self._page

    def of_workflow(self, workflow: Workflow) -> bytes:
        key = (workflow.id, workflow.version)
        made = self._of_workflow.get(key)
        if made is None:
            made = orjson.dumps(spec(self._base_url, self._routes, workflow))
            self._of_workflow[key] = made
            if len(self._of_workflow) > self._most:
                self._of_workflow.popitem(last=False)
        else:
            self._of_workflow.move_to_end(key)
        return made


#: The application's `Documents` (set by `ingest.edge.app.create_app`).
DOCUMENTS: web.AppKey[Documents] = web.AppKey("openapi_documents")


def _info(workflow: Workflow | None) -> dict[str, Any]:
    if workflow is None:
        return {"title": TITLE, "version": VERSION, "description": DESCRIPTION}
    about = (
        f"This document is made for the workflow {workflow.name!r} (version "
        f"{workflow.version}): `{TASK_PAYLOAD}` is the JSON Schema of its task bodies, and the "
        "examples are its own."
    )
    return {
        "title": f"{TITLE}: {workflow.name}",
        "version": VERSION,
        "description": f"{about}\n\n{DESCRIPTION}",
    }


def _bodies(routes: Sequence[Route]) -> Iterator[tuple[Any, Mode]]:
    """Every body type of `routes`: what requests send, and what answers carry."""
    for route in routes:
        operation = route.operation
        if operation.body is not None:
            yield operation.body.body, "validation"
        for answer in operation.answers:
            if answer.body is not None:
                yield answer.body, "serialization"


def path_parameters(path: str) -> set[str]:
    """The names of the `{parameters}` of an aiohttp path (the same syntax as OpenAPI's)."""
    return {part[1:-1] for part in path.split("/") if part.startswith("{")}


class _Parts:
    """Builds the operations, collecting the parameters, headers and shared answers they name
    under `components`, each described once."""

    def __init__(self, schemas: BodySchemas, sample: Sample) -> None:
        self._schemas = schemas
        self._sample = sample
        self.parameters: dict[str, Schema] = {}
        self.headers: dict[str, Schema] = {}
        self.responses: dict[str, Schema] = {}

    def paths(self, routes: Sequence[Route]) -> dict[str, dict[str, Schema]]:
        paths: dict[str, dict[str, Schema]] = {}
        for route in routes:
            operations = paths.setdefault(route.path, {})
            method = route.method.lower()
            if method in operations:
                raise ValueError(f"{route.method} {route.path} is routed twice")
            operations[method] = self.operation(route)
        return paths

    def operation(self, route: Route) -> Schema:
        operation = route.operation
        named = {p.name for p in operation.parameters if p.where == "path"}
        if named != path_parameters(route.path):
            raise ValueError(f"{route.path} takes {path_parameters(route.path)}, not {named}")
        document: Schema = {
            "operationId": operation.id,
            "tags": [operation.tag],
            "summary": operation.summary,
            "description": operation.description,
            "parameters": [self.parameter(p) for p in (*operation.parameters, REQUEST_ID_HEADER)],
        }
        if operation.body is not None:
            document["requestBody"] = self.request_body(operation.body)
        if operation.admin:
            document["security"] = [{"adminToken": []}]
        document["responses"] = self.answers(operation.answers)
        return document

    def parameter(self, parameter: Parameter) -> Schema:
        return _component(self.parameters, "parameters", parameter.component, parameter.document())

    def header(self, header: Header) -> Schema:
        return _component(self.headers, "headers", header.component, header.document())

    def request_body(self, body: RequestBody) -> Schema:
        document: Schema = {"required": True}
        if body.description is not None:
            document["description"] = body.description
        document["content"] = {JSON: {"schema": self._schemas.of[(body.body, "validation")]}}
        return document

    def answers(self, answers: Sequence[Answer]) -> Schema:
        by_status: Schema = {}
        for answer in answers:
            status = str(answer.status)
            if status in by_status:
                raise ValueError(f"two answers for {status}: {answer.description!r}")
            by_status[status] = self.answer(answer)
        return dict(sorted(by_status.items()))

    def answer(self, answer: Answer) -> Schema:
        document: Schema = {"description": _described(answer)}
        headers = {name: self.header(header) for name, header in answer.headers.items()}
        document["headers"] = {**headers, "X-Request-Id": self.header(X_REQUEST_ID)}
        if answer.body is not None:
            document["content"] = {answer.media: self.media(answer)}
        if answer.component is None:
            return document
        return _component(self.responses, "responses", answer.component, document)

    def media(self, answer: Answer) -> Schema:
        schema = self._schemas.of[(answer.body, "serialization")]
        if answer.codes:
            schema = {"allOf": [schema], "properties": {"error": {"enum": list(answer.codes)}}}
        media: Schema = {"schema": schema}
        if answer.example is not None:
            media["example"] = answer.example(self._sample)
        return media


def _described(answer: Answer) -> str:
    if not answer.codes:
        return answer.description
    listed = ", ".join(f"`{code}`" for code in answer.codes)
    return f"{answer.description} (`error`: {listed})."


def _component(found: dict[str, Schema], kind: str, name: str, document: Schema) -> Schema:
    """A `$ref` to `document` under `components/<kind>/<name>`, which it is kept as."""
    if found.setdefault(name, document) != document:
        raise ValueError(f"two different {kind} are named {name!r}")
    return {"$ref": f"#/components/{kind}/{name}"}
