"""Field types (ingest.fields): each kind's parts agree with each other. Pure: no services."""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Any

import jsonschema
import pytest
from pydantic_core import PydanticCustomError

from ingest.fields import (
    KINDS,
    UNIQUE_ID_TYPES,
    FieldSpec,
    FieldType,
    as_unique_value,
    decode_values,
    encode_values,
    filter_document,
    kind_of,
    unique_value_from_text,
)
from ingest.values import INVALID, MAX_LONG_TEXT_CHARS, MAX_TEXT_CHARS, MAX_UNIQUE_VALUE_BYTES

MEMBERS = ("ann@example.com",)


def _spec(field_type: FieldType) -> FieldSpec:
    options = ("S", "M") if kind_of(field_type).has_options else ()
    return FieldSpec(name=f"A {field_type}", type=field_type, options=options, id=1)


def test_every_field_type_has_a_kind():
    assert set(KINDS) == set(FieldType)


@pytest.mark.parametrize("field_type", list(FieldType))
def test_a_sample_value_passes_its_converter_and_its_schema(field_type):
    kind, spec = kind_of(field_type), _spec(field_type)
    sample = kind.sample(spec, MEMBERS)
    jsonschema.validate(sample, kind.schema(spec, MEMBERS))
    stored = kind.converter(spec, MEMBERS)(sample)
    assert decode_values(encode_values({spec.id: stored})) == {spec.id: stored}


@pytest.mark.parametrize(
    ("field_type", "written", "shown"),
    [
        (FieldType.CURRENCY, "10000.50", "10000.50"),
        (FieldType.CURRENCY, "-0.00", "0.00"),
        (FieldType.NUMBER, 300, "300"),
        (FieldType.NUMBER, "-1.5E-3", "-0.0015"),
        (FieldType.NUMBER, "9" * 1000, "9" * 1000),
        (FieldType.DATE, "2024-02-29", "2024-02-29"),
        (FieldType.DATETIME, "2020-01-31T09:30:00.5+02:00", "2020-01-31T07:30:00.500000Z"),
        (FieldType.DATETIME, "2020-01-31t09:30:00z", "2020-01-31T09:30:00Z"),
        (FieldType.CHECKBOX, "TRUE", True),
        (FieldType.MULTIPLE_SELECT, ["M", "S", "M"], ["M", "S"]),
        (FieldType.PERSON, "ANN@example.com", "ann@example.com"),
        (FieldType.TEXT, 'naïve "☃" \\', 'naïve "☃" \\'),
    ],
)
def test_a_value_is_stored_exactly_and_shown_as_flowdash_shows_it(field_type, written, shown):
    kind, spec = kind_of(field_type), _spec(field_type)
    stored = kind.converter(spec, MEMBERS)(written)
    read_back = decode_values(encode_values({7: stored}))[7]
    assert kind.render(read_back) == shown


def test_numbers_are_json_numbers_digit_for_digit():
    assert encode_values({3: Decimal("10000.50"), 4: Decimal("-0.000")}) == (
        '{"3":10000.50,"4":-0.000}'
    )
    assert decode_values('{"3": 10000.50}') == {3: Decimal("10000.50")}
    assert str(decode_values('{"3": 10000.50}')[3]) == "10000.50"


@pytest.mark.parametrize(
    ("field_type", "written", "query"),
    [
        (FieldType.NUMBER, 300, "300.0"),
        (FieldType.DATE, "2020-01-31", "2020-01-31"),
        (FieldType.DATETIME, "2020-01-31T09:30:00+02:00", "2020-01-31T07:30:00+00:00"),
        (FieldType.DATETIME, "2020-01-31T09:30:00Z", "2020-01-31T09:30:00"),
        (FieldType.CHECKBOX, True, "true"),
        (FieldType.TEXT, "Acme", "Acme"),
        (FieldType.PERSON, "ann@example.com", "ANN@Example.com"),
    ],
)
def test_a_filter_names_the_stored_value(field_type, written, query):
    kind, spec = kind_of(field_type), _spec(field_type)
    assert kind.query(query, MEMBERS) == kind.converter(spec, MEMBERS)(written)


def test_a_multiple_select_filter_matches_one_of_the_values():
    kind = kind_of(FieldType.MULTIPLE_SELECT)
    assert filter_document(9, kind, kind.query("S", MEMBERS)) == '{"9":["S"]}'


@pytest.mark.parametrize("text", ["x", "2020-13-01", "1e99999999", "١٢"])
def test_a_filter_a_type_cannot_hold_is_refused(text):
    for field_type in (FieldType.NUMBER, FieldType.DATE, FieldType.CHECKBOX):
        with pytest.raises(ValueError, match=re.escape(text)):
            kind_of(field_type).query(text, MEMBERS)


def test_unique_ids_have_one_text():
    assert as_unique_value(Decimal("42.0")) == as_unique_value(Decimal("4.2E+1")) == "42"
    number = FieldSpec(name="N", type=FieldType.NUMBER, id=1)
    assert unique_value_from_text(number, "42.00") == "42"
    assert unique_value_from_text(number, "forty-two") is None
    assert unique_value_from_text(None, "a\x00b") is None
    assert unique_value_from_text(None, "x" * 5000) is None
    person = FieldSpec(name="P", type=FieldType.PERSON, id=2)
    assert unique_value_from_text(person, "ANN@example.COM", MEMBERS) == "ann@example.com"
    assert FieldType.LONG_TEXT not in UNIQUE_ID_TYPES
    assert FieldType.NUMBER in UNIQUE_ID_TYPES


def _schema_of(field_type: FieldType) -> dict[str, Any]:
    return kind_of(field_type).schema(_spec(field_type), MEMBERS)


def test_schemas_name_what_a_body_may_give():
    assert _schema_of(FieldType.DATE)["format"] == "date"
    assert _schema_of(FieldType.SINGLE_SELECT)["enum"] == ["S", "M"]
    jsonschema.validate("10000.50", _schema_of(FieldType.CURRENCY))
    jsonschema.validate(42, _schema_of(FieldType.TEXT))
    jsonschema.validate("TRUE", _schema_of(FieldType.CHECKBOX))
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate("XL", _schema_of(FieldType.SINGLE_SELECT))


def test_each_text_kind_keeps_its_own_length_bound():
    text = kind_of(FieldType.TEXT).converter(_spec(FieldType.TEXT), MEMBERS)
    long_text = kind_of(FieldType.LONG_TEXT).converter(_spec(FieldType.LONG_TEXT), MEMBERS)
    assert text("x" * MAX_TEXT_CHARS)
    assert long_text("x" * MAX_LONG_TEXT_CHARS)
    assert long_text("x" * (MAX_TEXT_CHARS + 1))
    for convert, limit in ((text, MAX_TEXT_CHARS), (long_text, MAX_LONG_TEXT_CHARS)):
        with pytest.raises(PydanticCustomError, match=INVALID):
            convert("x" * (limit + 1))


@pytest.mark.parametrize("field_type", [FieldType.NUMBER, FieldType.CURRENCY])
def test_numbers_are_shown_as_decimal_text_every_digit_kept(field_type):
    render = kind_of(field_type).render
    assert render(Decimal("1E+3")) == "1000"
    assert render(Decimal("0.000001")) == "0.000001"
    assert render(Decimal("10000.50")) == "10000.50"


def test_a_unique_id_in_a_url_is_read_as_its_field_reads_a_filter():
    day = FieldSpec(name="D", type=FieldType.DATE, id=1)
    assert unique_value_from_text(day, "2020-01-31") == "2020-01-31"
    assert unique_value_from_text(day, "2020-02-30") is None
    choice = FieldSpec(name="C", type=FieldType.SINGLE_SELECT, options=("A",), id=2)
    assert unique_value_from_text(choice, "anything") == "anything"  # matches no task if no option
    assert (
        unique_value_from_text(None, "k" * MAX_UNIQUE_VALUE_BYTES) == "k" * MAX_UNIQUE_VALUE_BYTES
    )
