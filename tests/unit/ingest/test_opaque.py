"""Opaque strings (ingest.opaque): URL-safe base64 without padding, one spelling per value."""

from __future__ import annotations

import os

import pytest

from ingest import opaque


@pytest.mark.parametrize("size", range(0, 41))
def test_bytes_of_any_size_decode_to_themselves(size):
    raw = os.urandom(size)
    text = opaque.encode(raw)
    assert "=" not in text
    assert len(text) == -(-size * 4 // 3)
    assert opaque.decode(text, size) == raw


def test_text_of_another_size_is_refused():
    text = opaque.encode(b"x" * 12)
    assert opaque.decode(text, 11) is None
    assert opaque.decode(text, 13) is None
    assert opaque.decode(text[:-1], 12) is None


ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


@pytest.mark.parametrize(("size", "spare_bits"), [(1, 4), (2, 2), (3, 0), (4, 4), (26, 2)])
def test_a_last_character_differing_only_in_its_spare_bits_is_refused(size, spare_bits):
    """b64decode ignores the spare bits of the last character, so the same bytes have several
    spellings: only the canonical one passes, and every one that passes spells its own bytes."""
    text = opaque.encode(bytes(size))
    spellings = [text[:-1] + c for c in ALPHABET]
    accepted = {s: opaque.decode(s, size) for s in spellings if opaque.decode(s, size) is not None}
    assert len(accepted) == 64 >> spare_bits
    assert all(opaque.encode(raw) == s for s, raw in accepted.items())
    assert len(set(accepted.values())) == len(accepted)


@pytest.mark.parametrize(
    "text",
    ["AAAA+AA", "AAAA/AA", "AAA AAA", "AAAA.AA", "AAAAAAé", "AAAA\nAA", "AAAA=AA", "=AAAAAA"],
)
def test_characters_outside_the_url_safe_alphabet_are_refused(text):
    assert len(text) == len(opaque.encode(bytes(5)))
    assert opaque.decode(text, 5) is None


def test_new_ids_never_start_like_a_command_line_option():
    assert not any(opaque.new_id(6).startswith("-") for _ in range(5000))
    assert len(opaque.new_id(6)) == 8
    assert len(opaque.new_id(32)) == 43
