"""Field types: one entry per Flowdash field type, holding everything that type means.

A `Kind` says how a JSON value of the type is validated and turned into its stored value (one
converter compiled per workflow version), how a stored value is rendered in Flowdash's JSON, how
a list filter's text becomes a stored value to match, a sample value, whether the type can be a
Unique ID, and its JSON Schema. Adding a field type means adding a `FieldType` member and its
`Kind` here (its converter in `ingest.values`), and nothing else.

Stored values are what the `tasks.fields` jsonb column holds, keyed by field id: numbers and
currency as JSON numbers (Postgres keeps them as `numeric`, digits and scale exact: `10000.50`
stays `10000.50`), dates as `YYYY-MM-DD`, date-times as their canonical UTC text (what Flowdash
shows), checkboxes as booleans, multiple selects as arrays, everything else as text. One canonical
text per value is what lets a list filter match with jsonb containment (`@>`), which a GIN index
answers.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict, Field

from ingest.values import (
    MAX_EMAIL_CHARS,
    MAX_LONG_TEXT_CHARS,
    MAX_PHONE_CHARS,
    MAX_TEXT_CHARS,
    MAX_URL_CHARS,
    Converter,
    Stored,
    canonical_number,
    choice,
    choices,
    member,
    moment_text,
    read_number,
    to_checkbox,
    to_date,
    to_datetime,
    to_email,
    to_number,
    to_phone,
    to_text,
    to_url,
    unique_value_fits,
)


class FieldType(StrEnum):
    """Flowdash's field types."""

    TEXT = "text"
    LONG_TEXT = "longText"
    NUMBER = "number"
    CURRENCY = "currency"
    DATE = "date"
    DATETIME = "datetime"
    CHECKBOX = "checkbox"
    SINGLE_SELECT = "singleSelect"
    MULTIPLE_SELECT = "multipleSelect"
    EMAIL = "email"
    URL = "url"
    PHONE = "phone"
    PERSON = "person"


#: The most a field or workflow name may hold (characters).
MAX_NAME_CHARS = 200
#: The most a stored definition may hold: what the integer column holds.
_MAX_STORED_FIELD_ID = 2**31 - 1


class FieldSpec(BaseModel):
    """One typed field of a workflow."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(min_length=1, max_length=MAX_NAME_CHARS)
    type: FieldType
    required: bool = False
    options: tuple[str, ...] = Field(
        default=(), description="The choices of a singleSelect or multipleSelect field."
    )
    #: Stable id of the field inside its workflow; assigned on create, kept across renames.
    id: int = Field(
        default=0,
        ge=0,
        le=_MAX_STORED_FIELD_ID,
        strict=True,
        description="Stable id of the field; assigned on create when 0 or absent.",
    )


# ----------------------------------------------------------------------------------------- kinds


def _as_is(value: Stored) -> Any:
    return value


def _number_json(value: Stored) -> Any:
    # Flowdash shows numbers and currency as decimal strings, every digit kept.
    return format(value, "f") if isinstance(value, Decimal) else value


def _query_number(text: str, members: tuple[str, ...] = ()) -> Stored:
    number = read_number(text)  # beyond the bounds no stored number can match
    if number is None:
        raise ValueError(text)
    return number


def _query_date(text: str, members: tuple[str, ...] = ()) -> Stored:
    try:
        return date.fromisoformat(text).isoformat()
    except ValueError:
        raise ValueError(text) from None


def _query_moment(text: str, members: tuple[str, ...] = ()) -> Stored:
    try:
        return moment_text(datetime.fromisoformat(text))
    except (ValueError, OverflowError):  # OverflowError: a moment that does not exist in UTC
        raise ValueError(text) from None


def _query_checkbox(text: str, members: tuple[str, ...] = ()) -> Stored:
    if text.lower() not in ("true", "false"):
        raise ValueError(text)
    return text.lower() == "true"


def _query_text(text: str, members: tuple[str, ...] = ()) -> Stored:
    return text


def _query_member(text: str, members: tuple[str, ...] = ()) -> Stored:
    """A member named in any case, as the workflow spells it (as writes store it); text that
    names no member is left as it is, and matches nothing."""
    lowered = text.lower()
    return next((m for m in members if m.lower() == lowered), text)


@dataclass(frozen=True, slots=True)
class Kind:
    """Everything one field type means (see the module's docstring)."""

    #: Builds the converter of one field of one workflow version (compiled once, then cached).
    converter: Callable[[FieldSpec, tuple[str, ...]], Converter]
    #: A value a sample task carries (None: none can be given, e.g. no members to assign).
    sample: Callable[[FieldSpec, tuple[str, ...]], Any]
    #: The JSON Schema of the values a task body may give.
    schema: Callable[[FieldSpec, tuple[str, ...]], dict[str, Any]]
    #: A list filter's text as the stored value it matches, given the workflow's members; raises
    #: ValueError when it is none.
    query: Callable[[str, tuple[str, ...]], Stored] = _query_text
    #: The stored value in Flowdash's JSON.
    render: Callable[[Stored], Any] = _as_is
    #: One scalar that compares exactly, so it can identify a task.
    unique_id: bool = False
    #: The definition lists the values it may take (`options`).
    has_options: bool = False
    #: It holds several values; a filter matches a task holding the one named.
    many: bool = False


def _constant(value: Any) -> Callable[[FieldSpec, tuple[str, ...]], Any]:
    return lambda spec, members: value


def _schema(**schema: Any) -> Callable[[FieldSpec, tuple[str, ...]], dict[str, Any]]:
    return lambda spec, members: dict(schema)


def _stored_moment(value: Any) -> Stored:
    return moment_text(to_datetime(value))


def _stored_date(value: Any) -> Stored:
    return to_date(value).isoformat()


#: `ingest.values.read_number`'s pattern in the regex dialect JSON Schema uses (ECMA 262), where
#: `\\s` and `\\d` mean more.
_BLANKS = r"[ \t\n\r\f\v]*"
_NUMBER_PATTERN = rf"^{_BLANKS}[-+]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][-+]?[0-9]+)?{_BLANKS}$"
_NUMBER_SCHEMA = _schema(
    anyOf=[{"type": "number"}, {"type": "string", "pattern": _NUMBER_PATTERN}],
    description="A number, or its decimal text; kept exactly, shown as decimal text.",
)


def _text_schema(limit: int) -> Callable[[FieldSpec, tuple[str, ...]], dict[str, Any]]:
    # A JSON number is text too: it is kept as it was written (42 → "42").
    return _schema(anyOf=[{"type": "string", "maxLength": limit}, {"type": "number"}])


def _text_kind(
    limit: int, sample: Callable[[FieldSpec, tuple[str, ...]], Any], unique_id: bool
) -> Kind:
    return Kind(
        converter=_constant(to_text(limit)),
        sample=sample,
        schema=_text_schema(limit),
        unique_id=unique_id,
    )


def _number_kind(sample: int, unique_id: bool) -> Kind:
    return Kind(
        converter=_constant(to_number),
        sample=_constant(sample),
        schema=_NUMBER_SCHEMA,
        query=_query_number,
        render=_number_json,
        unique_id=unique_id,
    )


def _text_sample(spec: FieldSpec, members: tuple[str, ...]) -> Any:
    return "42" if spec.name == "Company ID" else "Example text"


KINDS: Mapping[FieldType, Kind] = {
    FieldType.TEXT: _text_kind(MAX_TEXT_CHARS, _text_sample, unique_id=True),
    FieldType.LONG_TEXT: _text_kind(
        MAX_LONG_TEXT_CHARS, _constant("A longer description of the task."), unique_id=False
    ),
    FieldType.NUMBER: _number_kind(10, unique_id=True),
    FieldType.CURRENCY: _number_kind(10000, unique_id=False),
    FieldType.DATE: Kind(
        converter=_constant(_stored_date),
        query=_query_date,
        sample=_constant("2020-01-31"),
        schema=_schema(type="string", format="date"),
        unique_id=True,
    ),
    FieldType.DATETIME: Kind(
        converter=_constant(_stored_moment),
        query=_query_moment,
        sample=_constant("2020-01-31T09:30:00Z"),
        schema=_schema(type="string", format="date-time"),
    ),
    FieldType.CHECKBOX: Kind(
        converter=_constant(to_checkbox),
        query=_query_checkbox,
        sample=_constant(False),
        schema=_schema(
            anyOf=[
                {"type": "boolean"},
                {"type": "string", "pattern": "^([Tt][Rr][Uu][Ee]|[Ff][Aa][Ll][Ss][Ee])$"},
            ]
        ),
    ),
    FieldType.SINGLE_SELECT: Kind(
        converter=lambda spec, members: choice(spec.options),
        sample=lambda spec, members: spec.options[0],
        schema=lambda spec, members: {"type": "string", "enum": list(spec.options)},
        unique_id=True,
        has_options=True,
    ),
    FieldType.MULTIPLE_SELECT: Kind(
        converter=lambda spec, members: choices(spec.options),
        sample=lambda spec, members: [spec.options[0]],
        schema=lambda spec, members: {
            "anyOf": [
                {"type": "array", "items": {"type": "string", "enum": list(spec.options)}},
                {"type": "string", "enum": list(spec.options)},
            ]
        },
        has_options=True,
        many=True,
    ),
    FieldType.EMAIL: Kind(
        converter=_constant(to_email),
        sample=_constant("someone@example.com"),
        schema=_schema(type="string", format="email", maxLength=MAX_EMAIL_CHARS),
        unique_id=True,
    ),
    FieldType.URL: Kind(
        converter=_constant(to_url),
        sample=_constant("https://example.com"),
        schema=_schema(type="string", format="uri", maxLength=MAX_URL_CHARS),
        unique_id=True,
    ),
    FieldType.PHONE: Kind(
        converter=_constant(to_phone),
        sample=_constant("+1 555 0100"),
        schema=_schema(type="string", maxLength=MAX_PHONE_CHARS),
        unique_id=True,
    ),
    FieldType.PERSON: Kind(
        converter=lambda spec, members: member(members),
        query=_query_member,
        sample=lambda spec, members: members[0] if members else None,
        schema=lambda spec, members: {"type": "string", "format": "email"},
        unique_id=True,
    ),
}

#: Types whose value can identify a task: one scalar that compares exactly.
UNIQUE_ID_TYPES = frozenset(t for t, kind in KINDS.items() if kind.unique_id)
#: Types whose definition lists the values they may take.
OPTION_TYPES = frozenset(t for t, kind in KINDS.items() if kind.has_options)


def kind_of(field_type: FieldType) -> Kind:
    return KINDS[field_type]


# ------------------------------------------------------------------------------------ unique ids


def as_unique_value(value: Stored) -> str:
    """The text a Unique ID value is stored and compared under (numbers: `canonical_number`)."""
    if isinstance(value, Decimal):
        return canonical_number(value)
    return str(value)


def unique_value_from_text(
    spec: FieldSpec | None, text: str, members: tuple[str, ...] = ()
) -> str | None:
    """The stored form of a Unique ID written as text (in a URL, say), read as its field's list
    filter reads it (a number in any notation, a member in any case); None when no task can
    have it."""
    if "\x00" in text or not unique_value_fits(text):
        return None
    if spec is None:
        return text
    try:
        value = kind_of(spec.type).query(text, members)
    except ValueError:
        return None
    return as_unique_value(value)


# --------------------------------------------------------------------------------------- storage


def encode_values(values: Mapping[int, Stored]) -> str:
    """The jsonb text of a task's values: numbers written out as JSON numbers, digit for digit."""
    return orjson.dumps({str(key): _json(value) for key, value in values.items()}).decode()


def _json(value: Stored) -> Any:
    return orjson.Fragment(format(value, "f")) if isinstance(value, Decimal) else value


_STORED_JSON = json.JSONDecoder(parse_float=Decimal, parse_int=Decimal)


def decode_values(text: str) -> dict[int, Stored]:
    """A task's values from their jsonb text; numbers come back as the exact Decimal stored."""
    raw = _STORED_JSON.decode(text)
    return {int(field_id): value for field_id, value in raw.items()}


def filter_document(field_id: int, kind: Kind, value: Stored) -> str:
    """The jsonb a task's values contain (`@>`) when the field holds `value`."""
    held: Stored = [value] if kind.many and isinstance(value, str) else value
    return encode_values({field_id: held})
