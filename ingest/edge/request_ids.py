"""Signed public ids of task requests: a status URL names a request by an id that carries an
HMAC, so the edge can answer `pending` for a request it accepted (but no worker has finished) and
404 for an id it never issued, without a database write per request.

An id also carries when it was issued, signed with the rest: with no result stored, a request
issued longer ago than the results' retention had its result purged (404), not `pending`. A keyed
request (an Idempotency-Key or a delivery id) carries only the UTC day it was issued on, so that
every retry of it that day gets the same status URL. Ids issued before the time was carried (26
bytes) still parse, as issued at an unknown time.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
import time
import uuid
from dataclasses import dataclass

from ingest import opaque
from ingest.messages import TaskRequest

_MAC_BYTES = 10
_DAY = 86_400
#: What follows the request's UUID in an id: whether it is keyed (0 or 1), then its issue time:
#: Unix seconds, or for a keyed request the Unix day (both fit four bytes until 2106).
_ISSUED = struct.Struct(">BI")
_UNTIMED_BYTES = 16 + _MAC_BYTES
_TIMED_BYTES = 16 + _ISSUED.size + _MAC_BYTES
_UNTIMED_CHARS = len(opaque.encode(bytes(_UNTIMED_BYTES)))


@dataclass(frozen=True, slots=True)
class IssuedRequest:
    """What a public request id says: the request, and when it was issued at the latest."""

    request_id: uuid.UUID
    #: Whether the request was keyed (an Idempotency-Key or a delivery id); None: unknown.
    keyed: bool | None
    #: Unix time by which the id was issued at the latest (the end of its second, or of its day
    #: for a keyed request); None for an id of the older form, which carries no time.
    issued_by: float | None


class RequestIds:
    """Turns request UUIDs into signed public ids bound to their workflow, and back."""

    def __init__(self, key: bytes) -> None:
        self._key = key

    def _mac(self, signed: bytes, workflow_id: int) -> bytes:
        message = signed + workflow_id.to_bytes(8, "big")
        return hmac.new(self._key, message, hashlib.sha256).digest()[:_MAC_BYTES]

    def public(
        self,
        request_id: uuid.UUID,
        workflow_id: int,
        issued_at: float | None = None,
        keyed: bool = False,
    ) -> str:
        """The public id of a request issued at `issued_at` (Unix time; default: now)."""
        moment = time.time() if issued_at is None else issued_at
        count = int(moment // _DAY) if keyed else int(moment)
        signed = request_id.bytes + _ISSUED.pack(int(keyed), count)
        return opaque.encode(signed + self._mac(signed, workflow_id))

    def of(self, request: TaskRequest) -> str:
        """The public id of a task request, issued when the edge received it."""
        return self.public(request.id, request.workflow_id, request.received_at, request.idempotent)

    def read(self, public_id: str, workflow_id: int) -> IssuedRequest | None:
        """What the id says, or None when it was not issued for this workflow."""
        size = _UNTIMED_BYTES if len(public_id) == _UNTIMED_CHARS else _TIMED_BYTES
        raw = opaque.decode(public_id, size)
        if raw is None:
            return None
        signed, mac = raw[:-_MAC_BYTES], raw[-_MAC_BYTES:]
        if not hmac.compare_digest(mac, self._mac(signed, workflow_id)):
            return None
        request_id = uuid.UUID(bytes=signed[:16])
        if size == _UNTIMED_BYTES:
            return IssuedRequest(request_id, None, None)
        keyed, count = _ISSUED.unpack(signed[16:])
        if keyed not in (0, 1):
            return None
        issued_by = (count + 1) * _DAY if keyed else count + 1
        return IssuedRequest(request_id, bool(keyed), float(issued_by))

    def parse(self, public_id: str, workflow_id: int) -> uuid.UUID | None:
        """The request's UUID, or None when the id was not issued for this workflow."""
        issued = self.read(public_id, workflow_id)
        return None if issued is None else issued.request_id
