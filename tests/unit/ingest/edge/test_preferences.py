"""The `Prefer` header (ingest.edge.preferences, RFC 7240): `respond-async` and `wait=N` are
honoured, anything else is ignored, and the wait budget is the shorter of the two sides'."""

from __future__ import annotations

import pytest

from ingest.edge.preferences import Preferences, parse_prefer


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ([], Preferences()),
        ([""], Preferences()),
        (["respond-async"], Preferences(respond_async=True)),
        (["Respond-Async"], Preferences(respond_async=True)),
        (["wait=10"], Preferences(wait=10.0)),
        (["WAIT = 3"], Preferences(wait=3.0)),
        (['wait="7"'], Preferences(wait=7.0)),
        (["wait=0"], Preferences(wait=0.0)),
        (["respond-async, wait=5"], Preferences(respond_async=True, wait=5.0)),
        (["respond-async", "wait=5"], Preferences(respond_async=True, wait=5.0)),
        (["wait=5; foo=bar"], Preferences(wait=5.0)),
        (["handling=lenient, return=minimal"], Preferences()),
    ],
)
def test_the_preferences_ingest_honours_are_read(headers, expected):
    assert parse_prefer(headers) == expected


@pytest.mark.parametrize("value", ["-1", "1.5", "1e3", "", "x", "٣", "²", " 5 6", "0x10"])
def test_a_wait_that_is_not_ascii_digits_is_ignored(value):
    assert parse_prefer([f"wait={value}"]).wait is None


def test_the_first_wait_given_wins():
    assert parse_prefer(["wait=2, wait=9"]).wait == 2.0
    assert parse_prefer(["wait=x, wait=9"]).wait == 9.0
    assert parse_prefer(["wait=4", "wait=1"]).wait == 4.0


@pytest.mark.parametrize(
    "header",
    ["respond-async, wait=5", "wait=12", "nothing=here", "wait=3, " + "x=y, " * 30],
)
def test_a_long_header_is_read_as_a_short_one_is(header):
    """Headers up to 64 characters go through a cache; longer ones are parsed every time."""
    padding = ", " + "p=q, " * 20
    assert parse_prefer([header]) == parse_prefer([header + padding])
    assert parse_prefer([header]) == parse_prefer([header, ""])


@pytest.mark.parametrize(
    ("preferences", "budget"),
    [
        (Preferences(), 5.0),
        (Preferences(wait=2.0), 2.0),
        (Preferences(wait=60.0), 5.0),
        (Preferences(wait=0.0), 0.0),
        (Preferences(respond_async=True), 0.0),
        (Preferences(respond_async=True, wait=3.0), 0.0),
    ],
)
def test_the_budget_is_the_shorter_wait_and_nothing_for_respond_async(preferences, budget):
    assert preferences.budget(5.0) == budget
