"""What a task request asks, read: each body it carries parsed, validated, and the Unique ID value
it names.

A task request carries one body; a batch import (`ingest.batches`) carries one per item, each
read as the body of an upsert of its own, so an item is judged exactly like a request.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ingest.batches import read_items
from ingest.errors import MalformedBody
from ingest.fields import as_unique_value
from ingest.messages import Operation, TaskRequest, parse_payload, unique_value_to_delete
from worker.validation import ParsedTask, TaskValidator, is_blank

#: Why a task request's body is refused when it is no JSON object ingest can store.
NOT_AN_OBJECT = "body is not a JSON object"


@dataclass(slots=True)
class Reading:
    """One body as read: the operation it asks for; the payload (None: not a JSON object,
    `problem` says why); its validation (None for a delete); the Unique ID value it names (None:
    missing, blank or invalid)."""

    operation: Operation
    payload: dict[str, Any] | None
    parsed: ParsedTask | None = None
    unique_value: str | None = None
    problem: str = NOT_AN_OBJECT


@dataclass(frozen=True, slots=True)
class ReadRequest:
    """A task request and the readings of the bodies it carries, in order; `batch`: it is
    answered with one result per reading (`ingest.batches.batch_body`)."""

    request: TaskRequest
    readings: list[Reading]
    batch: bool = False


def read_request(request: TaskRequest, validator: TaskValidator) -> ReadRequest:
    """What `request` asks. A batch whose text is no array of items (never sent by the edge) is
    answered as one malformed body."""
    if request.operation is not Operation.BATCH:
        return ReadRequest(request, [_read_body(request.operation, request.body, validator)])
    try:
        items = read_items(request.body)
    except MalformedBody as exc:
        return ReadRequest(request, [Reading(Operation.UPSERT, None, problem=str(exc))])
    return ReadRequest(request, [_read_item(item, validator) for item in items], batch=True)


def _read_body(operation: Operation, body: str, validator: TaskValidator) -> Reading:
    try:
        payload = parse_payload(body)
    except MalformedBody:
        return Reading(operation, None)
    return read_payload(operation, payload, validator)


def _read_item(item: dict[str, Any] | MalformedBody, validator: TaskValidator) -> Reading:
    if isinstance(item, MalformedBody):
        return Reading(Operation.UPSERT, None, problem=str(item))
    return read_payload(Operation.UPSERT, item, validator)


def read_payload(
    operation: Operation, payload: dict[str, Any], validator: TaskValidator
) -> Reading:
    """A payload's reading: validated, unless it is a delete's."""
    if operation is Operation.DELETE:
        return Reading(operation, payload, None, unique_value_to_delete(payload))
    parsed = validator.parse(payload)
    return Reading(operation, payload, parsed, _unique_value_of(validator, payload, parsed))


def _unique_value_of(
    validator: TaskValidator, payload: dict[str, Any], parsed: ParsedTask
) -> str | None:
    """The Unique ID value an upsert or update names, in canonical text (None: missing, blank or
    invalid)."""
    unique = validator.workflow.unique_field
    if unique is None:
        return None
    if not parsed.errors:
        value = parsed.values.get(unique.id)
        return None if value is None or is_blank(value) else as_unique_value(value)
    # Other fields failed validation, so the parse kept no values: check the Unique ID alone.
    return validator.unique_value(payload)
