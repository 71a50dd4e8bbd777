"""The OpenAPI document as one self-contained HTML page (`GET /api/v1/docs`): every operation by
tag with its parameters, body and answers, then every schema; nothing is loaded from the network,
and every text of the document is escaped."""

from __future__ import annotations

import html
import re
from collections.abc import Mapping
from typing import Any

import orjson

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


def _resolve(document: Mapping[str, Any], item: Any) -> Any:
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


def _parameters_html(document: Mapping[str, Any], op: dict[str, Any]) -> str:
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


def _request_body_html(document: Mapping[str, Any], op: dict[str, Any]) -> str:
    body = _resolve(document, op.get("requestBody"))
    if not isinstance(body, dict):
        return ""
    required = "required" if body.get("required") else "optional"
    description = f"<p>{_prose(body['description'])}</p>" if "description" in body else ""
    return (
        f"<h4>Request body ({required})</h4>{description}"
        f"<p>{_content_html(body.get('content', {}))}</p>"
    )


def _responses_html(document: Mapping[str, Any], op: dict[str, Any]) -> str:
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


def _operations(document: Mapping[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method, path, op)
        for path, item in document.get("paths", {}).items()
        for method, op in item.items()
        if method in METHODS
    ]


def _operation_html(document: Mapping[str, Any], method: str, path: str, op: dict[str, Any]) -> str:
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


def _schemas_html(document: Mapping[str, Any]) -> str:
    parts = [
        f'<h3 id="schema-{_e(name)}">{_e(name)}</h3>'
        f"<pre>{_e(orjson.dumps(schema, option=orjson.OPT_INDENT_2).decode())}</pre>"
        for name, schema in document.get("components", {}).get("schemas", {}).items()
    ]
    return '<h2 id="schemas">Schemas</h2>' + "".join(parts)


def docs_html(document: Mapping[str, Any]) -> str:
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
