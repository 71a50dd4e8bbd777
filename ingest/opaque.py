"""The opaque strings ingest hands to clients (status ids, list cursors): URL-safe base64 without
padding, with exactly one spelling per value, so an altered character never passes for the
same value."""

from __future__ import annotations

import base64
import binascii
import secrets


def encode(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode(text: str, size: int) -> bytes | None:
    """The `size` bytes `text` spells, or None when it spells no such bytes in the one canonical
    way (b64decode skips foreign characters and ignores the last character's spare bits, so the
    bytes must encode back to `text`)."""
    if len(text) != -(-size * 4 // 3) or not text.isascii():
        return None
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        return None
    return raw if len(raw) == size and encode(raw) == text else None


def new_id(nbytes: int) -> str:
    """A fresh random id of `nbytes` random bytes, URL-safe, that does not start with `-`: ids are
    typed on command lines (`ingest workflow token new ID`), where a leading `-` reads as an
    option. (It costs a sixty-fourth of the first character's choices: nothing.)"""
    while True:
        made = secrets.token_urlsafe(nbytes)
        if not made.startswith("-"):
            return made
