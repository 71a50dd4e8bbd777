"""List queries (ingest.edge.filters): each filter becomes one condition on its field's stored
form, paging parameters are checked, and a cursor is bound to the filters but not the limit."""

from __future__ import annotations

import pytest

from ingest.edge.cursors import Cursors
from ingest.edge.filters import DEFAULT_LIMIT, MAX_LIMIT, InvalidFilter, page_query
from ingest.workflows import Workflow, WorkflowDefinition
from tests.conftest import SALES

CURSORS = Cursors(b"c" * 32)
WORKFLOW = Workflow(
    id=11,
    public_id="wf",
    version=1,
    definition=WorkflowDefinition.parse({**SALES, "members": ["Ann@Example.com"]}),
)
IDS = {spec.name: spec.id for spec in WORKFLOW.definition.fields}


def _query(*pairs: tuple[str, str]):
    return page_query(WORKFLOW, list(pairs), CURSORS)


def test_no_filter_lists_the_workflows_tasks_a_default_page_at_a_time():
    page = _query()
    assert page.params == [WORKFLOW.id]
    assert page.limit == DEFAULT_LIMIT
    assert page.sql.endswith(f"WHERE t.workflow_id = $1 ORDER BY t.id LIMIT {DEFAULT_LIMIT + 1}")


@pytest.mark.parametrize("limit", ["1", str(MAX_LIMIT), "0042"])
def test_a_limit_from_one_to_the_most_is_taken(limit):
    assert _query(("limit", limit)).limit == int(limit)


@pytest.mark.parametrize("limit", ["0", str(MAX_LIMIT + 1), "-1", "", "ten", "1.5", "٣", " 5"])
def test_any_other_limit_is_refused(limit):
    with pytest.raises(InvalidFilter, match="limit"):
        _query(("limit", limit))


def test_a_field_filter_matches_the_fields_stored_form():
    page = _query(("Number of Employees", "10.0"), ("International?", "TRUE"))
    employees, international = IDS["Number of Employees"], IDS["International?"]
    assert page.params[1:] == [f'{{"{employees}":10.0}}', f'{{"{international}":true}}']
    assert page.sql.count("t.fields @> $") == 2


def test_an_empty_value_matches_tasks_where_it_is_unset():
    page = _query(("Contract Value", ""), ("Stage", ""), ("Assigned To", ""))
    assert "NOT t.fields ? $2" in page.sql
    assert page.params[1] == str(IDS["Contract Value"])
    assert "t.stage IS NULL" in page.sql
    assert "t.assigned_to IS NULL" in page.sql


def test_built_in_filters_compare_as_writes_store_them():
    page = _query(("Stage", "Done"), ("Assigned To", "ann@EXAMPLE.com"))
    assert page.params[1:] == ["Done", "Ann@Example.com"]


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("Colour", "red", "'Colour' is not a field"),
        ("Number of Employees", "ten", "is not a valid number"),
        ("Expected Close Date", "2020-02-30", "is not a valid date"),
        ("International?", "yes", "is not a valid checkbox"),
        ("Company ID", "a\x00b", "NUL"),
        ("Stage", "\x00", "NUL"),
    ],
)
def test_a_filter_naming_no_field_or_a_value_its_field_cannot_hold_is_refused(name, value, message):
    with pytest.raises(InvalidFilter, match=message):
        _query((name, value))


def test_a_cursor_continues_after_its_task_whatever_the_limit():
    first = _query(("Stage", "Done"), ("limit", "2"))
    cursor = CURSORS.seal(41, WORKFLOW.id, first.digest)
    page = _query(("Stage", "Done"), ("limit", "9"), ("cursor", cursor))
    assert page.digest == first.digest
    assert "t.id > $3" in page.sql
    assert page.params[2] == 41


@pytest.mark.parametrize(
    "query",
    [[("Stage", "Won")], [], [("Stage", "Done"), ("Company ID", "42")]],
)
def test_a_cursor_used_with_other_filters_is_refused(query):
    cursor = CURSORS.seal(41, WORKFLOW.id, _query(("Stage", "Done")).digest)
    with pytest.raises(InvalidFilter, match="cursor"):
        _query(*query, ("cursor", cursor))


def test_a_forged_cursor_is_refused():
    with pytest.raises(InvalidFilter, match="cursor"):
        _query(("cursor", "1"))
