"""The document's HTML page: every operation with its details, everything escaped, no network."""

from __future__ import annotations

from ingest.edge import openapi_page
from tests.unit.ingest.edge.test_openapi import operations_of, spec

BASE = "http://127.0.0.1:8080"


def test_the_page_lists_every_operation_with_its_details() -> None:
    document = spec(BASE)
    page = openapi_page.docs_html(document)
    for (path, method), op in operations_of(document).items():
        anchor = openapi_page._anchor(method, path)
        assert f'href="#{anchor}"' in page  # the table of contents
        section = page.split(f'id="{anchor}"', 1)[1].split("</section>", 1)[0]
        assert f">{method}</span>" in section
        assert op["summary"].replace("'", "&#x27;") in section
        for status, answer in op["responses"].items():
            assert f"<b>{status}</b>" in section
            described = openapi_page._resolve(document, answer)["description"]
            assert openapi_page._prose(described) in section
        for parameter in op.get("parameters", []):
            assert f"<code>{openapi_page._resolve(document, parameter)['name']}</code>" in section
        if "requestBody" in op:
            assert "Request body (required)" in section
            assert '<a href="#schema-' in section.split("Request body", 1)[1]
    for name in document["components"]["schemas"]:
        assert f'id="schema-{name}"' in page


def test_the_page_escapes_everything_and_needs_no_network() -> None:
    document = spec('http://example.com/"><script>alert(1)</script>')
    document["paths"]["/x<y>"] = {
        "get": {
            "operationId": "<b>op</b>",
            "summary": "a & b",
            "parameters": [{"name": "<evil>", "in": "query", "schema": {"type": "string"}}],
            "responses": {"200": {"description": "<i>fine</i>"}},
        }
    }
    page = openapi_page.docs_html(document)
    for raw in ("<script>", "<b>op</b>", "<i>fine</i>", "<evil>", "/x<y>"):
        assert raw not in page
    for escaped in ("&lt;script&gt;", "&lt;b&gt;op&lt;/b&gt;", "a &amp; b", "/x&lt;y&gt;"):
        assert escaped in page
    for external in ("<script", "<link", "@import", "src=", "url("):
        assert external not in page
