"""Signed request ids (ingest.edge.request_ids): a status URL's id names one request of one
workflow, and no other id, altered or forged, passes for it."""

from __future__ import annotations

import uuid

import pytest

from ingest.edge.request_ids import RequestIds

KEY = b"k" * 32
ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


@pytest.mark.parametrize("request_id", [uuid.UUID(int=0), uuid.UUID(int=2**128 - 1), uuid.uuid4()])
@pytest.mark.parametrize("workflow_id", [1, 2**62])
def test_a_public_id_parses_back_to_its_request(request_id, workflow_id):
    ids = RequestIds(KEY)
    public = ids.public(request_id, workflow_id)
    assert ids.parse(public, workflow_id) == request_id
    assert len(public) == 35
    assert set(public) <= set(ALPHABET)


def test_the_same_request_always_has_the_same_public_id():
    request_id = uuid.uuid4()
    assert RequestIds(KEY).public(request_id, 1) == RequestIds(KEY).public(request_id, 1)


def test_a_public_id_of_one_workflow_is_nothing_in_another():
    ids = RequestIds(KEY)
    assert ids.parse(ids.public(uuid.uuid4(), 1), 2) is None


def test_a_public_id_signed_with_another_key_is_refused():
    public = RequestIds(b"another key").public(uuid.uuid4(), 1)
    assert RequestIds(KEY).parse(public, 1) is None


def test_every_altered_character_is_refused():
    ids = RequestIds(KEY)
    public = ids.public(uuid.uuid4(), 1)
    for position, original in enumerate(public):
        for replacement in ALPHABET.replace(original, ""):
            altered = public[:position] + replacement + public[position + 1 :]
            assert ids.parse(altered, 1) is None, (position, replacement)


@pytest.mark.parametrize(
    "public",
    ["", "x", "a" * 34, "a" * 35, "a" * 36, uuid.uuid4().hex, str(uuid.uuid4()), "é" * 35],
)
def test_malformed_or_unsigned_ids_are_refused(public):
    assert RequestIds(KEY).parse(public, 1) is None


def test_padding_or_stray_characters_are_refused():
    ids = RequestIds(KEY)
    public = ids.public(uuid.uuid4(), 1)
    for variant in (public + "=", " " + public, public[:10] + "." + public[11:], public.upper()):
        if variant != public:
            assert ids.parse(variant, 1) is None, variant
