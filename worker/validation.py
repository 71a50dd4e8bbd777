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
from decimal import Decimal
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    HttpUrl,
    TypeAdapter,
    ValidationError,
    create_model,
)
from pydantic import Field as ModelField
from pydantic_core import PydanticCustomError

from ingest.tasks import Value, canonical_number, key_fits, number_fits, read_number
from ingest.workflows import (
    ASSIGNED_TO,
    MAX_EMAIL_CHARS,
    STAGE,
    FieldSpec,
    FieldType,
    Workflow,
    is_email,
)

BLANK = "can't be blank"
INVALID = "is invalid"
NOT_A_NUMBER = "is not a number"
NOT_IN_LIST = "is not included in the list"
NOT_A_MEMBER = "is not a member of this workflow"
NOT_A_FIELD = "is not a field of this workflow"

#: Bounds that keep a value storable and renderable (numbers: `ingest.tasks.number_fits`).
MAX_TEXT_CHARS = {FieldType.LONG_TEXT: 100_000}
DEFAULT_MAX_TEXT_CHARS = 10_000
MAX_URL_CHARS = 2048
MAX_PHONE_CHARS = 64
#: A 422 names at most this many unknown keys (a "base" message counts the others), each cut to
#: MAX_SHOWN_KEY_CHARS: the answer stays small whatever the body holds.
MAX_LISTED_UNKNOWN_KEYS = 20
MAX_SHOWN_KEY_CHARS = 100
BASE = "base"

_DATE_TEXT = re.compile(r"\d{4}-\d{2}-\d{2}\Z", re.ASCII)
#: RFC 3339's date-time: seconds required, at most microseconds, an offset or Z ("T" and "Z" may
#: be lower case, as its section 5.6 allows).
_RFC3339 = re.compile(
    r"(\d{4}-\d{2}-\d{2})[Tt](\d{2}:\d{2}:\d{2})(\.\d{1,6})?([Zz]|[+-]\d{2}:\d{2})", re.ASCII
)
#: A phone number: an optional "+", digits with spaces, dashes, dots or parentheses between them,
#: and an optional extension ("ext", "ext.", "x" or "#" and 1 to 6 digits). The number itself has
#: 7 to 15 digits (E.164's most). Lengths are checked first, so backtracking stays bounded.
_PHONE = re.compile(
    r"(?P<number>\+?[0-9(](?:[0-9 ().\-]*[0-9)])?)(?:\s*(?:ext\.?|x|\#)\s*[0-9]{1,6})?",
    re.ASCII | re.IGNORECASE,
)
_PHONE_DIGITS = range(7, 16)
#: pydantic-core's WHATWG parser (linear; hosts, ports and IDNA checked).
_HTTP_URL: TypeAdapter[HttpUrl] = TypeAdapter(HttpUrl)


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
    if isinstance(value, Decimal) and not number_fits(value):
        raise _fail(INVALID)
    text = str(value)  # ints are bounded by the parser (MAX_NUMBER_DIGITS)
    if isinstance(value, Decimal) and "E" in text:
        text = format(value, "f")
    if len(text) > limit:
        raise _fail(INVALID)
    return text


def to_number(value: Any) -> Decimal:
    """A number within the bounds (`ingest.tasks.number_fits`), from JSON or decimal text.

    Anything else is not a number: booleans, lists, and the `OutOfRangeNumber` the parser leaves
    for a literal beyond the bounds.
    """
    number: Decimal | None = None
    if isinstance(value, str):
        number = read_number(value)
    elif isinstance(value, int) and not isinstance(value, bool):
        number = Decimal(value)
    elif isinstance(value, Decimal):
        number = value
    if number is None or not number_fits(number):
        raise _fail(NOT_A_NUMBER)
    return number


def to_date(value: Any) -> date:
    if not isinstance(value, str) or not _DATE_TEXT.match(value):
        raise _fail(INVALID)
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise _fail(INVALID) from None


_FIRST_MOMENT = datetime.min.replace(tzinfo=UTC)
_LAST_MOMENT = datetime.max.replace(tzinfo=UTC)


def to_datetime(value: Any) -> datetime:
    """An RFC 3339 date-time (2020-01-31T09:30:00.5+02:00): ISO 8601's other forms, a missing
    offset and fractions finer than microseconds (which would be truncated) are invalid."""
    match = _RFC3339.fullmatch(value) if isinstance(value, str) and len(value) <= 64 else None
    if match is None:
        raise _fail(INVALID)
    day, time, fraction, offset = match.groups()
    offset = "+00:00" if offset in ("Z", "z") else offset
    try:
        moment = datetime.fromisoformat(f"{day}T{time}{fraction or ''}{offset}")
    except ValueError:
        raise _fail(INVALID) from None
    try:
        in_utc = moment.astimezone(UTC)  # stored and shown in UTC: it must exist there
    except OverflowError:
        raise _fail(INVALID) from None
    if not _FIRST_MOMENT < in_utc < _LAST_MOMENT:
        raise _fail(INVALID)  # Postgres' driver would store these two as -infinity and infinity
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
    if not isinstance(value, str) or len(value) > MAX_EMAIL_CHARS or not is_email(value):
        raise _fail(INVALID)
    return value


def to_url(value: Any) -> str:
    """An absolute http(s) URL with a host, kept as written: no whitespace or control characters
    (the WHATWG parser would silently drop some), at most MAX_URL_CHARS characters."""
    if (
        not isinstance(value, str)
        or len(value) > MAX_URL_CHARS
        or not value[:8].lower().startswith(("http://", "https://"))
        or not value.isprintable()
        or " " in value
    ):
        raise _fail(INVALID)
    try:
        _HTTP_URL.validate_python(value)
    except ValidationError:
        raise _fail(INVALID) from None
    return value


def to_phone(value: Any) -> str:
    """A phone number as `_PHONE` describes it, kept as written."""
    if not isinstance(value, str) or len(value) > MAX_PHONE_CHARS:
        raise _fail(INVALID)
    match = _PHONE.fullmatch(value)
    if match is None or sum(c.isdigit() for c in match["number"]) not in _PHONE_DIGITS:
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
    if kind is FieldType.PHONE:
        return to_phone
    if kind is FieldType.PERSON:
        return _member(workflow.definition.members)
    return _text(MAX_TEXT_CHARS.get(kind, DEFAULT_MAX_TEXT_CHARS))


def _within_key_bound(convert: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """The Unique ID's converter: its canonical text must also fit the task index."""

    def check(value: Any) -> Any:
        converted = convert(value)
        if not key_fits(canonical_key(converted)):
            raise _fail(INVALID)
        return converted

    return check


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
        self._names = frozenset(
            {*(spec.name for spec in workflow.definition.fields), STAGE, ASSIGNED_TO}
        )
        definitions: dict[str, Any] = {}
        unique = workflow.unique_field
        for spec in workflow.definition.fields:
            attr = f"f{spec.id}"
            self._attr_of[attr] = spec.id
            convert = _converter(spec, workflow)
            if unique is not None and spec.id == unique.id:
                convert = _within_key_bound(convert)
            checker = BeforeValidator(_nullable(convert))
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
