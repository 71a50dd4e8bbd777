"""Field types: one entry per Flowdash field type, holding everything that type means.

A `Kind` says how a JSON value of the type is validated and turned into its stored value (one
converter compiled per workflow version), how a stored value is rendered in Flowdash's JSON, how
a list filter's text becomes a stored value to match, a sample value, whether the type can be a
Unique ID, and its JSON Schema. Adding a field type means adding a `FieldType` member and its
`Kind` here, and nothing else.

Stored values are what the `tasks.fields` jsonb column holds, keyed by field id: numbers and
currency as JSON numbers (Postgres keeps them as `numeric`, digits and scale exact: `10000.50`
stays `10000.50`), dates as `YYYY-MM-DD`, date-times as their canonical UTC text (what Flowdash
shows), checkboxes as booleans, multiple selects as arrays, everything else as text. One canonical
text per value is what lets a list filter match with jsonb containment (`@>`), which a GIN index
answers.
"""

from __future__ import annotations

import decimal
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from enum import StrEnum
from typing import TYPE_CHECKING, Any

import orjson
from email_validator import EmailNotValidError, validate_email
from pydantic import HttpUrl, TypeAdapter, ValidationError
from pydantic_core import PydanticCustomError

if TYPE_CHECKING:
    from ingest.workflows import FieldSpec


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


#: A value as stored (and held in memory by the worker): see the module's docstring.
Stored = Decimal | str | bool | list[str]
#: Turns a JSON value of a task body into its stored value, or raises `PydanticCustomError`
#: whose type is SPEC §4's message.
Converter = Callable[[Any], Stored]

INVALID = "is invalid"
NOT_A_NUMBER = "is not a number"
NOT_IN_LIST = "is not included in the list"
NOT_A_MEMBER = "is not a member of this workflow"

# ---------------------------------------------------------------------------------------- bounds

#: A number keeps at most this many digits, and the power of ten of its last digit lies within
#: ±MAX_NUMBER_EXPONENT. These are the bounds of every number anywhere: task values, Unique IDs,
#: filters, and any number literal of a body (`ingest.messages.parse_payload`). Such a number is
#: stored exactly (NUMERIC holds far more) and written out in at most 2,001 characters.
MAX_NUMBER_DIGITS = 1000
MAX_NUMBER_EXPONENT = 1000
#: A Unique ID's canonical text, in UTF-8 bytes: the btree row of (workflow_id, unique_key) must
#: stay under Postgres' 2,704 bytes. Every number within bounds fits (2,001 bytes at most).
MAX_KEY_BYTES = 2048
MAX_TEXT_CHARS = 10_000
MAX_LONG_TEXT_CHARS = 100_000
MAX_URL_CHARS = 2048
MAX_PHONE_CHARS = 64
MAX_EMAIL_CHARS = 320


def number_fits(number: Decimal) -> bool:
    """True when `number` is finite and within the digit and exponent bounds."""
    if not number.is_finite():
        return False
    _, digits, exponent = number.as_tuple()
    return len(digits) <= MAX_NUMBER_DIGITS and abs(int(exponent)) <= MAX_NUMBER_EXPONENT


#: Decimal notation as JSON writes it, with an optional "+", a bare "." and surrounding spaces:
#: ASCII digits only (`Decimal` would also read "١٢", "1_000" and "Infinity").
_NUMBER_TEXT = re.compile(r"\s*[-+]?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?\s*", re.ASCII)


def read_number(text: str) -> Decimal | None:
    """The exact number `text` writes, or None when it writes none within the bounds.

    Never raises: an exponent beyond what `decimal` can represent is simply not a number.
    """
    if not _NUMBER_TEXT.fullmatch(text):
        return None
    try:
        number = Decimal(text)
    except (InvalidOperation, ValueError):
        return None
    return number if number_fits(number) else None


#: Enough precision to normalize any number within the bounds without rounding.
_EXACT = decimal.Context(prec=MAX_NUMBER_DIGITS + 100)


def canonical_number(number: Decimal) -> str:
    """The one text of a number used as a Unique ID: 42, 42.0 and 4.2E+1 are all "42" (and
    -0, 0.0 and 0E+5 are all "0")."""
    return "0" if number.is_zero() else format(_EXACT.normalize(number), "f")


def fits_utf8(text: str, most: int) -> bool:
    """True when `text` takes at most `most` bytes as UTF-8; encoded only when it might not (a
    character takes 4 bytes at most)."""
    return len(text) * 4 <= most or len(text.encode("utf-8", "surrogatepass")) <= most


def has_lone_surrogate(text: str) -> bool:
    """True when `text` holds a surrogate with no partner, which no UTF-8 (and so neither
    Postgres nor any JSON encoder downstream) can carry."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def key_fits(key: str) -> bool:
    """True when a Unique ID's canonical text fits the task index."""
    return fits_utf8(key, MAX_KEY_BYTES)


def is_email(value: str) -> bool:
    """An e-mail address by its syntax alone (email-validator, as pydantic's EmailStr; no DNS)."""
    if len(value) > MAX_EMAIL_CHARS:
        return False
    try:
        validate_email(value, check_deliverability=False)
    except EmailNotValidError:
        return False
    return True


# ------------------------------------------------------------------------------------ converters


def refuse(message: str) -> PydanticCustomError:
    # The message is the error type too, so mapping errors back needs no table.
    return PydanticCustomError(message, message)


def _text(limit: int) -> Converter:
    def check(value: Any) -> str:
        if isinstance(value, bool):
            raise refuse(INVALID)
        if isinstance(value, int | Decimal):
            value = number_text(value, limit)
        if not isinstance(value, str) or len(value) > limit or "\x00" in value:
            raise refuse(INVALID)
        return value

    return check


def number_text(value: int | Decimal, limit: int) -> str:
    """A JSON number given for a text field, as the text it was written as (42 → "42")."""
    if isinstance(value, Decimal) and not number_fits(value):
        raise refuse(INVALID)
    text = str(value)  # ints are bounded by the parser (MAX_NUMBER_DIGITS)
    if isinstance(value, Decimal) and "E" in text:
        text = format(value, "f")
    if len(text) > limit:
        raise refuse(INVALID)
    return text


def to_number(value: Any) -> Decimal:
    """A number within the bounds (`number_fits`), from JSON or decimal text.

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
        raise refuse(NOT_A_NUMBER)
    # Postgres' numeric has no negative zero: "-0.00" is stored, and read back, as "0.00".
    return number.copy_abs() if number.is_zero() else number


_DATE_TEXT = re.compile(r"\d{4}-\d{2}-\d{2}\Z", re.ASCII)


def to_date(value: Any) -> date:
    if not isinstance(value, str) or not _DATE_TEXT.match(value):
        raise refuse(INVALID)
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise refuse(INVALID) from None


#: RFC 3339's date-time: seconds required, at most microseconds, an offset or Z ("T" and "Z" may
#: be lower case, as its section 5.6 allows).
_RFC3339 = re.compile(
    r"(\d{4}-\d{2}-\d{2})[Tt](\d{2}:\d{2}:\d{2})(\.\d{1,6})?([Zz]|[+-]\d{2}:\d{2})", re.ASCII
)
_FIRST_MOMENT = datetime.min.replace(tzinfo=UTC)
_LAST_MOMENT = datetime.max.replace(tzinfo=UTC)


def to_datetime(value: Any) -> datetime:
    """An RFC 3339 date-time (2020-01-31T09:30:00.5+02:00): ISO 8601's other forms, a missing
    offset and fractions finer than microseconds (which would be truncated) are invalid."""
    match = _RFC3339.fullmatch(value) if isinstance(value, str) and len(value) <= 64 else None
    if match is None:
        raise refuse(INVALID)
    day, time, fraction, offset = match.groups()
    offset = "+00:00" if offset in ("Z", "z") else offset
    try:
        moment = datetime.fromisoformat(f"{day}T{time}{fraction or ''}{offset}")
    except ValueError:
        raise refuse(INVALID) from None
    try:
        in_utc = moment.astimezone(UTC)  # stored and shown in UTC: it must exist there
    except OverflowError:
        raise refuse(INVALID) from None
    if not _FIRST_MOMENT < in_utc < _LAST_MOMENT:
        raise refuse(INVALID)  # the first and last moments stand for -infinity and infinity
    return moment


def moment_text(moment: datetime) -> str:
    """The one text of a moment, in UTC, as Flowdash shows it (2020-01-31T07:30:00.5Z); a naive
    moment is taken as UTC."""
    in_utc = moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    return in_utc.isoformat().replace("+00:00", "Z")


def to_checkbox(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise refuse(INVALID)


def choice(options: tuple[str, ...]) -> Callable[[Any], str]:
    """One of `options`, exactly (a single select, the stage of a task)."""
    allowed = frozenset(options)

    def check(value: Any) -> str:
        if not isinstance(value, str) or value not in allowed:
            raise refuse(NOT_IN_LIST)
        return value

    return check


def _choices(options: tuple[str, ...]) -> Callable[[Any], list[str]]:
    one = choice(options)

    def check(value: Any) -> list[str]:
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list):
            raise refuse(INVALID)
        return list(dict.fromkeys(one(item) for item in value))

    return check


def to_email(value: Any) -> str:
    if not isinstance(value, str) or len(value) > MAX_EMAIL_CHARS or not is_email(value):
        raise refuse(INVALID)
    return value


#: pydantic-core's WHATWG parser (linear; hosts, ports and IDNA checked).
_HTTP_URL: TypeAdapter[HttpUrl] = TypeAdapter(HttpUrl)


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
        raise refuse(INVALID)
    try:
        _HTTP_URL.validate_python(value)
    except ValidationError:
        raise refuse(INVALID) from None
    return value


#: A phone number: an optional "+", digits with spaces, dashes, dots or parentheses between them,
#: and an optional extension ("ext", "ext.", "x" or "#" and 1 to 6 digits). The number itself has
#: 7 to 15 digits (E.164's most). Lengths are checked first, so backtracking stays bounded.
_PHONE = re.compile(
    r"(?P<number>\+?[0-9(](?:[0-9 ().\-]*[0-9)])?)(?:\s*(?:ext\.?|x|\#)\s*[0-9]{1,6})?",
    re.ASCII | re.IGNORECASE,
)
_PHONE_DIGITS = range(7, 16)


def to_phone(value: Any) -> str:
    """A phone number as `_PHONE` describes it, kept as written."""
    if not isinstance(value, str) or len(value) > MAX_PHONE_CHARS:
        raise refuse(INVALID)
    match = _PHONE.fullmatch(value)
    if match is None or sum(c.isdigit() for c in match["number"]) not in _PHONE_DIGITS:
        raise refuse(INVALID)
    return value


def member(members: tuple[str, ...]) -> Callable[[Any], str]:
    """A member of the workflow by e-mail, any case, stored as the workflow spells it."""
    allowed = {m.lower(): m for m in members}

    def check(value: Any) -> str:
        if not isinstance(value, str):
            raise refuse(INVALID)
        if value.lower() not in allowed:
            raise refuse(NOT_A_MEMBER)
        return allowed[value.lower()]

    return check


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


#: `_NUMBER_TEXT` in the regex dialect JSON Schema uses (ECMA 262), where `\\s` and `\\d` mean more.
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
        converter=_constant(_text(limit)),
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
        converter=lambda spec, members: _choices(spec.options),
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


def unique_key(value: Stored) -> str:
    """The text a Unique ID value is stored and compared under (numbers: `canonical_number`)."""
    if isinstance(value, Decimal):
        return canonical_number(value)
    return str(value)


def unique_key_from_text(
    spec: FieldSpec | None, text: str, members: tuple[str, ...] = ()
) -> str | None:
    """The stored form of a Unique ID written as text (in a URL, say), read as its field's list
    filter reads it (a number in any notation, a member in any case); None when no task can
    have it."""
    if "\x00" in text or not key_fits(text):
        return None
    if spec is None:
        return text
    try:
        value = kind_of(spec.type).query(text, members)
    except ValueError:
        return None
    return unique_key(value)


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
