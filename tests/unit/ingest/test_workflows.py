"""Workflow definitions (ingest.workflows, SPEC §3): what a definition may say, the bounds a new
one keeps, numbering of field ids, and the example and schema shown for a workflow."""

from __future__ import annotations

import shlex
from typing import Any

import jsonschema
import pytest

from ingest.errors import DefinitionError
from ingest.fields import FieldType, kind_of
from ingest.workflows import (
    MAX_FIELD_ID,
    MAX_OPTION_CHARS,
    MAX_STAGE_CHARS,
    Workflow,
    WorkflowDefinition,
    created_document,
    example,
    example_curl,
    example_payload,
    hash_token,
    import_url,
    new_token,
    task_schema,
)
from tests.conftest import SALES

MEMBERS = ("ann@example.com",)


def problems_of(definition):
    with pytest.raises(DefinitionError) as caught:
        WorkflowDefinition.parse(definition)
    return " | ".join(caught.value.problems)


def test_every_flowdash_field_type_is_accepted():
    fields = [
        {
            "name": kind.value,
            "type": kind.value,
            **({"options": ["a", "b"]} if "Select" in kind.value else {}),
        }
        for kind in FieldType
    ]
    definition = WorkflowDefinition.parse({"name": "All", "fields": fields, "members": ["a@b.co"]})
    assert [spec.type for spec in definition.fields] == list(FieldType)
    assert [spec.id for spec in definition.fields] == list(range(1, len(FieldType) + 1))


def test_unknown_type_is_named():
    assert "unknown field type 'colour'" in problems_of(
        {"name": "x", "fields": [{"name": "a", "type": "colour"}]}
    )


def test_duplicate_names_are_refused():
    fields = [{"name": "a", "type": "text"}, {"name": "a", "type": "number"}]
    assert "used more than once" in problems_of({"name": "x", "fields": fields})


def test_built_in_names_cannot_be_redefined():
    assert "built-in" in problems_of({"name": "x", "fields": [{"name": "Stage", "type": "text"}]})


def test_unique_id_must_name_a_field():
    assert "names no field" in problems_of({"name": "x", "fields": [], "unique_id": "Company ID"})


def test_select_without_options_is_refused():
    assert "needs a non-empty 'options'" in problems_of(
        {"name": "x", "fields": [{"name": "Region", "type": "singleSelect"}]}
    )


def test_empty_stage_list_is_refused():
    assert "at least one stage" in problems_of({"name": "x", "stages": []})


def test_members_must_be_emails():
    assert "not an email" in problems_of({"name": "x", "members": ["bob"]})


def test_several_problems_are_reported_together():
    problems = problems_of(
        {
            "name": "x",
            "fields": [{"name": "R", "type": "multipleSelect"}],
            "unique_id": "Q",
            "stages": [],
        }
    )
    assert "needs a non-empty 'options'" in problems
    assert "names no field" in problems
    assert "at least one stage" in problems


def test_example_payload_reflects_the_schema():
    definition = WorkflowDefinition.parse(
        {
            **SALES,
            "fields": [
                *SALES["fields"],
                {"name": "Region", "type": "singleSelect", "options": ["EMEA"]},
            ],
        }
    )
    payload = example_payload(definition)
    assert set(payload) == {spec.name for spec in definition.fields} | {"Stage", "Assigned To"}
    assert payload["Region"] == "EMEA"
    assert payload["Stage"] == "Not Started"
    assert isinstance(payload["International?"], bool)


# ----------------------------------------------------------------------------- definition bounds


def test_a_given_field_id_that_pushes_numbering_past_the_bound_is_refused():
    fields = [{"name": "a", "type": "text", "id": MAX_FIELD_ID}, {"name": "b", "type": "text"}]
    assert "field 'b' has id 100001, beyond the largest field id" in problems_of(
        {"name": "x", "fields": fields}
    )


def test_the_largest_field_id_itself_is_accepted():
    fields = [{"name": "b", "type": "text"}, {"name": "a", "type": "text", "id": MAX_FIELD_ID}]
    definition = WorkflowDefinition.parse({"name": "x", "fields": fields[1:]})
    assert [spec.id for spec in definition.fields] == [MAX_FIELD_ID]


@pytest.mark.parametrize(
    ("definition", "problem"),
    [
        ({"stages": ["s" * (MAX_STAGE_CHARS + 1)]}, "is longer than 200 characters"),
        ({"stages": [f"s{n}" for n in range(101)]}, "'stages' lists 101; at most 100"),
        ({"members": [f"m{n}@example.com" for n in range(1001)]}, "'members' lists 1001"),
        ({"members": ["a\n@b.c"]}, "is not an email address"),
        ({"members": ["a@b..c"]}, "is not an email address"),
        ({"members": [""]}, "member '' is not an email address"),
        (
            {"fields": [{"name": "R", "type": "singleSelect", "options": ["o" * 501]}]},
            f"is longer than {MAX_OPTION_CHARS} characters",
        ),
        (
            {
                "fields": [
                    {"name": "R", "type": "singleSelect", "options": [str(n) for n in range(1001)]}
                ]
            },
            "field 'R' lists 1001 options; at most 1000",
        ),
        ({"fields": [{"name": "R", "type": "singleSelect", "options": [" "]}]}, "is blank"),
        ({"stages": ["a\x00b"]}, "contains a NUL character"),
        ({"fields": [{"name": "a\x00", "type": "text"}]}, "cannot contain NUL"),
        ({"fields": [{"name": "a", "type": "text", "id": 2**31}]}, "less than or equal to"),
    ],
)
def test_new_definitions_keep_count_and_length_bounds(definition, problem):
    assert problem in problems_of({"name": "x", **definition})


def test_a_stored_definition_beyond_todays_bounds_still_loads():
    stored = {
        "name": "Old",
        "fields": [{"name": "a", "type": "text", "id": MAX_FIELD_ID + 1}],
        "stages": ["s" * 3200],
        "members": ["bob@localhost"],
    }
    definition = WorkflowDefinition.model_validate(stored)
    assert definition.fields[0].id == MAX_FIELD_ID + 1
    with pytest.raises(DefinitionError):
        WorkflowDefinition.parse(stored)


def test_what_parse_accepts_is_what_is_stored_and_reads_back():
    definition = WorkflowDefinition.parse(
        {
            "name": "x",
            "fields": [{"name": "a", "type": "text", "id": 7}, {"name": "b", "type": "number"}],
        }
    )
    stored = definition.model_dump(mode="json")
    assert WorkflowDefinition.model_validate(stored) == definition
    assert [spec.id for spec in definition.fields] == [7, 8]


def test_a_workflows_sample_task_passes_its_task_schema():
    definition = WorkflowDefinition.parse(
        {
            "name": "Every type",
            "stages": ["New"],
            "members": list(MEMBERS),
            "fields": [
                {
                    "name": f"F {t}",
                    "type": t,
                    "options": ["S", "M"] if kind_of(t).has_options else [],
                }
                for t in FieldType
            ],
        }
    )
    schema = task_schema(definition)
    jsonschema.validate(example_payload(definition), schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"F number": "ten"}, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"Nope": 1}, schema)


# ------------------------------------------------------------------------------ stored workflows


def _workflow(definition: dict[str, Any] = SALES) -> Workflow:
    return Workflow(
        id=1, public_id="wf", version=3, definition=WorkflowDefinition.parse(definition)
    )


def test_fields_without_an_id_are_numbered_after_the_largest_id_given():
    definition = WorkflowDefinition.parse(
        {
            "name": "x",
            "fields": [
                {"name": "a", "type": "text"},
                {"name": "b", "type": "text", "id": 40},
                {"name": "c", "type": "text"},
            ],
        }
    )
    assert [spec.id for spec in definition.fields] == [41, 40, 42]
    assert definition.with_field_ids() == definition


def test_a_definition_given_twice_gets_the_same_ids():
    assert WorkflowDefinition.parse(SALES) == WorkflowDefinition.parse(SALES)


def test_the_unique_field_is_the_field_the_definition_names():
    workflow = _workflow()
    assert workflow.unique_field is not None
    assert workflow.unique_field.name == "Company ID"
    assert _workflow({"name": "x"}).unique_field is None
    assert workflow.field("Nope") is None
    assert workflow.default_stage == "Not Started"


def test_a_workflow_summary_shows_no_token():
    summary = _workflow().summary("http://h")
    assert summary["id"] == "wf"
    assert summary["version"] == 3
    assert summary["import_url"] == "http://h/api/v1/workflows/<token>/tasks"
    assert "token" not in summary


def test_a_created_workflow_shows_its_token_once_with_its_example():
    token = new_token()
    document = created_document(_workflow(), token, "http://h")
    assert document["token"] == token
    assert document["import_url"] == import_url("http://h", token)
    assert token in document["example_curl"]
    assert document["task_schema"] == task_schema(_workflow().definition)


def test_tokens_are_long_random_and_stored_as_their_sha256():
    tokens = {new_token() for _ in range(100)}
    assert len(tokens) == 100
    assert all(len(token) == 43 for token in tokens)
    assert len(hash_token("t")) == 32
    assert hash_token("t") != hash_token("T")
    assert hash_token("\ud800")  # a lone surrogate in a path still hashes (and matches nothing)


def test_the_example_curl_quotes_what_the_shell_would_read():
    payload = {"Company Name": "O'Brien & Sons; rm -rf /", "Notes": "$(date) `id`"}
    curl = example_curl("http://h/api/v1/workflows/t/tasks?a=1&b=2", payload)
    words = shlex.split(curl.replace("\\\n", " "))
    assert words[:3] == ["curl", "-X", "POST"]
    assert words[3] == "http://h/api/v1/workflows/t/tasks?a=1&b=2"
    assert words[-2:] == [
        "-d",
        '{"Company Name":"O\'Brien & Sons; rm -rf /","Notes":"$(date) `id`"}',
    ]


def test_the_example_shows_url_payload_curl_and_schema():
    definition = WorkflowDefinition.parse(SALES)
    shown = example(definition, "http://h/x")
    assert shown["import_url"] == "http://h/x"
    assert shown["example_payload"] == example_payload(definition)
    jsonschema.validate(shown["example_payload"], shown["task_schema"])
    assert shown["task_schema"]["x-required-on-create"] == ["Company ID", "Company Name"]


def test_a_task_schema_allows_null_to_clear_a_field_but_no_unknown_stage():
    schema = task_schema(WorkflowDefinition.parse(SALES))
    jsonschema.validate({"Company Name": None, "Assigned To": None}, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"Stage": "Lost"}, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"Stage": None}, schema)
