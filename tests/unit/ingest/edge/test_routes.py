"""The route table is the one source of the edge's routes and of the OpenAPI document's
operations; the document's schemas, enums, bounds and error answers come from the code.

Pure: no Postgres, no RabbitMQ.
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from ingest.edge import openapi, openapi_page
from ingest.edge.filters import DEFAULT_LIMIT, MAX_LIMIT, InvalidFilter
from ingest.edge.middleware import error_middleware, status_of
from ingest.edge.openapi_terms import ROUTE_TABLE, Answer, Operation, Route
from ingest.edge.routes import ROUTES, add_routes
from ingest.errors import (
    BodyTimeout,
    BodyTooLarge,
    Conflict,
    DefinitionError,
    Forbidden,
    IngestError,
    InvalidHeader,
    InvalidSignature,
    MalformedBody,
    MappingFailed,
    NotFound,
    PreconditionFailed,
    RateLimited,
    Unauthorized,
    Unavailable,
    UnsupportedContentEncoding,
    UnsupportedMediaType,
)
from ingest.fields import FieldType
from ingest.results import (
    DEAD_LETTERED_BODY,
    IDEMPOTENCY_KEY_REUSED_BODY,
    UNSTORABLE_VALUE_BODY,
    Outcome,
    RequestStatus,
)
from ingest.workflows import DefinitionJson, WorkflowDefinition, WorkflowSummary

BASE = "http://127.0.0.1:8080"


def _document() -> dict[str, Any]:
    return dict(openapi.spec(BASE, ROUTES))


def _registered(app: web.Application) -> dict[tuple[str, str], Any]:
    """The app's routes by (method, path pattern), with their handlers."""
    found = {}
    for route in app.router.routes():
        assert route.resource is not None
        info = route.resource.get_info()
        found[(route.method, info.get("formatter") or info["path"])] = route.handler
    return found


# --------------------------------------------------------------------------------- the route table


def test_the_app_serves_exactly_the_route_table_and_the_document_describes_it() -> None:
    app = web.Application()
    add_routes(app)
    table = app[ROUTE_TABLE]
    assert table is ROUTES
    registered = _registered(app)
    expected = {(route.method, route.path): route.handler for route in table}
    # Every GET answers HEAD too (aiohttp's twin of the same handler), and nothing else is served.
    expected |= {
        ("HEAD", path): handler for (method, path), handler in expected.items() if method == "GET"
    }
    assert registered == expected

    document = openapi.spec(BASE, table)
    operations = {
        (method.upper(), path): op
        for path, item in document["paths"].items()
        for method, op in item.items()
        if method in openapi_page.METHODS
    }
    assert set(operations) == {(route.method, route.path) for route in table}
    for route in table:
        assert operations[(route.method, route.path)]["operationId"] == route.operation.id


def _route(path: str, *answers: Answer, parameters: tuple[Any, ...] = ()) -> Route:
    async def handler(request: web.Request) -> web.Response:
        return web.Response()

    answers = answers or (Answer(200, "Fine."),)
    return Route(
        "GET", path, handler, Operation("op", "meta", "An op", "It is.", answers, parameters)
    )


def test_a_route_must_describe_each_parameter_of_its_path() -> None:
    with pytest.raises(ValueError, match="takes"):
        openapi.spec(BASE, [_route("/things/{thing_id}")])


def test_a_route_cannot_give_two_answers_for_one_status() -> None:
    twice = _route("/things", Answer(200, "One."), Answer(200, "Two."))
    with pytest.raises(ValueError, match="two answers for 200"):
        openapi.spec(BASE, [twice])


def test_a_path_and_method_cannot_be_routed_twice() -> None:
    with pytest.raises(ValueError, match="routed twice"):
        openapi.spec(BASE, [_route("/things"), _route("/things")])


# ---------------------------------------------------------------------------- errors as answered


#: One error of each kind the middleware answers.
_ERRORS = [
    MalformedBody("not JSON"),
    BodyTooLarge(10),
    UnsupportedMediaType("not JSON"),
    UnsupportedContentEncoding(),
    NotFound("no such thing"),
    Forbidden("closed"),
    InvalidHeader("bad header"),
    BodyTimeout("too slow"),
    InvalidFilter("no such field"),
    DefinitionError(["a problem"]),
    Unavailable("down"),
    RateLimited(3),
    Unauthorized("who are you"),
    InvalidSignature("no secret matches"),
    MappingFailed("map['Title']", "length(a)", "length() takes string, not number"),
    Conflict("cannot in this state"),
    PreconditionFailed(2),
]


@pytest.mark.parametrize("error", _ERRORS, ids=lambda error: type(error).__name__)
async def test_an_error_is_documented_with_the_status_and_code_the_middleware_answers(
    error: IngestError,
) -> None:
    async def handler(request: web.Request) -> web.Response:
        raise error

    answer = await error_middleware(make_mocked_request("GET", "/api/v1/admin/workflows"), handler)
    assert isinstance(answer, web.Response)
    assert answer.body is not None
    status, code = status_of(type(error))
    assert (answer.status, orjson.loads(answer.body)["error"]) == (status, code)


def test_every_documented_error_code_is_one_the_service_answers() -> None:
    answered = {status_of(type(error)) for error in _ERRORS}
    stored = {
        orjson.loads(body)["error"]
        for body in (DEAD_LETTERED_BODY, IDEMPOTENCY_KEY_REUSED_BODY, UNSTORABLE_VALUE_BODY)
    }
    for route in ROUTES:
        for answer in route.operation.answers:
            for code in answer.codes:
                assert (answer.status, code) in answered or code in stored, (route.path, code)


# -------------------------------------------------------------------------- schemas from the code


def test_enums_and_bounds_come_from_the_code() -> None:
    document = _document()
    schemas = document["components"]["schemas"]
    assert schemas["FieldType"]["enum"] == [t.value for t in FieldType]
    assert schemas["Outcome"]["enum"] == [o.value for o in Outcome]
    assert schemas["RequestStatus"]["enum"] == [s.value for s in RequestStatus]
    assert schemas["StatusDocument"]["properties"]["outcome"] == {
        "$ref": "#/components/schemas/Outcome"
    }
    pydantic = WorkflowDefinition.model_json_schema(ref_template="#/components/schemas/{model}")
    for name, schema in pydantic["properties"].items():
        described = schemas["WorkflowDefinition"]["properties"][name]
        assert described == _without(schema, "title"), name
    limit = document["components"]["parameters"]["Limit"]["schema"]
    assert (limit["maximum"], limit["default"]) == (MAX_LIMIT, DEFAULT_LIMIT)


def _without(schema: dict[str, Any], key: str) -> dict[str, Any]:
    return {k: v for k, v in schema.items() if k != key}


def test_a_workflow_summary_shows_every_field_of_its_definition() -> None:
    """`Workflow.summary` casts a definition's dump to DefinitionJson: their keys must agree."""
    assert DefinitionJson.__required_keys__ == set(WorkflowDefinition.model_fields)
    assert WorkflowSummary.__required_keys__ == {
        *WorkflowDefinition.model_fields,
        "id",
        "version",
        "import_url",
    }
