"""JMESPath expressions of sources (ingest.expressions): compiled with problems a person can act
on, evaluated over exact numbers, and failing on odd payloads only as MappingFailed."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from ingest.errors import MappingFailed
from ingest.expressions import (
    MAX_EXPRESSION_CHARS,
    compile_expression,
    exact_json,
    is_true,
)
from ingest.messages import OutOfRangeNumber, parse_payload


def _problem(text: str) -> str:
    with pytest.raises(ValueError, match=r".") as caught:
        compile_expression(text)
    return str(caught.value)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("a.", "ends too early (position 2)"),
        ("a[", "ends too early (position 2)"),
        ("foo(", "ends too early (position 4)"),
        ("a ++ b", "unknown token + at position 2"),
        ('"abc', 'unclosed " delimiter at position 0'),
        ("a b", "has an unexpected 'b' at position 2"),
        ("", "is empty"),
        ("`{x`", "holds a `literal` that is not JSON (quote text as 'text')"),
        ("upper(a)", "calls upper(), which is no JMESPath function"),
        ("length(a, b)", "calls length() with 2 argument(s); it takes 1"),
        ("not_null()", "calls not_null() with 0 argument(s); it takes at least 1"),
        ("(" * 3000 + "a" + ")" * 3000, f"is longer than {MAX_EXPRESSION_CHARS} characters"),
        ("(" * 900 + "a" + ")" * 900, "nests too deeply"),
    ],
)
def test_an_invalid_expression_says_what_is_wrong_and_where(text: str, problem: str) -> None:
    assert _problem(text) == problem


def test_valid_expressions_compile_literals_included() -> None:
    for text in ("'Triage'", '`"Triage"`', "`42`", "`null`", "not_null(a, b, c)", "a.b[0].c"):
        assert compile_expression(text).text == text


def _search(text: str, value: Any) -> Any:
    return compile_expression(text).search(value, "map['X']")


def test_numbers_stay_exact_through_functions() -> None:
    delivery = parse_payload('{"a": 19.99, "b": [1.10, 2.20], "c": "0.1", "d": 1e400}')
    assert _search("a", delivery) == Decimal("19.99")
    assert _search("sum(b)", delivery) == Decimal("3.30")
    assert _search("max(b)", delivery) == Decimal("2.20")
    assert _search("abs(a)", delivery) == Decimal("19.99")
    assert _search("to_number(c)", delivery) == Decimal("0.1")
    assert _search("to_number('42')", delivery) == 42
    assert _search("type(a)", delivery) == "number"
    assert _search("to_string(b)", delivery) == "[1.10,2.20]"
    assert _search("to_string(a)", delivery) == "19.99"
    assert _search("a > `19`", delivery) is True
    assert _search("sort_by([{v: a}, {v: `1`}], &v)[0].v", delivery) == 1
    assert _search("d", delivery) == Decimal("1E+400")


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("length(a)", {"a": 5}),
        ("join(',', a)", {"a": "x"}),
        ("join(',', a)", {"a": [1]}),
        ("sort(a)", {"a": [1, "x"]}),
        ("a > `1`", {"a": "x"}),
        ("sum(a)", {"a": [Decimal("1.5"), 1.5]}),
        ("abs(a)", {"a": OutOfRangeNumber("1e99999")}),
        ("to_string(`1e999`)", {}),
        ("max_by(a, &b)", {"a": [{"b": True}]}),
    ],
)
def test_an_expression_that_fails_on_a_payload_raises_mapping_failed(text: str, value: Any) -> None:
    with pytest.raises(MappingFailed) as caught:
        _search(text, value)
    assert (caught.value.where, caught.value.expression) == ("map['X']", text)
    assert len(caught.value.reason) <= 200


def test_a_type_error_reason_names_jmespath_types() -> None:
    with pytest.raises(MappingFailed, match=r"length\(\) takes string or array or object, not "):
        _search("length(a)", {"a": Decimal("1.5")})


def test_truth_is_jmespaths() -> None:
    false: list[Any] = [None, False, "", [], {}]
    true: list[Any] = [0, Decimal(0), "0", [0], {"a": None}, True]
    assert [is_true(v) for v in false] == [False] * 5
    assert [is_true(v) for v in true] == [True] * 6


def test_exact_json_writes_numbers_as_they_are() -> None:
    value = {
        "d": Decimal("10000.50"),
        "big": 10**30,
        "out": OutOfRangeNumber("1e99999"),
        "list": [Decimal("1E+2"), 1.5, None, True, "x"],
    }
    assert exact_json(value) == (
        b'{"d":10000.50,"big":1000000000000000000000000000000,"out":1e99999,'
        b'"list":[1E+2,1.5,null,true,"x"]}'
    )
    for unwritable in (float("inf"), Decimal("NaN"), object()):
        with pytest.raises(ValueError, match="JSON"):
            exact_json({"x": unwritable})


def test_an_expression_whose_multi_selects_multiply_a_delivery_is_refused():
    """`[@,@]|[@,@]|…` doubles what a delivery becomes at every pipe: 2^k values to walk and
    write from a short expression. The product of the multi-selects' widths is bounded."""
    compile_expression("[@,@]|" * 4 + "@")  # 16 times the delivery at most
    for multiplying in ("[@,@]|" * 5 + "@", "[@,@,@,@]|[@,@,@,@]|[@,@]", "[[@,@,@],[@,@,@]]"):
        with pytest.raises(ValueError, match="multiply"):
            compile_expression(multiplying)
    compile_expression("{id: id, title: title, user: user.login, labels: labels[].name}")


def test_arithmetic_keeps_every_digit_of_an_exact_number():
    exact = Decimal("-1234567890123456789012345678901.25")
    assert compile_expression("abs(x)").search({"x": exact}, "map['X']") == exact.copy_abs()
    doubled = Decimal("-2469135780246913578024691357802.50")
    assert compile_expression("sum(xs)").search({"xs": [exact, exact]}, "map['X']") == doubled
