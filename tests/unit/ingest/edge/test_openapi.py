"""The OpenAPI document: valid OpenAPI 3.1, every operation described, statuses as the handlers
answer (the service itself is checked against it in tests/test_openapi.py)."""

from __future__ import annotations

from typing import Any

import orjson
from openapi_spec_validator import validate

from ingest.edge import openapi, openapi_page
from ingest.edge.openapi_examples import sample_workflow
from ingest.edge.routes import ROUTES

BASE = "http://127.0.0.1:8080"
#: Every status a route may document (405 and unknown-path 404s come from the middleware and are
#: described once, in `info.description`).
KNOWN_STATUSES = {str(s) for s in (200, 201, 202, 204, 400, 401, 403, 404, 408, 413, 415, 422)}
KNOWN_STATUSES |= {"409", "412", "429", "500", "503"}


def operations_of(document: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {
        (path, method): op
        for path, item in document["paths"].items()
        for method, op in item.items()
        if method in openapi_page.METHODS
    }


def spec(base_url: str) -> dict[str, Any]:
    return dict(openapi.spec(base_url, ROUTES))


def test_document_is_valid_openapi_3_1() -> None:
    document = spec(BASE)
    assert document["openapi"] == "3.1.0"
    assert document["servers"] == [{"url": BASE}]
    validate(document)  # also resolves every $ref


def test_operations_are_unique_and_fully_described() -> None:
    document = spec(BASE)
    operations = operations_of(document)
    ids = [op["operationId"] for op in operations.values()]
    assert len(ids) == len(set(ids))
    for (path, method), op in operations.items():
        assert op["summary"], (method, path)
        assert op["description"], (method, path)
        assert set(op["responses"]) <= KNOWN_STATUSES, (method, path)
        assert any(status.startswith("2") for status in op["responses"]), (method, path)
        admin = path.startswith("/api/v1/admin/")
        assert ("security" in op) is admin, (method, path)
        if admin:
            assert {"401", "403"} <= set(op["responses"]), (method, path)


def test_statuses_match_the_handlers() -> None:
    """What each handler (and error_middleware for it) can answer; 405 and 500 are not expected."""
    expected = {
        ("/api/v1/workflows/{token}/tasks", "post"): "200 201 202 400 404 408 413 415 422 429 "
        "500 503",
        ("/api/v1/workflows/{token}/tasks", "put"): "200 202 400 404 408 413 415 422 429 500 503",
        ("/api/v1/workflows/{token}/tasks/batch", "post"): "200 202 400 404 408 413 415 422 429 "
        "500 503",
        ("/api/v1/workflows/{token}/tasks", "get"): "200 400 404 503",
        ("/api/v1/workflows/{token}/tasks/{task_id}", "get"): "200 404 503",
        ("/api/v1/workflows/{token}/tasks/{task_id}", "delete"): "202 204 400 404 422 429 500 503",
        ("/api/v1/workflows/{token}/requests/{request_id}", "get"): "200 404 503",
        ("/workflows/{workflow_id}/tasks/{task_id}", "get"): "200 404 503",
        ("/api/v1/admin/workflows", "post"): "201 400 401 403 408 413 415 422 503",
        ("/api/v1/admin/workflows", "get"): "200 401 403 503",
        ("/api/v1/admin/workflows/{workflow_id}", "get"): "200 401 403 404 503",
        ("/api/v1/admin/workflows/{workflow_id}/example", "get"): "200 401 403 404 503",
        ("/api/v1/admin/workflows/{workflow_id}", "patch"): "200 400 401 403 404 408 409 412 413 "
        "415 422 503",
        ("/api/v1/admin/workflows/{workflow_id}", "delete"): "204 401 403 404 503",
        ("/api/v1/admin/workflows/{workflow_id}/tokens", "post"): "201 401 403 404 503",
        ("/api/v1/admin/workflows/{workflow_id}/tokens", "get"): "200 401 403 404 503",
        ("/api/v1/admin/workflows/{workflow_id}/tokens/{prefix}", "delete"): "204 401 403 404 503",
        ("/api/v1/hooks/{source_id}", "post"): "200 201 202 400 401 404 408 413 415 422 429 "
        "500 503",
        ("/api/v1/hooks/{source_id}/requests/{request_id}", "get"): "200 404 503",
        ("/api/v1/admin/sources", "post"): "201 400 401 403 408 413 415 422 503",
        ("/api/v1/admin/sources", "get"): "200 401 403 503",
        ("/api/v1/admin/sources/{source_id}", "get"): "200 401 403 404 503",
        ("/api/v1/admin/sources/{source_id}", "delete"): "204 401 403 404 503",
        ("/api/v1/admin/sources/{source_id}", "patch"): "200 400 401 403 404 408 413 415 422 503",
        ("/api/v1/admin/rejections", "get"): "200 400 401 403 503",
        ("/api/v1/admin/rejections/{rejection_id}/replay", "post"): "200 201 202 400 401 403 404 "
        "409 422 429 500 503",
        ("/api/v1/openapi.json", "get"): "200",
        ("/api/v1/workflows/{token}/openapi.json", "get"): "200 404 503",
        ("/api/v1/docs", "get"): "200",
        ("/metrics", "get"): "200",
        ("/healthz", "get"): "200",
        ("/readyz", "get"): "200 503",
    }
    operations = operations_of(spec(BASE))
    assert {key: " ".join(op["responses"]) for key, op in operations.items()} == expected
    document = spec(BASE)
    for op in operations.values():
        for status, answer in op["responses"].items():
            answer = openapi_page._resolve(document, answer)
            assert "X-Request-Id" in answer.get("headers", {}), (op["operationId"], status)
            if status == "500":  # only the dead-letter answer, never `internal_error`
                error = answer["content"]["application/json"]["schema"]["properties"]["error"]
                assert error == {"enum": ["dead_lettered"]}


def test_each_document_is_made_once_and_a_workflows_once_per_version() -> None:
    documents = openapi.Documents(BASE, ROUTES, most=2)
    assert documents.api() is documents.api()
    assert orjson.loads(documents.api()) == orjson.loads(orjson.dumps(spec(BASE)))
    assert documents.page() is documents.page()
    first = sample_workflow()
    made = documents.of_workflow(first)
    assert documents.of_workflow(first) is made
    assert orjson.loads(made) == orjson.loads(orjson.dumps(openapi.spec(BASE, ROUTES, first)))
    changed = first.model_copy(update={"version": 2})
    assert documents.of_workflow(changed) is not made
    for workflow_id in (7, 8):  # at most two are kept: the oldest goes first
        documents.of_workflow(first.model_copy(update={"id": workflow_id}))
    assert documents.of_workflow(first) is not made
