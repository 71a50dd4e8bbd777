"""Change notices: what a payload means, and how long a listener waits before reconnecting.

Pure: no Postgres (tests/test_propagation.py listens for real)."""

from __future__ import annotations

import pytest

from ingest.notices import _MAX_BACKOFF, Notice, backoff, parse


@pytest.mark.parametrize(
    ("payload", "notice"),
    [
        ("workflow:1", Notice("workflow", 1)),
        ("tokens:42", Notice("tokens", 42)),
        ("source:9223372036854775807", Notice("source", 9223372036854775807)),
    ],
)
def test_a_payload_names_a_topic_and_a_row(payload: str, notice: Notice) -> None:
    assert parse(payload) == notice


@pytest.mark.parametrize(
    "payload",
    [
        "",
        "workflow",
        "workflow:",
        ":1",
        "task:1",
        "workflow:-1",
        "workflow:1.5",
        "workflow: 1",
        "workflow:١",  # a digit, but not an ASCII one
        "workflow:" + "9" * 20,
        "WORKFLOW:1",
    ],
)
def test_a_payload_that_is_none_of_ours_means_nothing(payload: str) -> None:
    assert parse(payload) is None


def test_backoff_grows_from_a_tenth_of_a_second_to_a_ceiling() -> None:
    assert 0.05 <= backoff(1) <= 0.1
    assert 0.1 <= backoff(2) <= 0.2
    assert all(_MAX_BACKOFF / 2 <= backoff(n) <= _MAX_BACKOFF for n in (10, 100, 10_000))
