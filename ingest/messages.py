"""The wire contracts between the edge and the workers: frozen, versioned, JSON (never pickle).

One broker message carries a batch of task requests (the edge coalesces requests arriving while
a publish is in flight); each request keeps its own id, so its result is its own. Each body
travels as the client's JSON text, untouched, so a worker parses numbers exactly (as Decimal)
and one bad body can never poison the other requests of its batch.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum
from typing import Any

import orjson

from ingest.errors import DecodeError, MalformedBody
from ingest.values import MAX_NUMBER_DIGITS, has_lone_surrogate, read_number

WIRE_VERSION = 1
CONTENT_TYPE = "application/json"
TASKS_MESSAGE_TYPE = "ingest.tasks.v1"
REPLIES_MESSAGE_TYPE = "ingest.replies.v1"


class Operation(StrEnum):
    """What a task request asks for."""

    UPSERT = "upsert"  #: POST: update by Unique ID, or create
    UPDATE = "update"  #: PUT: update by Unique ID, 404 when missing
    DELETE = "delete"  #: DELETE: remove the task the body names (`delete_body`), 404 when missing
    #: POST .../tasks/batch: the body is a JSON array of task bodies, each upserted in order
    #: (`ingest.batches`). A worker of a version before it cannot decode the message: deploy
    #: workers before edges.
    BATCH = "batch"


@dataclass(frozen=True, slots=True)
class TaskRequest:
    """One client request to change a workflow's tasks."""

    id: uuid.UUID
    workflow_id: int
    workflow_version: int
    operation: Operation
    body: str
    received_at: float
    #: Sent with an Idempotency-Key: its id may already have a result from an earlier message.
    idempotent: bool = False
    #: A client waits for the answer, so the worker sends a reply after commit.
    wants_reply: bool = True
    #: Task bodies it carries: a batch import's items, else 1. It sizes a worker's transactions.
    items: int = 1

    @property
    def fingerprint(self) -> bytes:
        """What an Idempotency-Key retry must repeat exactly: the operation and the body."""
        return hashlib.sha256(f"{self.operation.value}\n{self.body}".encode()).digest()

    def to_wire(self) -> dict[str, Any]:
        wire: dict[str, Any] = {
            "id": self.id.hex,
            "wf": self.workflow_id,
            "wv": self.workflow_version,
            "op": self.operation.value,
            "body": self.body,
            "at": self.received_at,
            # The wire's name for the flag, kept so every worker version reads it alike.
            "key": self.idempotent,
            "reply": self.wants_reply,
        }
        if self.items != 1:
            wire["n"] = self.items
        return wire

    @classmethod
    def from_wire(cls, raw: Any) -> TaskRequest:
        return cls(
            id=uuid.UUID(hex=raw["id"]),
            workflow_id=int(raw["wf"]),
            workflow_version=int(raw["wv"]),
            operation=Operation(raw["op"]),
            body=str(raw["body"]),
            received_at=float(raw["at"]),
            # Absent, the flag is assumed set: that costs a look-up of a stored result, never a
            # second effect.
            idempotent=bool(raw.get("key", True)),
            wants_reply=bool(raw.get("reply", True)),
            items=max(1, int(raw.get("n", 1))),
        )


#: The member of a delete's body that names the task by its Unique ID value. The wire keeps this
#: name: a worker of an older version reads only it (another name would make it answer 404).
_DELETED_UNIQUE_VALUE = "key"


def delete_body(unique_value: str) -> str:
    """The body of a delete request: the Unique ID value (canonical text) of the task to delete."""
    return orjson.dumps({_DELETED_UNIQUE_VALUE: unique_value}).decode()


def unique_value_to_delete(payload: dict[str, Any]) -> str | None:
    """The Unique ID value a `delete_body` names (None: none)."""
    value = payload.get(_DELETED_UNIQUE_VALUE)
    return value if isinstance(value, str) and value else None


@dataclass(frozen=True, slots=True)
class TaskBatch:
    """The content of one broker message: requests, and where to send the wake-up replies."""

    requests: tuple[TaskRequest, ...]
    reply_to: str | None = None

    def encode(self) -> bytes:
        return orjson.dumps(
            {
                "v": WIRE_VERSION,
                "reply_to": self.reply_to,
                "requests": [request.to_wire() for request in self.requests],
            }
        )

    @classmethod
    def decode(cls, data: bytes) -> TaskBatch:
        try:
            raw = orjson.loads(data)
            if raw.get("v") != WIRE_VERSION:
                raise DecodeError(f"unsupported wire version {raw.get('v')!r}")
            requests = tuple(TaskRequest.from_wire(item) for item in raw["requests"])
            reply_to = raw.get("reply_to")
        except DecodeError:
            raise
        except (orjson.JSONDecodeError, AttributeError, KeyError, TypeError, ValueError) as exc:
            raise DecodeError(f"undecodable task batch: {exc!r}") from exc
        if not requests:
            raise DecodeError("task batch carries no requests")
        return cls(requests=requests, reply_to=reply_to if isinstance(reply_to, str) else None)


@dataclass(frozen=True, slots=True)
class Reply:
    """A request's final answer, sent to the edge that waits for it (a wake-up only)."""

    request_id: uuid.UUID
    http_status: int
    body: str
    #: The fingerprint of the request this answers: requests sharing an id (an Idempotency-Key
    #: reused with another body) must each get their own answer.
    fingerprint: bytes = b""


def encode_replies(replies: list[Reply]) -> bytes:
    return orjson.dumps(
        {
            "v": WIRE_VERSION,
            "replies": [
                {
                    "id": r.request_id.hex,
                    "status": r.http_status,
                    "body": r.body,
                    "fp": r.fingerprint.hex(),
                }
                for r in replies
            ],
        }
    )


def decode_replies(data: bytes) -> list[Reply]:
    try:
        raw = orjson.loads(data)
        return [
            Reply(
                uuid.UUID(hex=item["id"]),
                int(item["status"]),
                str(item["body"]),
                bytes.fromhex(item.get("fp", "")),
            )
            for item in raw["replies"]
        ]
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise DecodeError(f"undecodable replies: {exc!r}") from exc


_IDEMPOTENCY_NAMESPACE = uuid.UUID("5b0a6f4e-3c1d-4f7a-9f7e-1d2c3b4a5f60")


def idempotent_request_id(workflow_id: int, idempotency_key: str) -> uuid.UUID:
    """The request id an Idempotency-Key stands for: every retry with the key gets the same id."""
    return uuid.uuid5(_IDEMPOTENCY_NAMESPACE, f"{workflow_id}/{idempotency_key}")


#: Deepest nesting a task body may have: the worker's parser must read whatever the edge accepts.
MAX_DEPTH = 64


@dataclass(frozen=True, slots=True)
class OutOfRangeNumber:
    """A number literal beyond the bounds of `ingest.tasks` (digits, exponent), kept in the parsed
    body in its place: validation then answers `is not a number` (or `is invalid`, or `is not a
    field`) for the key that holds it, instead of the parser failing on the whole body."""

    literal: str

    def __repr__(self) -> str:
        shown = self.literal if len(self.literal) <= 40 else f"{self.literal[:37]}..."
        return f"OutOfRangeNumber({shown})"


def _bounded_float(literal: str) -> Decimal | OutOfRangeNumber:
    number = read_number(literal)
    return OutOfRangeNumber(literal) if number is None else number


def _bounded_int(literal: str) -> int | OutOfRangeNumber:
    if len(literal.lstrip("-")) > MAX_NUMBER_DIGITS:
        return OutOfRangeNumber(literal)
    return int(literal)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


#: One decoder for every body (`json.loads` with hooks would build one a call).
_EXACT_JSON = json.JSONDecoder(
    parse_float=_bounded_float, parse_int=_bounded_int, parse_constant=_reject_constant
)


def parse_payload(text: str | bytes) -> dict[str, Any]:
    """Parse a task body exactly: non-integers become Decimal, never float; a number beyond the
    bounds becomes an `OutOfRangeNumber`. Raises MalformedBody, and only that, for any input that
    is not one JSON object ingest can store (see `inspect_values`).

    The edge and the worker both parse with this, so what the edge accepted the worker can read.
    """
    if isinstance(text, bytes):
        text = _utf8(text)
    value = parse_exactly(text)
    if not isinstance(value, dict):
        raise MalformedBody("body must be a JSON object")
    if may_hold_refused_values(text):
        inspect_values(value, strict_strings=True)
    return value


def parse_exactly(text: str) -> Any:
    """Any JSON value, its numbers read as `parse_payload` reads them; raises MalformedBody, and
    only that, for text that is not JSON or nests deeper than the parser can go."""
    try:
        return _EXACT_JSON.decode(text)
    except RecursionError:
        raise MalformedBody("JSON nesting is too deep") from None
    except ValueError as exc:  # JSONDecodeError, NaN/Infinity
        raise MalformedBody(f"body is not valid JSON: {exc}") from None


def _utf8(body: bytes) -> str:
    try:
        return body.decode("utf-8")  # strictly: json.loads would also take UTF-16 or a BOM
    except UnicodeDecodeError as exc:
        raise MalformedBody(f"body is not valid JSON: {exc}") from None


def may_hold_refused_values(text: str) -> bool:
    """False when the JSON text cannot hold what `inspect_values` refuses, which a scan of the
    text tells faster than a walk of the parsed value: NUL and surrogates come only from `\\u`
    escapes (or raw, in a str that was never UTF-8), and every level of nesting needs a bracket."""
    return (
        "\\u" in text
        # The walk counts the top object as depth 1, and what the innermost bracket holds as one
        # deeper: n brackets nest values n + 1 deep.
        or text.count("{") + text.count("[") >= MAX_DEPTH
        or (not text.isascii() and has_lone_surrogate(text))
    )


def inspect_values(value: object, strict_strings: bool, strings: bool = True) -> None:
    """Refuse nesting deeper than MAX_DEPTH, NUL characters, and (with `strict_strings`, for
    parsers that let them through) lone surrogates, which Postgres and every JSON encoder
    downstream would refuse. Without `strings`, only the nesting is checked."""
    stack: list[tuple[object, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise MalformedBody(f"JSON nesting deeper than {MAX_DEPTH} levels is not accepted")
        if isinstance(item, dict):
            stack.extend((key, depth + 1) for key in item)
            stack.extend((child, depth + 1) for child in item.values())
        elif isinstance(item, list):
            stack.extend((child, depth + 1) for child in item)
        elif strings and isinstance(item, str):
            _check_string(item, strict_strings)


def _check_string(text: str, strict: bool) -> None:
    if "\x00" in text:
        raise MalformedBody("strings cannot contain \\u0000")
    if strict and has_lone_surrogate(text):
        raise MalformedBody("strings cannot contain lone surrogates")
