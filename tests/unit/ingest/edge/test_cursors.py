"""List cursors (ingest.edge.cursors) are opaque: sealed, bound to their workflow and filters,
and revealing no ids."""

from __future__ import annotations

import base64
import string

import pytest

from ingest.edge.cursors import Cursors, query_digest

SECRET = b"s" * 32
WORKFLOW = 7
QUERY = query_digest([("Stage", "Won")])
ALPHABET = string.ascii_letters + string.digits + "-_"


def _raw(cursor: str) -> bytes:
    return base64.urlsafe_b64decode(cursor + "=")


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


@pytest.mark.parametrize("task_id", [0, 1, 250, 2**32, 2**63 - 1])
def test_a_sealed_cursor_unseals_to_its_task_id(task_id):
    cursors = Cursors(SECRET)
    assert cursors.unseal(cursors.seal(task_id, WORKFLOW, QUERY), WORKFLOW, QUERY) == task_id


def test_every_altered_character_is_refused():
    cursors = Cursors(SECRET)
    cursor = cursors.seal(1234, WORKFLOW, QUERY)
    for position, original in enumerate(cursor):
        for replacement in ALPHABET.replace(original, ""):
            altered = cursor[:position] + replacement + cursor[position + 1 :]
            assert cursors.unseal(altered, WORKFLOW, QUERY) is None, (position, replacement)


def test_every_flipped_bit_is_refused():
    cursors = Cursors(SECRET)
    raw = _raw(cursors.seal(1234, WORKFLOW, QUERY))
    for bit in range(len(raw) * 8):
        flipped = bytearray(raw)
        flipped[bit // 8] ^= 1 << (bit % 8)
        assert cursors.unseal(_b64(bytes(flipped)), WORKFLOW, QUERY) is None, bit


@pytest.mark.parametrize(
    "cursor",
    ["", "%%%", "MTIzNA", "a" * 43, "a" * 44, "é" * 43, " " * 43],
    ids=["empty", "not-base64", "an-old-plain-cursor", "forged", "too-long", "non-ascii", "blank"],
)
def test_malformed_or_forged_cursors_are_refused(cursor):
    assert Cursors(SECRET).unseal(cursor, WORKFLOW, QUERY) is None


def test_a_cursor_with_padding_or_stray_characters_is_refused():
    cursors = Cursors(SECRET)
    cursor = cursors.seal(1234, WORKFLOW, QUERY)
    for variant in (cursor + "=", cursor[:20] + "." + cursor[20:], " " + cursor):
        assert cursors.unseal(variant, WORKFLOW, QUERY) is None, variant


def test_a_cursor_of_one_workflow_is_refused_by_another():
    cursors = Cursors(SECRET)
    assert cursors.unseal(cursors.seal(1234, WORKFLOW, QUERY), WORKFLOW + 1, QUERY) is None


def test_a_cursor_of_one_query_is_refused_by_another():
    cursors = Cursors(SECRET)
    cursor = cursors.seal(1234, WORKFLOW, QUERY)
    for other in ([], [("Stage", "Lost")], [("Stage", "Won"), ("Company ID", "42")]):
        assert cursors.unseal(cursor, WORKFLOW, query_digest(other)) is None, other


def test_the_order_of_filters_does_not_change_the_query():
    assert query_digest([("a", "1"), ("b", "2")]) == query_digest([("b", "2"), ("a", "1")])
    assert query_digest([("a", "1"), ("a", "1")]) != query_digest([("a", "1")])


def test_a_cursor_sealed_with_another_secret_is_refused():
    cursor = Cursors(b"another secret").seal(1234, WORKFLOW, QUERY)
    assert Cursors(SECRET).unseal(cursor, WORKFLOW, QUERY) is None


def test_cursors_reveal_neither_the_task_id_nor_the_distance_between_two():
    cursors = Cursors(SECRET)
    first, second = cursors.seal(1000, WORKFLOW, QUERY), cursors.seal(1001, WORKFLOW, QUERY)
    again = cursors.seal(1000, WORKFLOW, QUERY)
    assert len({first, second, again}) == 3  # a fresh nonce each time: equal ids look unrelated
    for cursor, task_id in ((first, 1000), (second, 1001)):
        raw = _raw(cursor)
        for order in ("big", "little"):
            for width in (2, 4, 8):
                assert task_id.to_bytes(width, order) not in raw
        assert str(task_id).encode() not in raw
    masked = [int.from_bytes(_raw(c)[12:20], "big") for c in (first, second)]
    assert masked[0] ^ masked[1] != 1000 ^ 1001
    assert abs(masked[0] - masked[1]) != 1


@pytest.mark.parametrize("task_id", [2**63, 2**64 - 1])
def test_an_id_beyond_the_task_id_range_never_comes_back(task_id):
    cursors = Cursors(SECRET)
    assert cursors.unseal(cursors.seal(task_id, WORKFLOW, QUERY), WORKFLOW, QUERY) is None


def test_a_cursor_is_43_url_safe_characters():
    cursor = Cursors(SECRET).seal(1, WORKFLOW, QUERY)
    assert len(cursor) == 43
    assert set(cursor) <= set(ALPHABET)


def test_values_are_compared_as_sent():
    assert query_digest([("N", "300")]) != query_digest([("N", "300.0")])
    assert query_digest([("a", "1,b=2")]) != query_digest([("a", "1"), ("b", "2")])
