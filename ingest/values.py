"""Field values: the bounds every value keeps, and the converters that check a JSON value of a
task body and turn it into its stored form (or refuse it with SPEC §4's message).

What each field type means as a whole (render, filter, schema, storage) is `ingest.fields`.
"""

from __future__ import annotations

import decimal
import re
from collections.abc import Callable
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from email_validator import EmailNotValidError, validate_email
from pydantic import HttpUrl, TypeAdapter, ValidationError
from pydantic_core import PydanticCustomError

#: A value as stored (and held in memory by the worker): see `ingest.fields`' docstring.
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
MAX_UNIQUE_VALUE_BYTES = 2048
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


def unique_value_fits(unique_value: str) -> bool:
    """True when a Unique ID's canonical text fits the task index."""
    return fits_utf8(unique_value, MAX_UNIQUE_VALUE_BYTES)


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


def to_text(limit: int) -> Converter:
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


def choices(options: tuple[str, ...]) -> Callable[[Any], list[str]]:
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
