"""Workflow revisions (SPEC §8): a change to a stored definition, read into its next version.

A change holds any of a definition's top-level keys; a key that is present replaces its value, so
`fields` is the whole new field list. Each field of it is matched to a current field, so the
values tasks hold under that field's id stay its own:

- a field keeps the id of the current field it names by `renamed_from`, or by its `id` (as the
  admin API shows it), or else of the current field with its name;
- a current field claimed by two fields (by any of these ways: a rename away and a new field of
  the old name, an `id` and a name) is a problem, never settled by a silent choice;
- any other field is new, and gets an id above every id the workflow ever used: values of a
  removed field stay in `tasks.fields` under its id, and must never show up as a new field's.

A kept field may change its type only where every value stored under the old type is a valid
value of the new one, stored and shown alike (`SAFE_TYPE_CHANGES`). Options, stages and members
change freely: stored values stay as they are and are shown as stored. Changing which field is
the Unique ID changes how tasks are keyed, which a revision reports (`rekeys`): the store allows it
only while the workflow has no tasks.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import ConfigDict, Field
from typing_extensions import TypedDict  # pydantic reads typing's only from Python 3.12

from ingest.errors import DefinitionError
from ingest.fields import MAX_NAME_CHARS, FieldSpec, FieldType
from ingest.workflows import MAX_FIELDS, WorkflowDefinition

_TEXT_LIKE = (
    FieldType.SINGLE_SELECT,
    FieldType.EMAIL,
    FieldType.URL,
    FieldType.PHONE,
    FieldType.PERSON,
    FieldType.DATE,
    FieldType.DATETIME,
)
#: The types a kept field may change to. Each stored value of the old type is one of the new
#: type, stored, shown and filtered alike: a text fits a long text; numbers and currency are both
#: exact JSON numbers; an option, e-mail, URL, phone number, member, date or date-time is kept as
#: its text (2,048 characters at most, within a text's 10,000). The other way round it is not so
#: (a text that is no e-mail, a long text over 10,000 characters), nor for checkboxes (booleans)
#: or multiple selects (lists).
SAFE_TYPE_CHANGES: Mapping[FieldType, frozenset[FieldType]] = {
    FieldType.TEXT: frozenset({FieldType.LONG_TEXT}),
    FieldType.NUMBER: frozenset({FieldType.CURRENCY}),
    FieldType.CURRENCY: frozenset({FieldType.NUMBER}),
    **{kind: frozenset({FieldType.TEXT, FieldType.LONG_TEXT}) for kind in _TEXT_LIKE},
}


class FieldChange(FieldSpec):
    """A field of a change: a field as a definition gives it, which may say what it was called."""

    renamed_from: str | None = Field(
        default=None,
        min_length=1,
        max_length=MAX_NAME_CHARS,
        description="The current name of the field this one renames; its values stay its own. "
        "Read only in this change: never stored nor shown.",
    )


class WorkflowChange(TypedDict, total=False):
    """A change to a workflow: any of a definition's keys; each one given replaces its value."""

    __pydantic_config__ = ConfigDict(extra="forbid")  # type: ignore[misc]
    name: Annotated[str, Field(min_length=1, max_length=MAX_NAME_CHARS)]
    fields: Annotated[
        list[FieldChange],
        Field(
            max_length=MAX_FIELDS,
            description="The whole new list of fields: a current field left out is removed "
            "(its values are no longer shown); one named as a current field, by `renamed_from` "
            "or by its `id` keeps its values; any other is new.",
        ),
    ]
    unique_id: Annotated[
        str | None,
        Field(
            description="The field whose value identifies a task; may change (or be set or "
            "removed) only while the workflow has no tasks. Left out, it follows a rename."
        ),
    ]
    stages: list[str]
    members: list[str]


#: The keys a change may hold, in the order a definition lists them.
CHANGE_KEYS = tuple(WorkflowChange.__annotations__)
_TYPE_NAMES = tuple(kind.value for kind in FieldType)


@dataclass(frozen=True, slots=True)
class Revision:
    """A workflow's next definition, read from a change."""

    definition: WorkflowDefinition
    #: The largest field id any version has used, this one included.
    last_field_id: int
    #: The definition differs from the current one (else there is no new version to make).
    changed: bool
    #: Another field (or none, or one where there was none) is the Unique ID: tasks would be
    #: keyed by other values.
    rekeys: bool


def revise(current: WorkflowDefinition, last_field_id: int, change: object) -> Revision:
    """The definition `change` makes of `current`; DefinitionError lists every problem.

    `last_field_id` is the largest field id a former version used (0 if none was stored).
    """
    if not isinstance(change, dict):
        raise DefinitionError(["a change is an object holding any of: " + ", ".join(CHANGE_KEYS)])
    problems = [
        f"{_shown(key)} is not a key of a definition (a change holds any of: "
        f"{', '.join(CHANGE_KEYS)})"
        for key in change
        if key not in CHANGE_KEYS
    ]
    merged: dict[str, Any] = current.model_dump(mode="json")
    last = max(last_field_id, *(spec.id for spec in current.fields), 0)
    if "fields" in change:
        matched = _FieldMatch(current, last)
        merged["fields"] = matched.read(change["fields"])
        problems.extend(matched.problems)
        last = matched.last_id
    merged.update((key, change[key]) for key in CHANGE_KEYS if key in change and key != "fields")
    if "unique_id" not in change:
        merged["unique_id"] = _followed_unique_id(current, merged["fields"], problems)
    try:
        definition = WorkflowDefinition.parse(merged)
    except DefinitionError as exc:
        problems.extend(exc.problems)
    if problems:
        raise DefinitionError(problems)
    return Revision(
        definition=definition,
        last_field_id=last,
        changed=definition != current,
        rekeys=unique_field_id(definition) != unique_field_id(current),
    )


def unique_field_id(definition: WorkflowDefinition) -> int | None:
    """The id of the field whose value keys tasks (None: tasks are keyed by their own id)."""
    spec = next((s for s in definition.fields if s.name == definition.unique_id), None)
    return None if spec is None else spec.id


def rekeying_refused(current: WorkflowDefinition, revised: WorkflowDefinition) -> str:
    """Why a workflow with tasks cannot take a revision that `rekeys`."""
    keyed = f"the values of field {current.unique_id!r}" if current.unique_id else "their task ids"
    if revised.unique_id is None:
        change = "be removed"
    elif current.unique_id is None:
        change = f"be set (to field {revised.unique_id!r})"
    else:
        change = f"become another field ({revised.unique_id!r})"
    return (
        f"this workflow has tasks, stored under their keys ({keyed}): the Unique ID cannot "
        f"{change} while it has tasks, or they could no longer be found and updated by it. "
        "Create a new workflow with the new Unique ID, or delete this workflow's tasks first."
    )


class _FieldMatch:
    """Reads a change's field list: each field matched to the current field it keeps, or given
    a fresh id; what cannot be matched is listed in `problems`."""

    def __init__(self, current: WorkflowDefinition, last_id: int) -> None:
        self.last_id = last_id
        self.problems: list[str] = []
        self._by_name = {spec.name: spec for spec in current.fields}
        self._by_id = {spec.id: spec for spec in current.fields}
        #: Current field id → the field of the change that keeps it, and how it claims it.
        self._kept_as: dict[int, tuple[str, str]] = {}

    def read(self, fields: object) -> object:
        """The field list as a definition holds it (ids given, `renamed_from` gone); anything
        but a list is left for the definition's validation to name."""
        if not isinstance(fields, list):
            return fields  # the definition's validation names what is wrong with it
        if len(fields) > MAX_FIELDS:  # so is this: the list is not matched field by field
            return [_without_rename(entry) for entry in fields]
        return [self._entry(entry) for entry in fields]

    def _entry(self, entry: object) -> object:
        if not isinstance(entry, dict):
            return entry
        entry = dict(entry)
        renamed_from = entry.pop("renamed_from", None)
        name, given_id = entry.get("name"), entry.get("id", 0)
        if not isinstance(name, str) or len(name) > MAX_NAME_CHARS or not _is_id(given_id):
            return entry  # the definition's validation names what is wrong with it
        kept, how = self._kept(name, renamed_from, given_id)
        if kept is None:
            self.last_id += 1
            entry["id"] = self.last_id
            return entry
        entry["id"] = kept.id
        self._claim(kept, name, how)
        self._check_type(kept, name, entry.get("type"))
        return entry

    def _claim(self, kept: FieldSpec, name: str, how: str) -> None:
        """Note that field `name` keeps `kept`; a current field is kept once. (Two fields of one
        name are left for the definition's validation to name: "used more than once".)"""
        claimant, claimed_how = self._kept_as.setdefault(kept.id, (name, how))
        if claimant == name:
            return
        self.problems.append(
            f"fields {claimant!r} ({claimed_how}) and {name!r} ({how}) both stand for the "
            f"current field {kept.name!r}: a current field is kept by one field at most. To "
            "give a current field's name to a new field, rename or remove that field in one "
            "change and add the new one in the next"
        )

    def _kept(self, name: str, renamed_from: object, given_id: int) -> tuple[FieldSpec | None, str]:
        """The current field this one keeps (None: it is new), and how it names it."""
        if renamed_from is not None:
            return self._renamed(name, renamed_from, given_id), "by 'renamed_from'"
        if given_id:
            kept = self._by_id.get(given_id)
            if kept is None:
                self.problems.append(
                    f"field {name!r} has id {given_id}, which no current field of this workflow "
                    "has: leave 'id' out of a new field (ids are given by the service)"
                )
            return kept, f"by its id {given_id}"
        return self._by_name.get(name), "by its name"

    def _renamed(self, name: str, renamed_from: object, given_id: int) -> FieldSpec | None:
        if not isinstance(renamed_from, str):
            self.problems.append(f"field {name!r}: 'renamed_from' must be a current field's name")
            return None
        kept = self._by_name.get(renamed_from)
        if kept is None:
            self.problems.append(
                f"field {name!r} is renamed from {_shown(renamed_from)}, which is no field of this "
                "workflow"
            )
        elif given_id and given_id != kept.id:
            self.problems.append(
                f"field {name!r}: its id {given_id} and 'renamed_from' {renamed_from!r} name "
                "different fields"
            )
        return kept

    def _check_type(self, kept: FieldSpec, name: str, given: object) -> None:
        if not isinstance(given, str) or given == kept.type or given not in _TYPE_NAMES:
            return  # the same type, or one the definition's validation refuses
        new = FieldType(given)
        if new not in SAFE_TYPE_CHANGES.get(kept.type, frozenset()):
            self.problems.append(
                f"field {name!r} cannot change from {kept.type} to {new}: values stored as "
                f"{kept.type} are not all valid {new} values. Add a field of another name for "
                f"the new type (and remove this one); to reuse the name for a new, empty field, "
                "remove the field in one change and add it in the next"
            )


def _without_rename(entry: object) -> object:
    if isinstance(entry, dict):
        return {key: value for key, value in entry.items() if key != "renamed_from"}
    return entry


def _shown(text: str) -> str:
    return repr(text if len(text) <= 40 else f"{text[:39]}…")


def _is_id(value: object) -> bool:
    """A field id a change may give (0: none given); anything else is the definition's to name."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _followed_unique_id(
    current: WorkflowDefinition, fields: object, problems: list[str]
) -> str | None:
    """The Unique ID of a change that does not name one: the current Unique ID field under its
    new name. Removing that field needs `unique_id` said (another field, or null)."""
    unique_id = unique_field_id(current)
    if unique_id is None or not isinstance(fields, list) or len(fields) > MAX_FIELDS:
        return current.unique_id
    for entry in fields:
        if isinstance(entry, dict) and entry.get("id") == unique_id:
            name = entry.get("name")
            return name if isinstance(name, str) else current.unique_id
    problems.append(
        f"the Unique ID field {current.unique_id!r} is removed: say which field is the "
        "Unique ID now ('unique_id': another field, or null)"
    )
    return None
