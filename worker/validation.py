"""Task payload validation: one pydantic model compiled per workflow version, cached.

Each field becomes an optional model field (aliased by its display name) whose validator is its
type's converter (`ingest.fields`): the JSON value becomes the exact value Postgres stores, or
SPEC §4's message. Unknown
keys are refused by `extra="forbid"`. Pydantic collects every error at once, which gives the
Rails-style 422 body. Whether required fields are present depends on whether the task exists,
so that check is made by the upsert, not here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    ValidationError,
    create_model,
)
from pydantic import Field as ModelField

from ingest.fields import as_unique_value, kind_of
from ingest.tasks import Value
from ingest.values import INVALID, NOT_IN_LIST, choice, member, refuse, unique_value_fits
from ingest.workflows import ASSIGNED_TO, STAGE, Workflow

BLANK = "can't be blank"
NOT_A_FIELD = "is not a field of this workflow"

#: A 422 names at most this many unknown keys (a "base" message counts the others), each cut to
#: MAX_SHOWN_KEY_CHARS: the answer stays small whatever the body holds.
MAX_LISTED_UNKNOWN_KEYS = 20
MAX_SHOWN_KEY_CHARS = 100
BASE = "base"


def _within_index_bound(convert: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """The Unique ID's converter: its canonical text must also fit the task index."""

    def check(value: Any) -> Any:
        converted = convert(value)
        if not unique_value_fits(as_unique_value(converted)):
            raise refuse(INVALID)
        return converted

    return check


def _nullable(convert: Callable[[Any], Any]) -> Callable[[Any], Any]:
    def check(value: Any) -> Any:
        return None if value is None else convert(value)

    return check


def _stage(stages: tuple[str, ...]) -> Callable[[Any], str]:
    choose = choice(stages)

    def check(value: Any) -> str:
        if value is None:
            raise refuse(NOT_IN_LIST)
        return choose(value)

    return check


@dataclass(slots=True)
class ParsedTask:
    """A payload after validation: supplied values by field id, supplied built-ins, errors."""

    values: dict[int, Value] = field(default_factory=dict)
    #: Field ids whose key was present in the payload (a null clears the value).
    supplied: set[int] = field(default_factory=set)
    stage: str | None = None
    assigned_to: str | None = None
    stage_supplied: bool = False
    assigned_to_supplied: bool = False
    errors: dict[str, list[str]] = field(default_factory=dict)


class TaskValidator:
    """The compiled validator of one workflow version."""

    def __init__(self, workflow: Workflow) -> None:
        self.workflow = workflow
        self._attr_of: dict[str, int] = {}
        self._names = frozenset(
            {*(spec.name for spec in workflow.definition.fields), STAGE, ASSIGNED_TO}
        )
        definitions: dict[str, Any] = {}
        unique = workflow.unique_field
        for spec in workflow.definition.fields:
            attr = f"f{spec.id}"
            self._attr_of[attr] = spec.id
            convert = kind_of(spec.type).converter(spec, workflow.definition.members)
            if unique is not None and spec.id == unique.id:
                convert = _within_index_bound(convert)
            checker = BeforeValidator(_nullable(convert))
            definitions[attr] = (Annotated[Any, checker], ModelField(None, alias=spec.name))
        stage = BeforeValidator(_stage(workflow.definition.stages))
        assignee = BeforeValidator(_nullable(member(workflow.definition.members)))
        definitions["stage_"] = (Annotated[Any, stage], ModelField(None, alias=STAGE))
        definitions["assigned_to_"] = (
            Annotated[Any, assignee],
            ModelField(None, alias=ASSIGNED_TO),
        )
        self._model: type[BaseModel] = create_model(
            f"Task_{workflow.id}_v{workflow.version}",
            __config__=ConfigDict(extra="forbid", populate_by_name=False),
            **definitions,
        )

    def unique_value(self, payload: dict[str, Any]) -> str | None:
        """The Unique ID value of a payload in canonical text, or None when it is missing, blank
        or invalid."""
        unique = self.workflow.unique_field
        if unique is None or is_blank(payload.get(unique.name)):
            return None
        try:
            model = self._model.model_validate({unique.name: payload[unique.name]})
        except ValidationError:
            return None
        return as_unique_value(getattr(model, f"f{unique.id}"))

    def parse(self, payload: dict[str, Any]) -> ParsedTask:
        # Unknown keys are counted here rather than by pydantic: 60,000 of them cost nothing.
        unknown = [key for key in payload if key not in self._names]
        known = {key: value for key, value in payload.items() if key in self._names}
        try:
            model = self._model.model_validate(known)
        except ValidationError as exc:
            return ParsedTask(errors=_merged(_rails_errors(exc), _unknown_key_errors(unknown)))
        if unknown:
            return ParsedTask(errors=_unknown_key_errors(unknown))
        parsed = ParsedTask()
        for attr in model.model_fields_set:
            if attr == "stage_":
                parsed.stage, parsed.stage_supplied = model.stage_, True  # type: ignore[attr-defined]
            elif attr == "assigned_to_":
                parsed.assigned_to = model.assigned_to_  # type: ignore[attr-defined]
                parsed.assigned_to_supplied = True
            else:
                field_id = self._attr_of[attr]
                parsed.supplied.add(field_id)
                parsed.values[field_id] = getattr(model, attr)
        return parsed


def _rails_errors(exc: ValidationError) -> dict[str, list[str]]:
    errors: dict[str, list[str]] = {}
    for error in exc.errors():
        name = str(error["loc"][0]) if error["loc"] else "base"
        message = error["type"]  # unknown keys never reach pydantic (`_unknown_key_errors`)
        if not message.startswith(("is ", "can't")):
            message = INVALID
        bucket = errors.setdefault(name, [])
        if message not in bucket:
            bucket.append(message)
    return errors


def _unknown_key_errors(keys: list[str]) -> dict[str, list[str]]:
    """At most MAX_LISTED_UNKNOWN_KEYS keys, each cut short; a "base" message counts the rest."""
    errors: dict[str, list[str]] = {}
    for key in keys[:MAX_LISTED_UNKNOWN_KEYS]:
        shown = key if len(key) <= MAX_SHOWN_KEY_CHARS else f"{key[: MAX_SHOWN_KEY_CHARS - 1]}…"
        errors[shown] = [NOT_A_FIELD]
    if (more := len(keys) - MAX_LISTED_UNKNOWN_KEYS) > 0:
        keys_are = "key is not a field" if more == 1 else "keys are not fields"
        errors.setdefault(BASE, []).append(f"and {more} more {keys_are} of this workflow")
    return errors


def _merged(errors: dict[str, list[str]], more: dict[str, list[str]]) -> dict[str, list[str]]:
    for name, messages in more.items():
        errors.setdefault(name, []).extend(messages)
    return errors


class ValidatorCache:
    """Compiled validators by (workflow id, version); a new version compiles a new model."""

    def __init__(self, size: int = 256) -> None:
        self._size = size
        self._compiled: dict[tuple[int, int], TaskValidator] = {}

    def get(self, workflow: Workflow) -> TaskValidator:
        key = (workflow.id, workflow.version)
        validator = self._compiled.get(key)
        if validator is None:
            if len(self._compiled) >= self._size:
                self._compiled.pop(next(iter(self._compiled)))
            validator = self._compiled[key] = TaskValidator(workflow)
        return validator


def is_blank(value: Any) -> bool:
    """Rails' `blank?`: missing, null, empty or whitespace-only text, an empty list."""
    if value is None:
        return True
    if isinstance(value, str):
        return not value.strip()
    if isinstance(value, list):
        return not value
    return False
