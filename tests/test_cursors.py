"""List cursors in use: paging through a workflow's tasks, and cursors refused where they do not
belong (the codec itself: tests/unit/ingest/edge/test_cursors.py)."""

from __future__ import annotations

import asyncio
import base64

from tests.conftest import SEED_REQUEST, wait_until


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
