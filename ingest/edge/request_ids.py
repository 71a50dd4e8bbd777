"""Signed public ids of task requests: a status URL names a request by an id that carries an
HMAC, so the edge can answer `pending` for a request it accepted (but no worker has finished) and
404 for an id it never issued, without a database write per request."""

from __future__ import annotations

import hashlib
import hmac
import uuid

from ingest import opaque

_MAC_BYTES = 10


class RequestIds:
    """Turns request UUIDs into signed public ids bound to their workflow, and back."""

    def __init__(self, key: bytes) -> None:
        self._key = key

    def _mac(self, request_id: uuid.UUID, workflow_id: int) -> bytes:
        message = request_id.bytes + workflow_id.to_bytes(8, "big")
        return hmac.new(self._key, message, hashlib.sha256).digest()[:_MAC_BYTES]

    def public(self, request_id: uuid.UUID, workflow_id: int) -> str:
        return opaque.encode(request_id.bytes + self._mac(request_id, workflow_id))

    def parse(self, public_id: str, workflow_id: int) -> uuid.UUID | None:
        """The request's UUID, or None when the id was not issued for this workflow."""
        raw = opaque.decode(public_id, 16 + _MAC_BYTES)
        if raw is None:
            return None
        request_id = uuid.UUID(bytes=raw[:16])
        if not hmac.compare_digest(raw[16:], self._mac(request_id, workflow_id)):
            return None
        return request_id
