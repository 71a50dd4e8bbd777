"""Signed request ids (ingest.edge.request_ids): a status URL's id names one request of one
workflow, and no other id, altered or forged, passes for it."""

from __future__ import annotations

import hashlib
import hmac
import uuid

import pytest

from ingest import opaque
from ingest.edge.request_ids import IssuedRequest, RequestIds
from ingest.messages import Operation, TaskRequest

KEY = b"k" * 32
ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


@pytest.mark.parametrize("request_id", [uuid.UUID(int=0), uuid.UUID(int=2**128 - 1), uuid.uuid4()])
@pytest.mark.parametrize("workflow_id", [1, 2**62])
def test_a_public_id_parses_back_to_its_request(request_id, workflow_id):
    ids = RequestIds(KEY)
    public = ids.public(request_id, workflow_id)
    assert ids.parse(public, workflow_id) == request_id
    assert len(public) == 42
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


# ------------------------------------------------------------------ when the request was issued

DAY = 86_400
NOON = 1_767_225_600 + DAY // 2  # 2026-01-01T12:00:00Z


def test_an_id_says_by_when_its_request_was_issued():
    ids = RequestIds(KEY)
    request_id = uuid.uuid4()
    public = ids.public(request_id, 1, issued_at=NOON + 0.25)
    assert ids.read(public, 1) == IssuedRequest(request_id, keyed=False, issued_by=NOON + 1.0)


def test_a_keyed_id_says_only_its_day_so_every_retry_that_day_gets_the_same_id():
    ids = RequestIds(KEY)
    request_id = uuid.uuid4()
    morning = ids.public(request_id, 1, issued_at=NOON - 11 * 3600, keyed=True)
    evening = ids.public(request_id, 1, issued_at=NOON + 11 * 3600, keyed=True)
    assert morning == evening
    # Taken at the end of its day: a keyed result is purged no sooner than it says.
    assert ids.read(morning, 1) == IssuedRequest(request_id, keyed=True, issued_by=NOON + DAY / 2)


def test_the_issue_time_is_signed():
    ids = RequestIds(KEY)
    request_id = uuid.uuid4()
    signed = opaque.decode(ids.public(request_id, 1, issued_at=NOON), 31)
    assert signed is not None
    older = bytearray(signed)
    older[17:21] = (NOON - 30 * DAY).to_bytes(4, "big")  # to have its result taken as purged
    keyed = bytearray(signed)
    keyed[16] = 1  # to pass for keyed (kept longer, its time read as a day)
    for forged in (older, keyed):
        assert ids.read(opaque.encode(bytes(forged)), 1) is None


def test_an_id_of_the_older_form_still_parses_as_issued_at_an_unknown_time():
    request_id = uuid.uuid4()
    mac = hmac.new(KEY, request_id.bytes + (1).to_bytes(8, "big"), hashlib.sha256).digest()
    older = opaque.encode(request_id.bytes + mac[:10])
    assert len(older) == 35
    ids = RequestIds(KEY)
    assert ids.read(older, 1) == IssuedRequest(request_id, keyed=None, issued_by=None)
    assert ids.parse(older, 1) == request_id
    assert ids.read(older, 2) is None


def test_a_task_request_s_id_is_issued_when_the_edge_received_it():
    ids = RequestIds(KEY)
    keyed = TaskRequest(
        id=uuid.uuid4(),
        workflow_id=3,
        workflow_version=1,
        operation=Operation.UPSERT,
        body="{}",
        received_at=NOON,
        idempotent=True,
    )
    assert ids.of(keyed) == ids.public(keyed.id, 3, issued_at=NOON, keyed=True)
    issued = ids.read(ids.of(keyed), 3)
    assert issued is not None
    assert issued.keyed is True
