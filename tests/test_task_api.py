"""The rest of Flowdash's task API: list with filters and pages, get, update, delete."""

from __future__ import annotations

from tests.conftest import SEED_REQUEST


def url(token, suffix=""):
    return f"/api/v1/workflows/{token}/tasks{suffix}"


async def _seed(client, token):
    bodies = [
        {**SEED_REQUEST, "Company ID": "42"},
        {
            **SEED_REQUEST,
            "Company ID": "43",
            "Company Name": "XYZ Inc.",
            "Stage": "Not Started",
            "Assigned To": None,
            "Number of Employees": 300,
            "International?": True,
        },
        {**SEED_REQUEST, "Company ID": "44", "Stage": "Not Started", "Assigned To": None},
    ]
    for body in bodies:
        assert (await client.post(url(token), json=body)).status == 201


async def test_list_returns_a_json_array_of_flowdash_tasks(client, worker, make_workflow):
    _, token = await make_workflow()
    await _seed(client, token)
    response = await client.get(url(token))
    assert response.status == 200
    tasks = await response.json()
    assert [t["Company ID"] for t in tasks] == ["42", "43", "44"]
    assert tasks[1]["Number of Employees"] == "300"


async def test_an_empty_filter_value_matches_null(client, worker, make_workflow):
    _, token = await make_workflow()
    await _seed(client, token)
    response = await client.get(url(token, "?Assigned%20To=&Stage=Not%20Started"))
    assert [t["Company ID"] for t in await response.json()] == ["43", "44"]


async def test_filters_on_any_field_compare_by_type(client, worker, make_workflow):
    _, token = await make_workflow()
    await _seed(client, token)
    cases = {
        "?Stage=In%20Progress&Company%20ID=42": ["42"],
        "?Number%20of%20Employees=300.0": ["43"],
        "?International%3F=true": ["43"],
        "?Expected%20Close%20Date=2020-01-31": ["42", "43", "44"],
        "?Company%20Name=Nobody": [],
    }
    for query, expected in cases.items():
        tasks = await (await client.get(url(token, query))).json()
        assert [t["Company ID"] for t in tasks] == expected, query


async def test_bad_filters_are_400(client, worker, make_workflow):
    _, token = await make_workflow()
    for query in ("?Colour=red", "?Number%20of%20Employees=many", "?limit=0", "?cursor=%%%"):
        response = await client.get(url(token, query))
        assert response.status == 400, query
        assert (await response.json())["error"] == "invalid_filter"


async def test_cursor_pagination_walks_every_task_once(client, worker, make_workflow):
    _, token = await make_workflow()
    for n in range(7):
        await client.post(url(token), json={**SEED_REQUEST, "Company ID": f"p{n}"})
    seen, next_url = [], url(token, "?limit=3")
    while next_url:
        response = await client.get(next_url)
        seen += [t["Company ID"] for t in await response.json()]
        link = response.headers.get("Link")
        next_url = (
            link.split(";")[0].strip("<>").split("://", 1)[1].split("/", 1)[1] if link else None
        )
        next_url = "/" + next_url if next_url else None
    assert seen == [f"p{n}" for n in range(7)]


async def test_delete_is_204_then_the_task_is_gone(client, worker, make_workflow, pool):
    _, token = await make_workflow()
    await _seed(client, token)
    response = await client.delete(url(token, "/42"))
    assert response.status == 204
    assert await response.read() == b""
    assert (await client.get(url(token, "/42"))).status == 404
    assert (await client.delete(url(token, "/42"))).status == 404
    assert await pool.fetchval("SELECT count(*) FROM tasks") == 2


async def test_put_accepts_numbers_given_as_strings(client, worker, make_workflow):
    _, token = await make_workflow()
    await _seed(client, token)
    response = await client.put(url(token), json={"Company ID": "42", "Contract Value": "12.50"})
    assert response.status == 200
    assert (await response.json())["Contract Value"] == "12.50"


async def test_a_task_can_be_deleted_and_created_again(client, worker, make_workflow):
    _, token = await make_workflow()
    await _seed(client, token)
    assert (await client.delete(url(token, "/44"))).status == 204
    response = await client.post(url(token), json={**SEED_REQUEST, "Company ID": "44"})
    assert response.status == 201


async def test_multiple_select_values_are_created_updated_and_cleared(
    client, worker, make_workflow
):
    definition = {
        "name": "Tags",
        "fields": [
            {"name": "Code", "type": "text", "required": True},
            {"name": "Tags", "type": "multipleSelect", "options": ["a", "b", "c"]},
        ],
        "unique_id": "Code",
    }
    _, token = await make_workflow(definition)
    created = await client.post(url(token), json={"Code": "1", "Tags": ["a", "b"]})
    assert (created.status, (await created.json())["Tags"]) == (201, ["a", "b"])
    updated = await client.post(url(token), json={"Code": "1", "Tags": ["c"]})
    assert (updated.status, (await updated.json())["Tags"]) == (200, ["c"])
    emptied = await client.post(url(token), json={"Code": "1", "Tags": []})
    assert (emptied.status, (await emptied.json())["Tags"]) == (200, [])
    cleared = await client.post(url(token), json={"Code": "1", "Tags": None})
    assert (cleared.status, (await cleared.json())["Tags"]) == (200, None)
    stored = await (await client.get(url(token, "/1"))).json()
    assert stored["Tags"] is None


async def test_members_are_read_in_any_case_as_they_are_written(client, worker, make_workflow):
    _, token = await make_workflow(
        {
            "name": "Owners",
            "fields": [{"name": "Owner", "type": "person"}],
            "unique_id": "Owner",
            "stages": ["New"],
            "members": ["Ann@Example.com"],
        }
    )
    body = {"Owner": "ANN@example.COM", "Assigned To": "ann@EXAMPLE.com"}
    created = await client.post(url(token), json=body)
    assert created.status == 201
    assert (await created.json())["Owner"] == "Ann@Example.com"
    got = await client.get(url(token, "/aNN%40example.com"))
    assert got.status == 200
    for query in ("?Owner=ann%40example.com", "?Assigned%20To=ANN%40EXAMPLE.COM"):
        tasks = await (await client.get(url(token, query))).json()
        assert [t["Owner"] for t in tasks] == ["Ann@Example.com"], query
    assert await (await client.get(url(token, "?Owner=bob%40example.com"))).json() == []
