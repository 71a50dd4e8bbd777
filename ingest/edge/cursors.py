"""List cursors: opaque tokens for "the page after this task", bound to a workflow and a query.

A cursor is `nonce || masked task id || tag`, base64url without padding (43 characters):

- the nonce is random, so two cursors for the same or neighbouring tasks look unrelated;
- the task id is XORed with a keystream derived from the nonce and the binding, so it cannot be
  read back and the difference between two ids (a count of tasks) is not visible;
- the tag is an HMAC over the nonce, the masked id and the binding (workflow and query digest), so
  a cursor cannot be forged, altered, or carried to another workflow or another filter.

Both keys are derived from the instance secret with their own labels (domain separation), so a
cursor can never be confused with a signed status-URL id made from the same secret.
"""

from __future__ import annotations

import hashlib
import hmac
import os

import orjson

from ingest import opaque

_NONCE_BYTES = 12
_ID_BYTES = 8
_TAG_BYTES = 12
_RAW_BYTES = _NONCE_BYTES + _ID_BYTES + _TAG_BYTES


def _derive(secret: bytes, label: bytes) -> bytes:
    return hmac.new(secret, b"ingest list cursor v1: " + label, hashlib.sha256).digest()


def query_digest(filters: list[tuple[str, str]]) -> bytes:
    """The digest a cursor is bound to: the filters as a multiset of (name, raw value) pairs.

    Order does not matter (`?a=1&b=2` and `?b=2&a=1` are the same query); values are compared as
    sent, so `300` and `300.0` are different queries even where they match the same tasks.
    """
    return hashlib.sha256(orjson.dumps(sorted(filters))).digest()


class Cursors:
    """Seals task ids into cursors bound to (workflow, query), and opens them again."""

    def __init__(self, secret: bytes) -> None:
        self._mask_key = _derive(secret, b"mask")
        self._tag_key = _derive(secret, b"tag")

    def _binding(self, workflow_id: int, digest: bytes) -> bytes:
        return workflow_id.to_bytes(8, "big", signed=True) + digest

    def _keystream(self, nonce: bytes, binding: bytes) -> int:
        stream = hmac.new(self._mask_key, nonce + binding, hashlib.sha256).digest()
        return int.from_bytes(stream[:_ID_BYTES], "big")

    def _tag(self, nonce: bytes, masked: bytes, binding: bytes) -> bytes:
        return hmac.new(self._tag_key, nonce + masked + binding, hashlib.sha256).digest()[
            :_TAG_BYTES
        ]

    def seal(self, task_id: int, workflow_id: int, digest: bytes) -> str:
        """The cursor for the page after `task_id` of this workflow's query `digest`."""
        binding = self._binding(workflow_id, digest)
        nonce = os.urandom(_NONCE_BYTES)
        masked = (task_id ^ self._keystream(nonce, binding)).to_bytes(_ID_BYTES, "big")
        return opaque.encode(nonce + masked + self._tag(nonce, masked, binding))

    def unseal(self, cursor: str, workflow_id: int, digest: bytes) -> int | None:
        """The task id sealed in `cursor`, or None when this service did not hand it out for this
        workflow and query (altered, forged, or from another workflow or filter)."""
        raw = opaque.decode(cursor, _RAW_BYTES)
        if raw is None:
            return None
        nonce, masked, tag = raw[:_NONCE_BYTES], raw[_NONCE_BYTES:-_TAG_BYTES], raw[-_TAG_BYTES:]
        binding = self._binding(workflow_id, digest)
        if not hmac.compare_digest(tag, self._tag(nonce, masked, binding)):
            return None
        task_id = int.from_bytes(masked, "big") ^ self._keystream(nonce, binding)
        return task_id if task_id < 2**63 else None
