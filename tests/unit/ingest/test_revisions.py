"""Workflow revisions (ingest.revisions, SPEC §8): which field a changed field is, the ids new
fields get, the type changes allowed, the Unique ID, and every problem listed at once."""

from __future__ import annotations

from typing import Any

import pytest

from ingest.errors import DefinitionError
from ingest.fields import FieldSpec, FieldType, kind_of
from ingest.revisions import (
    CHANGE_KEYS,
    SAFE_TYPE_CHANGES,
    FieldChange,
    Revision,
    WorkflowChange,
    rekeying_refused,
    revise,
)
from ingest.values import MAX_EMAIL_CHARS, MAX_PHONE_CHARS, MAX_TEXT_CHARS, MAX_URL_CHARS
from ingest.workflows import MAX_OPTION_CHARS, WorkflowDefinition
from tests.conftest import SALES

CURRENT = WorkflowDefinition.parse(SALES)  # ids 1..6, Unique ID "Company ID" (id 1)


def fields_of(current: WorkflowDefinition = CURRENT) -> list[dict[str, Any]]:
    return [spec.model_dump(mode="json") for spec in current.fields]


def without_ids() -> list[dict[str, Any]]:
    """The current fields as a definition file lists them: matched by name."""
    return [{k: v for k, v in spec.items() if k != "id"} for spec in fields_of()]


def ids_by_name(revision: Revision) -> dict[str, int]:
    return {spec.name: spec.id for spec in revision.definition.fields}


def problems_of(change: object, current: WorkflowDefinition = CURRENT, last: int = 0) -> str:
    with pytest.raises(DefinitionError) as caught:
        revise(current, last, change)
    return " | ".join(caught.value.problems)


# ------------------------------------------------------------------------------- keys of a change


def test_a_change_replaces_only_the_keys_it_holds() -> None:
    revision = revise(CURRENT, 0, {"name": "Deals", "stages": ["Lead", "Won"]})
    assert revision.definition.name == "Deals"
    assert revision.definition.stages == ("Lead", "Won")
    assert revision.definition.fields == CURRENT.fields
    assert revision.definition.members == CURRENT.members
    assert (revision.changed, revision.rekeys) == (True, False)


def test_a_change_that_changes_nothing_says_so() -> None:
    assert not revise(CURRENT, 0, {}).changed
    assert not revise(CURRENT, 0, {"fields": fields_of(), "name": CURRENT.name}).changed


def test_the_keys_a_change_may_hold_are_a_definitions() -> None:
    assert set(CHANGE_KEYS) == set(WorkflowDefinition.model_fields)
    assert set(WorkflowChange.__optional_keys__) == set(CHANGE_KEYS)
    assert set(FieldChange.model_fields) == {"renamed_from", *FieldSpec.model_fields}


def test_unknown_keys_and_a_change_that_is_no_object_are_refused() -> None:
    assert "'id' is not a key of a definition" in problems_of({"id": "x", "name": "y"})
    assert "a change is an object" in problems_of(["name"])


def test_invalid_values_are_refused_as_a_new_definition_would_be() -> None:
    problems = problems_of({"stages": [], "members": ["not an e-mail"]})
    assert "at least one stage" in problems
    assert "member 'not an e-mail' is not an email address" in problems
    assert "name: String should have at least 1 character" in problems_of({"name": ""})
    assert "name: Input should be a valid string" in problems_of({"name": None})


# ---------------------------------------------------------------------------------- field identity


def test_a_field_named_as_before_keeps_its_id_and_a_new_one_gets_a_fresh_id() -> None:
    fields = [*fields_of(), {"name": "Region", "type": "text"}]
    revision = revise(CURRENT, 0, {"fields": fields})
    assert ids_by_name(revision)["Company Name"] == 2
    assert ids_by_name(revision)["Region"] == 7
    assert revision.last_field_id == 7


def test_a_new_field_never_gets_the_id_of_a_removed_one() -> None:
    without_last = fields_of()[:-1]  # "International?" (id 6) is removed
    removed = revise(CURRENT, 0, {"fields": without_last})
    assert removed.last_field_id == 6
    added = revise(
        removed.definition,
        removed.last_field_id,
        {"fields": [*without_last, {"name": "International?", "type": "checkbox"}]},
    )
    assert ids_by_name(added)["International?"] == 7


def test_a_rename_keeps_the_id_and_the_unique_id_follows_it() -> None:
    fields = fields_of()
    fields[0] = {"name": "Company Key", "type": "text", "renamed_from": "Company ID"}
    revision = revise(CURRENT, 0, {"fields": fields})
    assert ids_by_name(revision)["Company Key"] == 1
    assert revision.definition.unique_id == "Company Key"
    assert not revision.rekeys
    assert "renamed_from" not in revision.definition.model_dump_json()


def test_fields_can_trade_names_by_renames() -> None:
    fields = fields_of()
    fields[0] = {"name": "Company Name", "type": "text", "renamed_from": "Company ID"}
    fields[1] = {"name": "Company ID", "type": "text", "renamed_from": "Company Name"}
    revision = revise(CURRENT, 0, {"fields": fields})
    assert ids_by_name(revision)["Company Name"] == 1
    assert ids_by_name(revision)["Company ID"] == 2
    assert revision.definition.unique_id == "Company Name"  # it follows its field
    assert not revision.rekeys


def test_fields_can_trade_names_by_ids() -> None:
    fields = fields_of()
    fields[0]["name"], fields[1]["name"] = "Company Name", "Company ID"
    revision = revise(CURRENT, 0, {"fields": fields, "unique_id": "Company Name"})
    assert (ids_by_name(revision)["Company Name"], ids_by_name(revision)["Company ID"]) == (1, 2)
    assert not revision.rekeys


#: The ways a field of a change can claim the current field "Company Name" (id 2), by the
#: name it gets.
CLAIMS: dict[str, Any] = {
    "by its name": lambda name: {"name": "Company Name", "type": "text"},
    "by 'renamed_from'": lambda name: {
        "name": name,
        "type": "text",
        "renamed_from": "Company Name",
    },
    "by its id 2": lambda name: {"name": name, "type": "text", "id": 2},
}


@pytest.mark.parametrize(
    ("first", "second"),
    [(a, b) for a in CLAIMS for b in CLAIMS if (a, b) != ("by its name", "by its name")],
)
def test_a_current_field_claimed_twice_is_refused_naming_both_claims(
    first: str, second: str
) -> None:
    others = [spec for spec in fields_of() if spec["name"] != "Company Name"]
    fields = [*others, CLAIMS[first]("Z"), CLAIMS[second]("Y")]
    problems = problems_of({"fields": fields})
    first_name = "Company Name" if first == "by its name" else "Z"
    second_name = "Company Name" if second == "by its name" else "Y"
    assert (
        f"fields {first_name!r} ({first}) and {second_name!r} ({second}) both stand for the "
        "current field 'Company Name'"
    ) in problems
    assert "rename or remove that field in one change and add the new one in the next" in problems


def test_a_rename_away_and_a_new_field_of_the_old_name_are_refused() -> None:
    # Taken silently, the renamed field would take the values and the new one be empty: which
    # the sender meant cannot be told.
    fields = [*fields_of(), {"name": "Z", "type": "text", "renamed_from": "Company Name"}]
    problems = problems_of({"fields": fields})
    assert "'Company Name' (by its id 2) and 'Z' (by 'renamed_from') both stand for" in problems
    fields = [*without_ids(), {"name": "Z", "type": "text", "renamed_from": "Company Name"}]
    problems = problems_of({"fields": fields})
    assert "'Company Name' (by its name) and 'Z' (by 'renamed_from') both stand for" in problems
    # As the problem advises: renamed in one change, the name is free for a new field in the next.
    renamed = revise(CURRENT, 0, {"fields": fields[:1] + fields[2:]})
    added = [*fields_of(renamed.definition), {"name": "Company Name", "type": "text"}]
    revision = revise(renamed.definition, renamed.last_field_id, {"fields": added})
    assert (ids_by_name(revision)["Z"], ids_by_name(revision)["Company Name"]) == (2, 7)


def test_an_id_given_to_another_field_than_the_one_of_its_name_is_refused() -> None:
    # The Unique ID field would silently move to "X", and "Company ID" be a new, empty field.
    fields = [*without_ids(), {"name": "X", "type": "text", "id": 1}]
    problems = problems_of({"fields": fields})
    assert "'Company ID' (by its name) and 'X' (by its id 1) both stand for the current" in problems


def test_two_fields_of_one_name_are_named_once_as_a_repeated_name() -> None:
    fields = [*fields_of(), {"name": "Company Name", "type": "text"}]
    problems = problems_of({"fields": fields})
    assert "'Company Name' is used more than once" in problems
    assert "both stand for" not in problems


def test_a_field_shown_with_its_id_may_be_renamed_by_it() -> None:
    fields = fields_of()
    fields[2]["name"] = "Headcount"  # as GET shows it: with "id": 3
    revision = revise(CURRENT, 0, {"fields": fields})
    assert ids_by_name(revision)["Headcount"] == 3


def test_matching_conflicts_are_all_listed() -> None:
    fields = [
        *fields_of(),
        {"name": "Copy", "type": "text", "renamed_from": "Company Name"},  # claimed twice
        {"name": "Ghost", "type": "text", "renamed_from": "Nothing"},
        {"name": "Forged", "type": "text", "id": 99},
        {"name": "Odd", "type": "text", "renamed_from": 7},
        {"name": "Both", "type": "text", "renamed_from": "Company ID", "id": 2},
    ]
    problems = problems_of({"fields": fields, "stages": []})
    assert "'Company Name' (by its id 2) and 'Copy' (by 'renamed_from') both stand for" in problems
    assert "renamed from 'Nothing', which is no field of this workflow" in problems
    assert "has id 99, which no current field of this workflow has" in problems
    assert "field 'Odd': 'renamed_from' must be a current field's name" in problems
    assert "its id 2 and 'renamed_from' 'Company ID' name different fields" in problems
    assert "at least one stage" in problems


def test_a_rename_onto_a_name_still_in_use_is_refused() -> None:
    fields = fields_of()
    fields.append({"name": "Company Name", "type": "text", "renamed_from": "Company ID"})
    problems = problems_of({"fields": fields, "unique_id": None})
    assert "'Company Name' is used more than once" in problems


def test_a_malformed_field_list_is_named_as_a_definitions_would_be() -> None:
    assert "fields" in problems_of({"fields": "Company ID"})
    problems = problems_of({"fields": [*fields_of(), "x", {"name": 3, "type": "text"}]})
    assert "fields.6" in problems
    assert "fields.7.name" in problems
    assert "fields.0.colour" in problems_of(
        {"fields": [{**fields_of()[0], "colour": "red"}, *fields_of()[1:]]}
    )


# ------------------------------------------------------------------------------------ type changes


@pytest.mark.parametrize(
    ("old", "new"),
    [(old, new) for old, allowed in SAFE_TYPE_CHANGES.items() for new in allowed],
    ids=str,
)
def test_safe_type_changes_are_allowed(old: FieldType, new: FieldType) -> None:
    options = ["a", "b"]
    current = WorkflowDefinition.parse(
        {
            "name": "t",
            "fields": [
                {"name": "f", "type": old, **({"options": options} if "Select" in old else {})}
            ],
            "members": ["ann@example.com"],
        }
    )
    revision = revise(current, 0, {"fields": [{"name": "f", "type": new}]})
    assert revision.definition.fields[0].type == new
    assert revision.definition.fields[0].id == 1


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("text", "email"),
        ("longText", "text"),
        ("number", "text"),
        ("checkbox", "text"),
        ("singleSelect", "multipleSelect"),
        ("multipleSelect", "text"),
        ("date", "datetime"),
    ],
)
def test_unsafe_type_changes_are_refused_with_advice(old: str, new: str) -> None:
    def spec(kind: str) -> dict[str, Any]:
        return {"name": "f", "type": kind, **({"options": ["a"]} if "Select" in kind else {})}

    current = WorkflowDefinition.parse({"name": "t", "fields": [spec(old)]})
    problems = problems_of({"fields": [spec(new)]}, current)
    assert f"field 'f' cannot change from {old} to {new}" in problems
    assert "Add a field of another name" in problems


@pytest.mark.parametrize(
    ("old", "new"),
    [(old, new) for old, allowed in SAFE_TYPE_CHANGES.items() for new in allowed],
    ids=str,
)
def test_a_value_stored_under_the_old_type_is_one_of_the_new_shown_and_filtered_alike(
    old: FieldType, new: FieldType
) -> None:
    members = ("ann@example.com",)
    before = FieldSpec(name="f", type=old, id=1, options=("a", "b") if "Select" in old else ())
    after = FieldSpec(name="f", type=new, id=1)
    stored = kind_of(old).converter(before, members)(kind_of(old).sample(before, members))
    shown = kind_of(old).render(stored)
    assert kind_of(new).render(stored) == shown
    # Written again under the new type, what was shown is valid and stored as it was.
    assert kind_of(new).converter(after, members)(shown) == stored
    assert kind_of(new).query(str(shown), members) == stored


def test_every_text_like_value_fits_a_text() -> None:
    longest = max(MAX_URL_CHARS, MAX_EMAIL_CHARS, MAX_PHONE_CHARS, MAX_OPTION_CHARS)
    assert longest <= MAX_TEXT_CHARS


# -------------------------------------------------------------------------------------- Unique ID


def test_changing_the_unique_field_rekeys() -> None:
    other = revise(CURRENT, 0, {"unique_id": "Company Name"})
    assert other.rekeys
    removed = revise(CURRENT, 0, {"unique_id": None})
    assert removed.rekeys
    assert removed.definition.unique_id is None
    keyless = removed.definition
    assert revise(keyless, 0, {"unique_id": "Company ID"}).rekeys
    assert not revise(CURRENT, 0, {"unique_id": "Company ID"}).rekeys


def test_removing_the_unique_field_needs_the_unique_id_said() -> None:
    problems = problems_of({"fields": fields_of()[1:]})
    assert "the Unique ID field 'Company ID' is removed" in problems
    revision = revise(CURRENT, 0, {"fields": fields_of()[1:], "unique_id": None})
    assert revision.rekeys


def test_the_refusal_of_a_rekeying_says_why() -> None:
    revised = revise(CURRENT, 0, {"unique_id": "Company Name"}).definition
    message = rekeying_refused(CURRENT, revised)
    assert "this workflow has tasks" in message
    assert "'Company ID'" in message
    assert "'Company Name'" in message
    assert "be removed" in rekeying_refused(
        CURRENT, revise(CURRENT, 0, {"unique_id": None}).definition
    )


def test_a_revised_definition_keeps_a_new_definitions_bounds() -> None:
    problems = problems_of({"stages": ["x" * 201]})
    assert "longer than 200 characters" in problems


def test_hostile_field_entries_are_problems_not_crashes() -> None:
    fields = [
        *fields_of(),
        {"name": "A", "type": "text", "renamed_from": ["Company ID"]},
        {"name": "B", "type": "text", "id": ["x"]},
        {"name": "C", "type": "text", "id": True},
        {"name": "D", "type": ["text"]},
        {"name": ["E"], "type": "text"},
    ]
    problems = problems_of({"fields": fields})
    assert "field 'A': 'renamed_from' must be a current field's name" in problems
    assert "fields.7.id" in problems
    assert "fields.8.id" in problems
    assert "fields.10.name" in problems


def test_a_field_list_over_the_bound_is_named_once_not_field_by_field() -> None:
    fields = [{"name": f"f{n}", "type": "text", "renamed_from": "nothing"} for n in range(1001)]
    with pytest.raises(DefinitionError) as caught:
        revise(CURRENT, 0, {"fields": fields})
    assert len(caught.value.problems) == 1
    assert "at most 1000" in caught.value.problems[0]
    long_name = "x" * 10_000
    problems = problems_of(
        {"fields": [*fields_of(), {"name": "a", "type": "text", "renamed_from": long_name}]}
    )
    assert len(problems) < 300
