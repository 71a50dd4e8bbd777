"""Workflows: the typed schema a task is validated against (SPEC §3).

A definition is what a user writes (JSON or YAML); a `Workflow` is a stored definition with its
ids and version. Tokens are random secrets handed out once; only their SHA-256 is stored.
"""

from __future__ import annotations

import functools
import hashlib
import shlex
from collections.abc import Callable, Iterable
from typing import Annotated, Any, Self, cast

import orjson
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    GetPydanticSchema,
    ValidationError,
    ValidationInfo,
    model_validator,
)
from typing_extensions import TypedDict  # pydantic reads typing's only from Python 3.12

from ingest import opaque
from ingest.errors import DefinitionError
from ingest.fields import (
    MAX_NAME_CHARS,
    OPTION_TYPES,
    UNIQUE_ID_TYPES,
    FieldSpec,
    FieldType,
    kind_of,
)
from ingest.values import has_lone_surrogate, is_email

#: Field ids are small integers (they key typed values in Postgres' integer column). A new
#: definition's ids, numbered ones included, go up to MAX_FIELD_ID.
MAX_FIELD_ID = 100_000
#: Bounds a new definition keeps. A stored definition is read back as it was stored, so a bound
#: that tightens never locks an existing workflow out.
MAX_FIELDS = 1000
MAX_OPTIONS = 1000
#: 2,000 UTF-8 bytes at most: an option always fits as a Unique ID
#: (`ingest.values.MAX_UNIQUE_VALUE_BYTES`).
MAX_OPTION_CHARS = 500
MAX_STAGES = 100
#: Stages are indexed with their workflow (`tasks_workflow_stage`): short keeps the index healthy.
MAX_STAGE_CHARS = 200
MAX_MEMBERS = 1000
#: The validation context of a definition being created (rather than read back).
_NEW = {"new": True}
STAGE = "Stage"
ASSIGNED_TO = "Assigned To"
TASK_URL = "Task URL"
BUILT_IN_FIELDS = (STAGE, ASSIGNED_TO, TASK_URL)
#: Query parameters of the task list that are not filters, so no field may be named so.
LIMIT = "limit"
CURSOR = "cursor"
PAGING = frozenset({LIMIT, CURSOR})


class WorkflowDefinition(BaseModel):
    """What a user writes to create a workflow."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(min_length=1, max_length=MAX_NAME_CHARS)
    fields: tuple[FieldSpec, ...] = Field(default=(), max_length=MAX_FIELDS)
    unique_id: str | None = Field(
        default=None, description="The field whose value identifies a task (upsert key)."
    )
    stages: tuple[str, ...] = Field(
        default=("Not Started", "In Progress", "Done"),
        description="The first stage is a new task's default.",
    )
    members: tuple[str, ...] = Field(
        default=(), description="E-mail addresses of the people tasks can be assigned to."
    )

    @model_validator(mode="after")
    def _consistent(self, info: ValidationInfo) -> Self:
        problems = _consistency_problems(self)
        if info.context == _NEW:
            problems.extend(_bound_problems(self))
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @classmethod
    def parse(cls, raw: object) -> WorkflowDefinition:
        """Validate a new definition, number its fields, and validate that again exactly as it
        will be stored, so whatever is accepted can be read back. Every problem is reported."""
        numbered = cls._new(raw).with_field_ids()
        return cls._new(numbered.model_dump(mode="json"))

    @classmethod
    def _new(cls, raw: object) -> WorkflowDefinition:
        try:
            return cls.model_validate(raw, context=_NEW)
        except ValidationError as exc:
            raise DefinitionError([_describe(error) for error in exc.errors()]) from None

    def with_field_ids(self) -> WorkflowDefinition:
        """Give every field without an id the next free one."""
        next_id = max((spec.id for spec in self.fields), default=0) + 1
        numbered = []
        for spec in self.fields:
            if spec.id == 0:
                spec = spec.model_copy(update={"id": next_id})
                next_id += 1
            numbered.append(spec)
        return self.model_copy(update={"fields": tuple(numbered)})


def _consistency_problems(definition: WorkflowDefinition) -> list[str]:
    problems: list[str] = []
    seen: set[str] = set()
    for spec in definition.fields:
        if spec.name in BUILT_IN_FIELDS:
            problems.append(f"field {spec.name!r} is a built-in field and cannot be redefined")
        elif spec.name in seen:
            problems.append(f"field name {spec.name!r} is used more than once")
        seen.add(spec.name)
        if spec.type in OPTION_TYPES and not spec.options:
            problems.append(f"field {spec.name!r} of type {spec.type} needs a non-empty 'options'")
        if spec.type not in OPTION_TYPES and spec.options:
            problems.append(f"field {spec.name!r} of type {spec.type} takes no 'options'")
        if len(set(spec.options)) != len(spec.options):
            problems.append(f"field {spec.name!r} lists an option more than once")
    ids = [spec.id for spec in definition.fields if spec.id]
    if len(set(ids)) != len(ids):
        problems.append("field ids must be unique")
    problems.extend(_unique_id_problems(definition))
    if not definition.stages:
        problems.append("'stages' must list at least one stage")
    if any(not stage.strip() for stage in definition.stages):
        problems.append("stage names cannot be blank")
    if len(set(definition.stages)) != len(definition.stages):
        problems.append("a stage is listed more than once")
    return problems


def _bound_problems(definition: WorkflowDefinition) -> list[str]:
    """What a new definition must also keep: sizes that fit every index, and real e-mails.

    Each kind of problem is reported once per list, naming its first offender: a list may be long.
    """
    problems: list[str] = []
    for spec in definition.fields:
        if spec.id > MAX_FIELD_ID:
            problems.append(
                f"field {spec.name!r} has id {spec.id}, beyond the largest field id"
                f" ({MAX_FIELD_ID}); fields without an id are numbered after the largest id given"
            )
        what = f"field {spec.name!r}"
        if len(spec.options) > MAX_OPTIONS:
            problems.append(
                f"{what} lists {len(spec.options)} options; at most {MAX_OPTIONS} are allowed"
            )
        problems.extend(_text_problems(f"{what}: option", spec.options, MAX_OPTION_CHARS))
        if (blank := _first(spec.options, lambda option: not option.strip())) is not None:
            problems.append(f"{what}: option {blank!r} is blank")
    if len(definition.stages) > MAX_STAGES:
        problems.append(
            f"'stages' lists {len(definition.stages)}; at most {MAX_STAGES} are allowed"
        )
    problems.extend(_text_problems("stage", definition.stages, MAX_STAGE_CHARS))
    if len(definition.members) > MAX_MEMBERS:
        problems.append(
            f"'members' lists {len(definition.members)}; at most {MAX_MEMBERS} are allowed"
        )
    if (stranger := _first(definition.members, lambda m: not is_email(m))) is not None:
        problems.append(f"member {_shown(stranger)} is not an email address")
    if len({member.lower() for member in definition.members}) != len(definition.members):
        problems.append("a member is listed more than once (e-mails compare without case)")
    names = (definition.name, *(spec.name for spec in definition.fields))
    if _first(names, lambda name: "\x00" in name) is not None:
        problems.append("names cannot contain NUL characters")
    texts = (*names, *definition.stages, *definition.members)
    texts += tuple(option for spec in definition.fields for option in spec.options)
    if _first(texts, has_lone_surrogate) is not None:
        problems.append("names, options, stages and members cannot contain lone surrogates")
    if (
        taken := _first((spec.name for spec in definition.fields), PAGING.__contains__)
    ) is not None:
        problems.append(f"field name {taken!r} is reserved: the task list pages with it")
    return problems


def _text_problems(what: str, texts: tuple[str, ...], most: int) -> list[str]:
    problems = []
    if (too_long := _first(texts, lambda text: len(text) > most)) is not None:
        problems.append(f"{what} {_shown(too_long)} is longer than {most} characters")
    if (with_nul := _first(texts, lambda text: "\x00" in text)) is not None:
        problems.append(f"{what} {_shown(with_nul)} contains a NUL character")
    return problems


def _first(texts: Iterable[str], wrong: Callable[[str], bool]) -> str | None:
    return next((text for text in texts if wrong(text)), None)


def _shown(text: str) -> str:
    return repr(text if len(text) <= 40 else f"{text[:39]}…")


def _unique_id_problems(definition: WorkflowDefinition) -> list[str]:
    if definition.unique_id is None:
        return []
    spec = next((s for s in definition.fields if s.name == definition.unique_id), None)
    if spec is None:
        return [f"unique_id {definition.unique_id!r} names no field of this workflow"]
    if spec.type not in UNIQUE_ID_TYPES:
        return [f"unique_id field {spec.name!r} has type {spec.type}, which cannot identify a task"]
    return []


def _describe(error: Any) -> str:
    where = ".".join(str(part) for part in error["loc"])
    if error["type"] == "enum":
        allowed = ", ".join(t.value for t in FieldType)
        return f"{where}: unknown field type {error['input']!r} (expected one of: {allowed})"
    message = str(error["msg"]).removeprefix("Value error, ")
    return f"{where}: {message}" if where else message


class Workflow(BaseModel):
    """A stored workflow: a definition with its ids and version."""

    model_config = ConfigDict(frozen=True)

    id: int
    public_id: str
    version: int
    definition: WorkflowDefinition

    @property
    def name(self) -> str:
        return self.definition.name

    @functools.cached_property
    def unique_field(self) -> FieldSpec | None:
        # Cached: the worker asks for every request, and a definition never changes in place.
        return self.field(self.definition.unique_id) if self.definition.unique_id else None

    def field(self, name: str) -> FieldSpec | None:
        return next((spec for spec in self.definition.fields if spec.name == name), None)

    @property
    def default_stage(self) -> str:
        return self.definition.stages[0]

    def summary(self, base_url: str) -> WorkflowSummary:
        """The admin view of a workflow (never the token: only its hash is kept)."""
        # A definition dumps to exactly DefinitionJson's keys
        # (tests/unit/ingest/edge/test_routes.py).
        definition = cast(DefinitionJson, self.definition.model_dump(mode="json"))
        return {
            "id": self.public_id,
            "version": self.version,
            **definition,
            "import_url": import_url(base_url, "<token>"),
        }


# ------------------------------------------------------------- what the admin API and CLI show

#: A field as JSON (`FieldSpec.model_dump(mode="json")`), which JSON Schemas describe as FieldSpec.
FieldJson = Annotated[dict[str, Any], GetPydanticSchema(lambda _type, handler: handler(FieldSpec))]


class DefinitionJson(TypedDict):
    """A workflow definition as JSON (`WorkflowDefinition.model_dump(mode="json")`)."""

    name: str
    fields: list[FieldJson]
    unique_id: Annotated[
        str | None, Field(description="The field whose value identifies a task (upsert key).")
    ]
    stages: Annotated[list[str], Field(description="The first stage is a new task's default.")]
    members: Annotated[
        list[str], Field(description="E-mail addresses of the people tasks can be assigned to.")
    ]


class WorkflowSummary(DefinitionJson):
    """A stored workflow as the admin API shows it (never its token: only a hash of it is kept)."""

    id: Annotated[str, Field(description="Public id (as in its Task URLs).")]
    version: Annotated[int, Field(ge=1)]
    import_url: Annotated[
        str, Field(description="The import URL, with `<token>` standing for the token.")
    ]


class WorkflowExample(TypedDict):
    """What Flowdash's "Import from API" modal shows (the import URL, a sample task, a cURL
    request), and the JSON Schema of a task body."""

    import_url: Annotated[
        str,
        Field(description="The import URL (`<token>` stands for the token, save when created)."),
    ]
    example_payload: dict[str, Any]
    example_curl: str
    task_schema: Annotated[
        dict[str, Any],
        Field(
            description="The JSON Schema of this workflow's task bodies (each field as its type "
            "accepts it; `x-required-on-create` names the fields a new task needs)."
        ),
    ]


class CreatedWorkflow(WorkflowSummary, WorkflowExample):
    """A new workflow: its summary, its secret `token` (shown only this once) and the import
    example with the real import URL."""

    token: Annotated[str, Field(min_length=1)]


def new_token() -> str:
    """A fresh workflow token: 256 random bits, URL-safe, never starting with `-` (its prefix
    names it on command lines)."""
    return opaque.new_id(32)


def hash_token(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()


def new_public_id() -> str:
    return opaque.new_id(6)


def import_url(base_url: str, token: str) -> str:
    return f"{base_url}/api/v1/workflows/{token}/tasks"


def example_payload(definition: WorkflowDefinition) -> dict[str, Any]:
    """A sample task that passes validation, as the Flowdash import modal shows one."""
    payload: dict[str, Any] = {}
    for spec in definition.fields:
        sample = kind_of(spec.type).sample(spec, definition.members)
        if sample is not None:
            payload[spec.name] = sample
    payload[STAGE] = definition.stages[0]
    if definition.members:
        payload[ASSIGNED_TO] = definition.members[0]
    return payload


def example_curl(url: str, payload: dict[str, Any]) -> str:
    body = orjson.dumps(payload).decode()
    return (
        f"curl -X POST {shlex.quote(url)} \\\n"
        "  -H 'Content-Type: application/json' \\\n"
        f"  -d {shlex.quote(body)}"
    )


def task_schema(definition: WorkflowDefinition) -> dict[str, Any]:
    """The JSON Schema of this workflow's task bodies, from each field type's own schema."""
    properties: dict[str, Any] = {
        spec.name: {
            "anyOf": [kind_of(spec.type).schema(spec, definition.members), {"type": "null"}]
        }
        for spec in definition.fields
    }
    properties[STAGE] = {"type": "string", "enum": list(definition.stages)}
    properties[ASSIGNED_TO] = {"type": ["string", "null"], "format": "email"}
    return {
        "type": "object",
        "properties": properties,
        "additionalProperties": False,
        # Required only when the request creates the task; an update may leave them out.
        "x-required-on-create": [spec.name for spec in definition.fields if spec.required],
    }


def example(definition: WorkflowDefinition, url: str) -> WorkflowExample:
    """What the Flowdash "Import from API" modal shows: URL, sample payload, cURL; and the JSON
    Schema of a task body."""
    payload = example_payload(definition)
    return {
        "import_url": url,
        "example_payload": payload,
        "example_curl": example_curl(url, payload),
        "task_schema": task_schema(definition),
    }


def created_document(workflow: Workflow, token: str, base_url: str) -> CreatedWorkflow:
    """What creating a workflow answers: the workflow, its token (shown once) and the example."""
    url = import_url(base_url, token)
    return {**workflow.summary(base_url), "token": token, **example(workflow.definition, url)}
