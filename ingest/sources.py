"""Sources (SPEC §6): a webhook sender bound to a workflow. A source verifies a delivery's
signature (`ingest.signatures`), may filter it out, and maps its JSON to a Flowdash task body with
JMESPath (`ingest.expressions`); from there a delivery is a task request like any other.

A definition is what a user writes (JSON or YAML); a `Source` is a stored definition with its ids.
Its public id is a secret of sorts: the source's URL is the only credential of scheme `none`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal, Self, cast

import orjson
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    ValidationInfo,
    model_validator,
)
from typing_extensions import TypedDict  # pydantic reads typing's only from Python 3.12

from ingest import opaque
from ingest.errors import DefinitionError, MalformedBody, MappingFailed
from ingest.expressions import Expression, compile_expression, exact_json, is_true
from ingest.fields import MAX_NAME_CHARS
from ingest.messages import inspect_values
from ingest.signatures import Verification
from ingest.values import has_lone_surrogate
from ingest.workflows import ASSIGNED_TO, MAX_FIELDS, STAGE, WorkflowDefinition

#: A map names each field of its workflow at most once, and the two built-ins.
MAX_MAPPED_FIELDS = MAX_FIELDS + 2
#: Longest workflow public id looked up (longer ones name no workflow).
MAX_PUBLIC_ID_CHARS = 200
#: The validation context key under which `parse` passes the workflow a definition names.
_WORKFLOW = "workflow"
#: Problems of one definition travel through pydantic as one message, split again by `parse`.
_SEPARATOR = "\n"


class SourceDefinition(BaseModel):
    """What a user writes to create a source."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(min_length=1, max_length=MAX_NAME_CHARS)
    workflow: str = Field(
        min_length=1,
        max_length=MAX_PUBLIC_ID_CHARS,
        description="The public id of the workflow whose tasks the deliveries become.",
    )
    verify: Verification
    filter: str | None = Field(
        default=None,
        description="A JMESPath expression over the delivery: where it is false, null or empty "
        'the delivery is answered `200 {"status": "ignored"}` and writes nothing.',
    )
    map: dict[str, str] | None = Field(
        default=None,
        min_length=1,
        max_length=MAX_MAPPED_FIELDS,
        description="Field name (or `Stage`, `Assigned To`) → a JMESPath expression over the "
        "delivery; a null result leaves the field out. Without `map`, a delivery must already be "
        "a task body.",
    )
    respond: Literal["async", "sync"] = Field(
        default="async",
        description="`async`: 202 and a status URL as soon as the broker holds the delivery; "
        "`sync`: wait for the task, as the task API does.",
    )

    _filter: Expression | None = PrivateAttr(default=None)
    _map: tuple[tuple[str, Expression], ...] = PrivateAttr(default=())

    @model_validator(mode="after")
    def _compiled(self, info: ValidationInfo) -> Self:
        """Compile every expression, once: an invalid one is refused when the source is made."""
        problems = self._compile()
        if isinstance(info.context, dict) and _WORKFLOW in info.context:
            problems.extend(_field_problems(self, info.context[_WORKFLOW]))
        problems.extend(_text_problems(self))
        if problems:
            raise ValueError(_SEPARATOR.join(problems))
        return self

    def _compile(self) -> list[str]:
        problems: list[str] = []
        if self.filter is not None:
            self._filter = _compiled("filter", self.filter, problems)
        compiled = []
        for name, text in (self.map or {}).items():
            expression = _compiled(f"map[{name!r}]", text, problems)
            if expression is not None:
                compiled.append((name, expression))
        self._map = tuple(compiled)
        return problems

    @classmethod
    def parse(cls, raw: object, workflow: WorkflowDefinition | None) -> SourceDefinition:
        """Validate a new definition against `workflow`, the workflow it names (None: there is
        none). Every problem is reported at once (DefinitionError)."""
        try:
            return cls.model_validate(raw, context={_WORKFLOW: workflow})
        except ValidationError as exc:
            raise DefinitionError([p for e in exc.errors() for p in _described(e)]) from None

    def admits(self, delivery: Any) -> bool:
        """Whether the filter lets `delivery` through (no filter: every delivery)."""
        return self._filter is None or is_true(self._filter.search(delivery, "filter"))

    def task_body(self, delivery: Any, text: str, limit: int) -> str:
        """The task body (JSON object text) `delivery` becomes: mapped, or as sent (`text`) when
        there is no map. MappingFailed when an expression cannot be applied to it, or the task
        would be larger than `limit` bytes."""
        if self.map is None:
            return text
        fields: dict[str, orjson.Fragment] = {}
        size = 2
        for name, expression in self._map:
            where = f"map[{name!r}]"
            value = expression.search(delivery, where)
            if value is None:
                continue  # not supplied: an update leaves the field as it is
            encoded = _encoded(value, where, expression)
            size += len(orjson.dumps(name)) + len(encoded) + 2
            if size > limit:
                raise MappingFailed(where, expression.text, f"the task would exceed {limit} bytes")
            fields[name] = orjson.Fragment(encoded)
        return orjson.dumps(fields).decode()


def _compiled(where: str, text: str, problems: list[str]) -> Expression | None:
    try:
        return compile_expression(text)
    except ValueError as exc:
        problems.append(f"{where}: the expression {text!r} {exc}")
        return None


def _encoded(value: Any, where: str, expression: Expression) -> bytes:
    """A mapped value as JSON, held to what a task body may hold."""
    try:
        inspect_values(value, strict_strings=True)  # NUL, lone surrogates, nesting
        return exact_json(value)
    except (MalformedBody, ValueError) as exc:
        raise MappingFailed(where, expression.text, str(exc)) from None


def _field_problems(definition: SourceDefinition, workflow: WorkflowDefinition | None) -> list[str]:
    if workflow is None:
        return [f"workflow: no workflow has the public id {definition.workflow!r}"]
    names = {spec.name for spec in workflow.fields} | {STAGE, ASSIGNED_TO}
    return [
        f"map[{name!r}]: {workflow.name!r} has no such field (map its fields, {STAGE!r} or "
        f"{ASSIGNED_TO!r})"
        for name in definition.map or {}
        if name not in names
    ]


def _text_problems(definition: SourceDefinition) -> list[str]:
    try:
        inspect_values(definition.model_dump(mode="json"), strict_strings=True)
    except MalformedBody:
        return ["texts of a source cannot contain NUL characters or lone surrogates"]
    return []


def _described(error: Any) -> list[str]:
    where = ".".join(str(part) for part in error["loc"])
    message = str(error["msg"]).removeprefix("Value error, ")
    if not where:
        return message.split(_SEPARATOR)
    return [f"{where}: {line}" for line in message.split(_SEPARATOR)]


def workflow_named(raw: object) -> str | None:
    """The workflow public id a raw definition names, when it names one that can exist."""
    name = raw.get(_WORKFLOW) if isinstance(raw, dict) else None
    if not isinstance(name, str) or not 0 < len(name) <= MAX_PUBLIC_ID_CHARS:
        return None
    return None if "\x00" in name or has_lone_surrogate(name) else name


def new_source_id() -> str:
    """A fresh public id: 256 random bits, URL-safe, like a workflow token (logs redact both)."""
    return opaque.new_id(32)


def source_url(base_url: str, public_id: str) -> str:
    """Where the sender posts its deliveries."""
    return f"{base_url}/api/v1/hooks/{public_id}"


class Source(BaseModel):
    """A stored source: a definition with its ids."""

    model_config = ConfigDict(frozen=True)

    id: int
    public_id: str
    workflow_id: int
    definition: SourceDefinition
    created_at: datetime

    def summary(self, base_url: str) -> SourceSummary:
        """The admin view of a source: everything but its secrets (how many it has)."""
        definition = self.definition
        verify = definition.verify
        shown = verify.model_dump(mode="json", exclude={"secrets"})
        return {
            "id": self.public_id,
            "url": source_url(base_url, self.public_id),
            "name": definition.name,
            "workflow": definition.workflow,
            "verify": cast(VerificationSummary, {**shown, "secret_count": len(verify.secrets)}),
            "filter": definition.filter,
            "map": definition.map,
            "respond": definition.respond,
            "created_at": self.created_at.isoformat(),
        }


# ------------------------------------------------------------- what the admin API and CLI show


class VerificationSummary(TypedDict):
    """How a source verifies its deliveries; its secrets are never shown, only how many."""

    scheme: str
    secret_count: Annotated[int, Field(ge=0)]
    tolerance: Annotated[int, Field(description="Seconds a signed timestamp stays valid.")]
    header: Annotated[str | None, Field(description="Scheme `hmac`: the signature's header.")]
    algorithm: str
    encoding: str
    prefix: str
    delivery_id_header: str | None


class SourceSummary(TypedDict):
    """A stored source as the admin API and the CLI show it (never its secrets)."""

    id: Annotated[str, Field(description="Public id: the last segment of `url`.")]
    url: Annotated[
        str,
        Field(
            description="Where the sender posts deliveries (under scheme `none`, the only "
            "credential: keep it secret)."
        ),
    ]
    name: str
    workflow: Annotated[str, Field(description="The workflow's public id.")]
    verify: VerificationSummary
    filter: str | None
    map: dict[str, str] | None
    respond: Literal["async", "sync"]
    created_at: Annotated[str, Field(json_schema_extra={"format": "date-time"})]
