"""One row per task: list filters are answered by the `tasks_fields` GIN index at scale."""

from __future__ import annotations

import json

from ingest.edge import filters
from ingest.edge.cursors import Cursors

#: The plan of a field filter over 100,000 tasks (bench/README.md shows it with timings).
_FILL = (
    "INSERT INTO tasks (workflow_id, public_id, unique_key, stage, fields)"
    " SELECT $1, 'p' || n, 'k' || n, 'Done',"
    "   jsonb_build_object('1', 'k' || n, '2', 'Co ' || n, '3', n % 1000, '6', n % 2 = 0)"
    " FROM generate_series(1, 100000) AS n"
)


async def _plan(pool, workflow, query):
    page = filters.page_query(workflow, query, Cursors(b"k" * 32))
    plan = await pool.fetchval(f"EXPLAIN (FORMAT JSON) {page.sql}", *page.params)
    return json.dumps(json.loads(plan) if isinstance(plan, str) else plan)


async def test_field_filters_use_the_gin_index_at_100k_tasks(pool, make_workflow):
    workflow, _ = await make_workflow()
    await pool.execute(_FILL, workflow.id)
    await pool.execute("ANALYZE tasks")

    for query in (
        [("Number of Employees", "42")],
        [("Company Name", "Co 77"), ("Stage", "Done")],
    ):
        plan = await _plan(pool, workflow, query)
        assert '"Index Name": "tasks_fields"' in plan, plan

    page = await filters.list_tasks(
        pool, workflow, [("Number of Employees", "42.0")], Cursors(b"k" * 32)
    )
    assert len(page.tasks) == 100
    assert {task.values[3] for task in page.tasks} == {42}
