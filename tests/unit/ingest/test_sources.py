"""Source definitions (ingest.sources): every problem at once, map keys checked against the
workflow, deliveries filtered and mapped to task bodies; and every example in
`examples/sources/` parses and maps its provider's delivery to a valid task."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from ingest.errors import DefinitionError, MappingFailed
from ingest.messages import parse_payload
from ingest.signatures import Verification
from ingest.sources import (
    Source,
    SourceDefinition,
    SourceSummary,
    VerificationSummary,
    source_url,
    workflow_named,
)
from ingest.workflows import Workflow, WorkflowDefinition
from tests.conftest import SALES
from tests.deliveries import PROVIDERS, example
from worker.validation import TaskValidator

SALES_DEFINITION = WorkflowDefinition.parse(SALES)


def _definition(**overrides: Any) -> dict[str, Any]:
    return {
        "name": "Leads",
        "workflow": "wf",
        "verify": {"scheme": "none"},
        "map": {"Company ID": "lead.id", "Company Name": "lead.name", "Stage": "'Done'"},
        **overrides,
    }


def _parse(**overrides: Any) -> SourceDefinition:
    return SourceDefinition.parse(_definition(**overrides), SALES_DEFINITION)


def _problems(raw: Any, workflow: WorkflowDefinition | None = SALES_DEFINITION) -> list[str]:
    with pytest.raises(DefinitionError) as caught:
        SourceDefinition.parse(raw, workflow)
    return caught.value.problems


def test_every_problem_is_reported_at_once() -> None:
    problems = _problems(
        _definition(filter="a ==", map={"Company ID": "x.", "Nope": "y", "Task URL": "z"})
    )
    assert problems == [
        "filter: the expression 'a ==' ends too early (position 4)",
        "map['Company ID']: the expression 'x.' ends too early (position 2)",
        "map['Nope']: 'Sales pipeline' has no such field (map its fields, 'Stage' or "
        "'Assigned To')",
        "map['Task URL']: 'Sales pipeline' has no such field (map its fields, 'Stage' or "
        "'Assigned To')",
    ]


def test_the_shape_is_checked_first() -> None:
    assert _problems(_definition(verify={"scheme": "nope"}, extra=1, map={}, respond="later")) == [
        "verify.scheme: Input should be 'standard-webhooks', 'github', 'stripe', 'shopify', "
        "'slack', 'hmac' or 'none'",
        "map: Dictionary should have at least 1 item after validation, not 0",
        "respond: Input should be 'async' or 'sync'",
        "extra: Extra inputs are not permitted",
    ]
    assert _problems([]) == ["Input should be a valid dictionary or instance of SourceDefinition"]


def test_a_workflow_that_does_not_exist_is_a_problem() -> None:
    assert _problems(_definition(), None) == ["workflow: no workflow has the public id 'wf'"]


def test_texts_cannot_hold_nul_or_lone_surrogates() -> None:
    assert _problems(_definition(name="a\x00b")) == [
        "texts of a source cannot contain NUL characters or lone surrogates"
    ]


def test_built_ins_can_be_mapped() -> None:
    definition = _parse(map={"Stage": "'Done'", "Assigned To": "lead.owner"})
    body = definition.task_body({"lead": {"owner": "user@example.com"}}, "", 1000)
    assert orjson.loads(body) == {"Stage": "Done", "Assigned To": "user@example.com"}


def test_a_stored_definition_reads_back_compiled_without_the_workflow() -> None:
    stored = _parse().model_dump(mode="json")
    again = SourceDefinition.model_validate(stored)
    assert again == _parse()
    assert again.task_body({"lead": {"id": "1"}}, "", 1000) == '{"Company ID":"1","Stage":"Done"}'


def test_null_results_are_left_out_and_literals_are_kept() -> None:
    definition = _parse(
        map={"Company ID": "lead.id", "Company Name": "lead.name", "Stage": '`"Done"`'}
    )
    assert orjson.loads(definition.task_body({"lead": {"id": 5}}, "", 1000)) == {
        "Company ID": 5,
        "Stage": "Done",
    }


def test_numbers_are_mapped_exactly() -> None:
    definition = _parse(map={"Company ID": "lead.id", "Contract Value": "lead.value"})
    text = '{"lead": {"id": 123456789012345678901234567890, "value": 10000.50}}'
    body = definition.task_body(parse_payload(text), text, 1000)
    assert body == '{"Company ID":123456789012345678901234567890,"Contract Value":10000.50}'


def test_without_a_map_the_delivery_is_the_task_body() -> None:
    definition = _parse(map=None)
    assert definition.task_body({"Company ID": "1"}, '{"Company ID": "1"}', 10) == (
        '{"Company ID": "1"}'
    )


def test_a_filter_admits_what_jmespath_calls_true() -> None:
    definition = _parse(filter="lead.tags")
    admitted = [definition.admits({"lead": {"tags": tags}}) for tags in ([], ["a"], "", 0, None)]
    assert admitted == [False, True, False, True, False]
    assert _parse().admits({})


def test_a_mapped_value_is_held_to_what_a_task_body_may_hold() -> None:
    definition = _parse(map={"Company Name": "lead.name", "Company ID": '`"\\u0000"`'})
    with pytest.raises(MappingFailed, match=r"map\['Company ID'\].*\\\\u0000"):
        definition.task_body({"lead": {"name": "x"}}, "", 1000)
    big = _parse(map={"Company Name": "lead.name"})
    with pytest.raises(MappingFailed, match="the task would exceed 100 bytes"):
        big.task_body({"lead": {"name": "x" * 100}}, "", 100)


def test_a_workflow_is_named_only_when_it_can_exist() -> None:
    assert workflow_named({"workflow": "abc"}) == "abc"
    unnamed: list[Any] = [[], {}, {"workflow": 1}, {"workflow": ""}, {"workflow": "a\x00"}]
    for raw in unnamed:
        assert workflow_named(raw) is None
    assert workflow_named({"workflow": "\ud800"}) is None
    assert workflow_named({"workflow": "x" * 201}) is None


def test_a_summary_shows_how_many_secrets_and_never_them() -> None:
    definition = _parse(verify={"scheme": "github", "secrets": ["s3cret-1", "s3cret-2"]})
    source = Source(
        id=1,
        public_id="pub",
        workflow_id=1,
        definition=definition,
        created_at=datetime(2026, 1, 1, tzinfo=UTC),
    )
    summary = source.summary("http://h")
    assert summary["url"] == source_url("http://h", "pub") == "http://h/api/v1/hooks/pub"
    assert summary["verify"]["secret_count"] == 2
    assert "s3cret" not in orjson.dumps(summary).decode()
    assert set(summary) == SourceSummary.__required_keys__


def test_the_verification_summary_is_the_verification_without_its_secrets() -> None:
    """`Source.summary` casts a dump to VerificationSummary: their keys must agree."""
    shown = set(Verification.model_fields) - {"secrets"} | {"secret_count"}
    assert VerificationSummary.__required_keys__ == shown


# ------------------------------------------------------------------------------------ examples


@pytest.mark.parametrize("provider", PROVIDERS)
def test_each_example_maps_its_delivery_to_a_valid_task(provider: str) -> None:
    workflow_definition = WorkflowDefinition.parse(example(provider, "workflow"))
    workflow = Workflow(id=1, public_id="wf", version=1, definition=workflow_definition)
    definition = SourceDefinition.parse(example(provider, "source"), workflow_definition)
    text = orjson.dumps(example(provider, "delivery")).decode()
    delivery = parse_payload(text)
    assert definition.admits(delivery)
    task = parse_payload(definition.task_body(delivery, text, 1 << 20))
    parsed = TaskValidator(workflow).parse(task)
    assert parsed.errors == {}
    required = {spec.name for spec in workflow_definition.fields if spec.required}
    assert required <= set(task)
