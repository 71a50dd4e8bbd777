"""List cursors are opaque: sealed, bound to their workflow and filters, and revealing no ids."""

from __future__ import annotations

import asyncio
import base64
import string

import pytest

from ingest.edge.cursors import Cursors, query_digest
from tests.conftest import SEED_REQUEST, wait_until

SECRET = b"s" * 32
WORKFLOW = 7
QUERY = query_digest([("Stage", "Won")])
ALPHABET = string.ascii_letters + string.digits + "-_"


def _raw(cursor: str) -> bytes:
    return base64.urlsafe_b64decode(cursor + "=")


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


# ----------------------------------------------------------------------------------- the codec


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


# -------------------------------------------------------------------------------- the service


def url(token, suffix=""):
    return f"/api/v1/workflows/{token}/tasks{suffix}"


def _next(response):
    """The path and query of the `Link: <…>; rel="next"` header, or None on the last page."""
    link = response.links.get("next")
    return None if link is None else link["url"].path_qs


async def _seed(client, token, count, prefix="c"):
    async def post(n):
        body = {**SEED_REQUEST, "Company ID": f"{prefix}{n:03d}"}
        response = await client.post(url(token), json=body, headers={"Prefer": "respond-async"})
        assert response.status == 202, await response.text()

    for start in range(0, count, 50):
        await asyncio.gather(*(post(n) for n in range(start, min(start + 50, count))))

    async def all_listed():
        tasks = await (await client.get(url(token, "?limit=1000"))).json()
        return tasks if len(tasks) == count else None

    return [t["Company ID"] for t in await wait_until(all_listed, within=60)]


async def _first_cursor(client, token, query="?limit=1"):
    response = await client.get(url(token, query))
    assert response.status == 200
    return response.headers["X-Next-Cursor"]


async def _assert_refused(client, token, query):
    response = await client.get(url(token, query))
    assert response.status == 400, query
    body = await response.json()
    assert body["error"] == "invalid_filter"
    assert "cursor" in body["message"]


async def test_paging_through_250_tasks_by_100_yields_every_task_once_in_order(
    client, worker, make_workflow
):
    _, token = await make_workflow()
    listed = await _seed(client, token, 250)
    seen, pages, next_url = [], [], url(token, "?limit=100")
    while next_url:
        response = await client.get(next_url)
        assert response.status == 200
        page = [t["Company ID"] for t in await response.json()]
        seen += page
        pages.append(len(page))
        next_url = _next(response)
    assert pages == [100, 100, 50]
    assert seen == listed
    assert sorted(seen) == [f"c{n:03d}" for n in range(250)]


async def test_a_cursor_used_with_other_filters_is_400(client, worker, make_workflow):
    _, token = await make_workflow()
    await _seed(client, token, 3)
    cursor = await _first_cursor(client, token, "?Stage=In%20Progress&limit=1")
    assert (await client.get(url(token, f"?Stage=In%20Progress&cursor={cursor}"))).status == 200
    assert (await client.get(url(token, f"?limit=1&cursor={cursor}&Stage=In%20Progress"))).ok
    for query in ("", "&Stage=Done", "&Stage=In%20Progress&Company%20ID=c001"):
        await _assert_refused(client, token, f"?cursor={cursor}{query}")


async def test_a_cursor_used_on_another_workflow_is_400(client, worker, make_workflow):
    _, token_a = await make_workflow()
    _, token_b = await make_workflow()
    await _seed(client, token_a, 2, prefix="a")
    await _seed(client, token_b, 2, prefix="b")
    cursor = await _first_cursor(client, token_a)
    assert (await client.get(url(token_a, f"?cursor={cursor}"))).status == 200
    await _assert_refused(client, token_b, f"?cursor={cursor}")


async def test_a_tampered_or_plain_id_cursor_is_400(client, worker, make_workflow):
    _, token = await make_workflow()
    await _seed(client, token, 2)
    cursor = await _first_cursor(client, token)
    for position in (0, 15, 30, len(cursor) - 1):
        swapped = "A" if cursor[position] != "A" else "B"
        await _assert_refused(
            client, token, f"?cursor={cursor[:position]}{swapped}{cursor[position + 1 :]}"
        )
    plain = base64.urlsafe_b64encode(b"1").decode().rstrip("=")  # the old, unsigned format
    await _assert_refused(client, token, f"?cursor={plain}")


async def test_a_cursor_keeps_its_place_when_only_the_limit_changes(client, worker, make_workflow):
    _, token = await make_workflow()
    listed = await _seed(client, token, 5)
    cursor = await _first_cursor(client, token, "?limit=2")
    response = await client.get(url(token, f"?limit=10&cursor={cursor}"))
    assert response.status == 200
    assert [t["Company ID"] for t in await response.json()] == listed[2:]
