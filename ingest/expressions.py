"""JMESPath expressions, as sources use them (SPEC §6): compiled once, with a problem a person can
act on (what is wrong and where), and evaluated over a delivery's exact JSON.

A delivery is parsed exactly (`ingest.messages.parse_payload`): its non-integers are `Decimal`, so a
mapped `19.99` reaches the task as `19.99`, never as the float nearest to it. JMESPath's functions
know only Python's own numbers; `_ExactFunctions` teaches them `Decimal`.
"""

from __future__ import annotations

import decimal
import math
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, cast

import jmespath
import orjson
from jmespath import exceptions as jmespath_errors
from jmespath import functions as jmespath_functions
from jmespath.parser import ParsedResult

from ingest.errors import MappingFailed
from ingest.messages import OutOfRangeNumber
from ingest.values import MAX_NUMBER_DIGITS, read_number

#: Longest expression a source may hold: plenty for a mapping, and it bounds compile time.
MAX_EXPRESSION_CHARS = 2000
#: Longest reason a failure at run time quotes (JMESPath's own messages quote the value).
_MAX_REASON_CHARS = 200


def _with_decimal(types: list[str]) -> list[str]:
    return [*types, "Decimal"] if "float" in types else types


class _ExactFunctions(jmespath_functions.Functions):
    """JMESPath's built-in functions, with `Decimal` a number like `int` and `float`."""

    def _get_allowed_pytypes(self, types: Any) -> Any:
        allowed, subtypes = super()._get_allowed_pytypes(types)  # type: ignore[misc]
        return _with_decimal(allowed), [_with_decimal(list(s)) for s in subtypes]

    def _convert_to_jmespath_type(self, pyobject: str) -> str:
        if pyobject == "Decimal":
            return "number"
        return str(super()._convert_to_jmespath_type(pyobject))  # type: ignore[misc]

    @jmespath_functions.signature({"types": []})
    def _func_type(self, arg: Any) -> str:
        if isinstance(arg, Decimal):
            return "number"
        return str(super()._func_type(arg))  # type: ignore[misc]

    @jmespath_functions.signature({"types": []})
    def _func_to_string(self, arg: Any) -> str:
        return arg if isinstance(arg, str) else exact_json(arg).decode()

    @jmespath_functions.signature({"types": []})
    def _func_to_number(self, arg: Any) -> Any:
        """Numbers as they are; a string that writes a number as that exact number."""
        if isinstance(arg, Decimal):
            return arg
        if isinstance(arg, str):
            number = read_number(arg)
            return None if number is None else (int(number) if _integral(arg) else number)
        return super()._func_to_number(arg)  # type: ignore[misc]


def _integral(text: str) -> bool:
    return not any(mark in text for mark in ".eE")


def exact_json(value: Any) -> bytes:
    """`value`, made of what a delivery's JSON and an expression's literals hold, as JSON: numbers
    exactly as they are (Decimal, ints beyond 64 bits, numbers beyond the bounds as written).
    ValueError for what JSON cannot write (a float that is not finite, an `&expression`)."""
    return orjson.dumps(_writable(value))


_INT64 = range(-(2**63), 2**64)


def _writable(value: Any) -> Any:
    """`value` with what orjson cannot write itself as JSON text it places as is (`Fragment`)."""
    if value is None or isinstance(value, str | bool):
        return value
    if isinstance(value, int):
        return value if value in _INT64 else orjson.Fragment(str(value))
    if isinstance(value, Decimal) and value.is_finite():
        return orjson.Fragment(str(value))
    if isinstance(value, float) and math.isfinite(value):
        return value
    if isinstance(value, float | Decimal):
        raise ValueError(f"{value} is not a JSON number")
    if isinstance(value, OutOfRangeNumber):
        return orjson.Fragment(value.literal)
    if isinstance(value, list):
        return [_writable(item) for item in value]
    if isinstance(value, dict):
        return {key: _writable(item) for key, item in value.items()}
    raise ValueError(f"a {type(value).__name__} is not JSON")


_ARITHMETIC = decimal.Context(prec=MAX_NUMBER_DIGITS + 100)
_EXACT_FUNCTIONS = _ExactFunctions()
_OPTIONS = jmespath.Options(custom_functions=_EXACT_FUNCTIONS)
_FUNCTIONS: dict[str, Any] = _ExactFunctions.FUNCTION_TABLE


@dataclass(frozen=True, slots=True)
class Expression:
    """A compiled JMESPath expression and its text."""

    text: str
    compiled: ParsedResult

    def search(self, value: Any, where: str) -> Any:
        """The expression's value over `value`; MappingFailed (naming `where`, the expression and
        the reason) when it cannot be evaluated there, whatever the reason."""
        try:
            # Decimal arithmetic (sum, avg, abs) at the precision numbers are kept at, not 28.
            with decimal.localcontext(_ARITHMETIC):
                return self.compiled.search(value, _OPTIONS)
        # A third-party evaluator over a stranger's JSON: whatever fails is that delivery's
        # problem (a string where a function wants an array, a sort of mixed types, a deep
        # recursion), never the server's.
        except Exception as exc:
            raise MappingFailed(where, self.text, _reason(exc)) from None


def _reason(exc: Exception) -> str:
    if isinstance(exc, jmespath_errors.JMESPathTypeError):
        expected = " or ".join(exc.expected_types)
        actual = exc.actual_type  # JMESPath's name of the type, or (in arrays) Python's
        if actual not in jmespath_functions.REVERSE_TYPES_MAP:
            actual = _EXACT_FUNCTIONS._convert_to_jmespath_type(actual)
        return f"{exc.function_name}() takes {expected}, not {actual}"
    reason = str(exc) or type(exc).__name__
    return reason if len(reason) <= _MAX_REASON_CHARS else f"{reason[: _MAX_REASON_CHARS - 1]}…"


def is_true(value: Any) -> bool:
    """JMESPath's truth: false, null, "", [] and {} are false; everything else (0 too) is true."""
    return not (value is None or value is False or value in ("", [], {}))


def compile_expression(text: str) -> Expression:
    """`text` compiled; ValueError saying what is wrong and at which position (0-based)."""
    if len(text) > MAX_EXPRESSION_CHARS:
        raise ValueError(f"is longer than {MAX_EXPRESSION_CHARS} characters")
    try:
        with warnings.catch_warnings():
            # An invalid JSON literal (`{x`) is read as a string, with a warning: refuse it.
            warnings.simplefilter("error", PendingDeprecationWarning)
            compiled = jmespath.compile(text)
    except jmespath_errors.ParseError as exc:
        raise ValueError(_parse_problem(exc, text)) from None
    except jmespath_errors.EmptyExpressionError:
        raise ValueError("is empty") from None
    except PendingDeprecationWarning:
        raise ValueError("holds a `literal` that is not JSON (quote text as 'text')") from None
    except RecursionError:
        raise ValueError("nests too deeply") from None
    tree = cast(dict[str, Any], compiled.parsed)
    _check_functions(tree)
    _check_fan_out(tree)
    return Expression(text, compiled)


def _parse_problem(exc: jmespath_errors.ParseError, text: str) -> str:
    if isinstance(exc, jmespath_errors.IncompleteExpressionError):
        return f"ends too early (position {len(text)})"
    if isinstance(exc, jmespath_errors.LexerError):
        return f"{exc.message.lower()} at position {exc.lex_position}"
    if exc.token_type == "EOF":
        return f"ends too early (position {exc.lex_position})"
    return f"has an unexpected {exc.token_value!r} at position {exc.lex_position}"


def _check_functions(tree: dict[str, Any]) -> None:
    """JMESPath only finds an unknown function, or a wrong count of arguments, when it calls it:
    a source finds it when it is created."""
    for node in _nodes(tree):
        if node["type"] != "function_expression":
            continue
        name, given = node["value"], len(node["children"])
        spec = _FUNCTIONS.get(name)
        if spec is None:
            raise ValueError(f"calls {name}(), which is no JMESPath function")
        signature = spec["signature"]
        variadic = bool(signature) and signature[-1].get("variadic", False)
        if given < len(signature) or (given > len(signature) and not variadic):
            wanted = f"at least {len(signature)}" if variadic else str(len(signature))
            raise ValueError(f"calls {name}() with {given} argument(s); it takes {wanted}")


#: How many times a delivery's values an expression may select at most: the product of the widths
#: of its multi-selects (`[a, b]`, `{a: a, b: b}`). Piped into one another they multiply what a
#: delivery becomes (`[@,@]|[@,@]|…` doubles it at each step: 2^k values from k pipes); within
#: this bound a mapping stays within a few times the work of reading its delivery.
MAX_FAN_OUT = 16


def _check_fan_out(tree: dict[str, Any]) -> None:
    fan_out = 1
    for node in _nodes(tree):
        if node["type"] in ("multi_select_list", "multi_select_dict"):
            fan_out *= max(1, len(node.get("children", ())))
            if fan_out > MAX_FAN_OUT:
                raise ValueError(
                    f"selects too much: its multi-selects ([…], {{…}}) multiply what they select "
                    f"by more than {MAX_FAN_OUT} (each counts its items; nested or piped, they "
                    "multiply)"
                )


def _nodes(tree: dict[str, Any]) -> Iterator[dict[str, Any]]:
    stack = [tree]
    while stack:
        node = stack.pop()
        yield node
        stack.extend(child for child in node.get("children", ()) if isinstance(child, dict))
