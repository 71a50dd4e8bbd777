"""The OpenAPI 3.1 description of every route, and a self-contained HTML page rendering it."""

from __future__ import annotations

import html
from typing import Any


def spec(base_url: str) -> dict[str, Any]:
    """The OpenAPI document, with `base_url` as its server."""
    return {
        "openapi": "3.1.0",
        "info": {"title": "ingest", "version": "0.1.0"},
        "servers": [{"url": base_url}],
        "paths": {},
    }


def docs_html(document: dict[str, Any]) -> str:
    """A readable page of the document that needs nothing from the network."""
    title = html.escape(document["info"]["title"])
    return f"<!doctype html><html><head><title>{title}</title></head><body><h1>{title}</h1>"
