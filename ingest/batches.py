"""Batch import (SPEC §7): a JSON array of task bodies, carried as ONE task request.

A batch travels as one `TaskRequest` (`Operation.BATCH`) whose body is the array's JSON text,
untouched: one broker message, one worker transaction, one Idempotency-Key, one status URL. The
worker upserts its items in order and answers with one result per item (`batch_body`).

What each side judges:
- the edge (`check_items`): the body is a JSON array of 1 to `INGEST_BATCH_MAX_ITEMS` items, and
  no item holds what a single body may not (nesting deeper than 64 levels, NUL, lone surrogates):
  otherwise the whole batch is refused, naming the item. So the worker can always read the text;
- the worker (`read_items`): each item that is not a JSON object gets its own 400 result, and
  every other item is validated and applied like the body of a task request of its own.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ingest.errors import MalformedBody, TooManyItems
from ingest.messages import inspect_values, parse_exactly
from ingest.results import MAX_BATCH_BODY_BYTES, storable_body
from ingest.values import has_lone_surrogate

NOT_AN_ARRAY = "request body must be a JSON array of task bodies"
EMPTY = "a batch must hold at least one task body"
ITEM_NOT_AN_OBJECT = "a batch item must be a JSON object (a task body)"

#: A task body of a batch, or why it is none (its own 400).
Item = dict[str, Any] | MalformedBody


def check_items(value: Any, text: str, max_items: int, strict_strings: bool) -> int:
    """The number of items of a batch body (`value` parsed from `text`) the edge accepts; raises
    MalformedBody or TooManyItems for the whole batch. `strict_strings`: the parser let lone
    surrogates through (see `ingest.messages.inspect_values`)."""
    if not isinstance(value, list):
        raise MalformedBody(NOT_AN_ARRAY)
    if not value:
        raise MalformedBody(EMPTY)
    if len(value) > max_items:
        raise TooManyItems(len(value), max_items)
    for index, item in enumerate(value):
        # Only nesting too deep refuses the whole batch (the worker's parser could not read it);
        # NUL and lone surrogates are their item's own 400 (`read_items`), as a non-object is.
        if isinstance(item, dict | list) and not _flat(item):
            try:
                inspect_values(item, strict_strings, strings=False)
            except MalformedBody as exc:
                raise MalformedBody(f"item {index}: {exc}") from None
    return len(value)


def read_items(text: str) -> list[Item]:
    """The items of a batch body, in order, each a task body or why it is not one; raises
    MalformedBody when the text is not a JSON array of items (which the edge never sends)."""
    value = parse_exactly(text)
    if not isinstance(value, list) or not value:
        raise MalformedBody(NOT_AN_ARRAY)
    escapes = _may_hold_escapes(text)
    return [_item(item, escapes) for item in value]


def _item(value: Any, escapes: bool) -> Item:
    if not isinstance(value, dict):
        return MalformedBody(ITEM_NOT_AN_OBJECT)
    try:
        _inspect(value, escapes, strict_strings=True)
    except MalformedBody as exc:
        return exc
    return value


def _flat(item: Any) -> bool:
    """An object none of whose values is a container: it cannot nest too deep."""
    return isinstance(item, dict) and not any(isinstance(v, dict | list) for v in item.values())


def _inspect(item: Any, escapes: bool, strict_strings: bool) -> None:
    """`inspect_values` for one item, skipped where it cannot refuse anything (the usual flat
    task, which a walk would cost ~5 µs): NUL and lone surrogates come only from `\\u` escapes
    (`escapes`), and nesting too deep needs a container within an object's values."""
    if escapes or not _flat(item):
        inspect_values(item, strict_strings)


def _may_hold_escapes(text: str) -> bool:
    """Whether a JSON text can hold NUL or lone surrogates: only `\\u` escapes write them (or, in
    a str that never was UTF-8, raw surrogates)."""
    return "\\u" in text or (not text.isascii() and has_lone_surrogate(text))


def batch_body(answers: Sequence[tuple[int, str]]) -> str:
    """The answer to a batch, `{"results": [{"status": s, "body": b}, ...]}`, from its items'
    answers (status, JSON body) in order.

    Every body is whole while the answer fits MAX_BATCH_BODY_BYTES. Past it (a few huge tasks,
    or a workflow whose rendered tasks are large), a body over its item's share of the bound
    becomes a `result_too_large` note, with the task's `Task URL`. The bound holds the live
    answer and the stored one alike, so an Idempotency-Key retry gets the same answer.
    """
    if sum(len(body.encode()) for _, body in answers) > MAX_BATCH_BODY_BYTES:
        share = MAX_BATCH_BODY_BYTES // len(answers)
        answers = [(status, storable_body(body, share)) for status, body in answers]
    items = ",".join(f'{{"status":{status},"body":{body}}}' for status, body in answers)
    return f'{{"results":[{items}]}}'
