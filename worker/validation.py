"""Task payload validation: one pydantic model compiled per workflow version, cached.

Each field becomes an optional model field (aliased by its display name) whose validator turns the
JSON value into the exact typed value Postgres stores, or raises with SPEC §4's message. Unknown
keys are refused by `extra="forbid"`. Pydantic collects every error at once, which gives the
Rails-style 422 body. Whether required fields are present depends on whether the task exists,
so that check is made by the upsert, not here.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, ValidationError, create_model
from pydantic import Field as ModelField
from pydantic_core import PydanticCustomError

from ingest.tasks import Value, canonical_number
from ingest.workflows import (
    ASSIGNED_TO,
    STAGE,
    FieldSpec,
    FieldType,
    Workflow,
    looks_like_email,
)

BLANK = "can't be blank"
INVALID = "is invalid"
NOT_A_NUMBER = "is not a number"
NOT_IN_LIST = "is not included in the list"
NOT_A_MEMBER = "is not a member of this workflow"
NOT_A_FIELD = "is not a field of this workflow"

#: Bounds that keep a value storable and renderable (Postgres NUMERIC allows far more).
MAX_NUMBER_DIGITS = 1000
MAX_TEXT_CHARS = {FieldType.LONG_TEXT: 100_000}
DEFAULT_MAX_TEXT_CHARS = 10_000

_NUMBER_TEXT = re.compile(r"\s*[-+]?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?\s*\Z")
_DATE_TEXT = re.compile(r"\d{4}-\d{2}-\d{2}\Z")
_URL_TEXT = re.compile(r"https?://[^\s/?#]+[^\s]*\Z", re.IGNORECASE)


def _fail(message: str) -> PydanticCustomError:
    # The message is the error type too, so mapping errors back needs no table.
    return PydanticCustomError(message, message)


def _text(limit: int) -> Callable[[Any], str]:
    def check(value: Any) -> str:
        if isinstance(value, bool):
            raise _fail(INVALID)
        if isinstance(value, int | Decimal):
            value = number_text(value, limit)
        if not isinstance(value, str) or len(value) > limit or "\x00" in value:
            raise _fail(INVALID)
        return value

    return check


def number_text(value: int | Decimal, limit: int) -> str:
    """A JSON number given for a text field, as the text it was written as (42 → "42")."""
    if isinstance(value, int):
        text = str(value)
    elif not value.is_finite() or abs(value.adjusted()) > limit:
        raise _fail(INVALID)
    else:
        text = str(value) if "E" not in str(value) else format(value, "f")
    if len(text) > limit:
        raise _fail(INVALID)
    return text


def to_number(value: Any) -> Decimal:
    if isinstance(value, bool):
        raise _fail(NOT_A_NUMBER)
    if isinstance(value, str):
        if not _NUMBER_TEXT.match(value):
            raise _fail(NOT_A_NUMBER)
        value = value.strip()
    if not isinstance(value, int | Decimal | str):
        raise _fail(NOT_A_NUMBER)
    try:
        number = Decimal(value)
    except (InvalidOperation, ValueError):
        raise _fail(NOT_A_NUMBER) from None
    if not number.is_finite():
        raise _fail(NOT_A_NUMBER)
    digits, exponent = len(number.as_tuple().digits), number.as_tuple().exponent
    assert isinstance(exponent, int)
    if digits > MAX_NUMBER_DIGITS or abs(exponent) > MAX_NUMBER_DIGITS:
        raise _fail(NOT_A_NUMBER)
    return number


def to_date(value: Any) -> date:
    if not isinstance(value, str) or not _DATE_TEXT.match(value):
        raise _fail(INVALID)
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise _fail(INVALID) from None


def to_datetime(value: Any) -> datetime:
    if not isinstance(value, str) or len(value) > 64:
        raise _fail(INVALID)
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise _fail(INVALID) from None
    if moment.tzinfo is None:
        raise _fail(INVALID)
    try:
        moment.astimezone(UTC)  # stored and shown in UTC: it must exist there
    except OverflowError:
        raise _fail(INVALID) from None
    return moment


def to_checkbox(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise _fail(INVALID)


def _choice(options: tuple[str, ...]) -> Callable[[Any], str]:
    allowed = frozenset(options)

    def check(value: Any) -> str:
        if not isinstance(value, str) or value not in allowed:
            raise _fail(NOT_IN_LIST)
        return value

    return check


def _choices(options: tuple[str, ...]) -> Callable[[Any], list[str]]:
    one = _choice(options)

    def check(value: Any) -> list[str]:
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list):
            raise _fail(INVALID)
        return list(dict.fromkeys(one(item) for item in value))

    return check


def to_email(value: Any) -> str:
    if not isinstance(value, str) or len(value) > 320 or not looks_like_email(value):
        raise _fail(INVALID)
    return value


def to_url(value: Any) -> str:
    if not isinstance(value, str) or len(value) > 2048 or not _URL_TEXT.match(value):
        raise _fail(INVALID)
    return value


def _member(members: tuple[str, ...]) -> Callable[[Any], str]:
    allowed = {member.lower(): member for member in members}

    def check(value: Any) -> str:
        if not isinstance(value, str):
            raise _fail(INVALID)
        if value.lower() not in allowed:
            raise _fail(NOT_A_MEMBER)
        return allowed[value.lower()]

    return check


def _converter(spec: FieldSpec, workflow: Workflow) -> Callable[[Any], Any]:
    kind = spec.type
    if kind in (FieldType.NUMBER, FieldType.CURRENCY):
        return to_number
    if kind is FieldType.DATE:
        return to_date
    if kind is FieldType.DATETIME:
        return to_datetime
    if kind is FieldType.CHECKBOX:
        return to_checkbox
    if kind is FieldType.SINGLE_SELECT:
        return _choice(spec.options)
    if kind is FieldType.MULTIPLE_SELECT:
        return _choices(spec.options)
    if kind is FieldType.EMAIL:
        return to_email
    if kind is FieldType.URL:
        return to_url
    if kind is FieldType.PERSON:
        return _member(workflow.definition.members)
    return _text(MAX_TEXT_CHARS.get(kind, DEFAULT_MAX_TEXT_CHARS))


def _nullable(convert: Callable[[Any], Any]) -> Callable[[Any], Any]:
    def check(value: Any) -> Any:
        return None if value is None else convert(value)

    return check


def _stage(stages: tuple[str, ...]) -> Callable[[Any], str]:
    choose = _choice(stages)

    def check(value: Any) -> str:
        if value is None:
            raise _fail(NOT_IN_LIST)
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
        definitions: dict[str, Any] = {}
        for spec in workflow.definition.fields:
            attr = f"f{spec.id}"
            self._attr_of[attr] = spec.id
            checker = BeforeValidator(_nullable(_converter(spec, workflow)))
            definitions[attr] = (Annotated[Any, checker], ModelField(None, alias=spec.name))
        stage = BeforeValidator(_stage(workflow.definition.stages))
        assignee = BeforeValidator(_nullable(_member(workflow.definition.members)))
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

    def unique_key(self, payload: dict[str, Any]) -> str | None:
        """The canonical Unique ID of a payload, or None when it is missing, blank or invalid."""
        unique = self.workflow.unique_field
        if unique is None or is_blank(payload.get(unique.name)):
            return None
        try:
            model = self._model.model_validate({unique.name: payload[unique.name]})
        except ValidationError:
            return None
        return canonical_key(getattr(model, f"f{unique.id}"))

    def parse(self, payload: dict[str, Any]) -> ParsedTask:
        try:
            model = self._model.model_validate(payload)
        except ValidationError as exc:
            return ParsedTask(errors=_rails_errors(exc))
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
        message = NOT_A_FIELD if error["type"] == "extra_forbidden" else error["type"]
        if not message.startswith(("is ", "can't")):
            message = INVALID
        bucket = errors.setdefault(name, [])
        if message not in bucket:
            bucket.append(message)
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


def canonical_key(value: Value) -> str:
    """The text a Unique ID value is stored and compared under."""
    if isinstance(value, Decimal):
        return canonical_number(value)
    if isinstance(value, date):
        return value.isoformat()
    return str(value)


def is_blank(value: Any) -> bool:
    """Rails' `blank?`: missing, null, empty or whitespace-only text, an empty list."""
    if value is None:
        return True
    if isinstance(value, str):
        return not value.strip()
    if isinstance(value, list):
        return not value
    return False
