"""Retention (ingest.retention): how long each kind of row is kept, and when a status URL with
no result stored means its result was purged."""

from __future__ import annotations

import pytest

from ingest.retention import KEYED_RESULT_MINIMUM, Purged, Retention
from ingest.settings import Settings

HOUR = 3600.0
DAY = 24 * HOUR


def _retention(**env: str) -> Retention:
    return Retention.from_settings(Settings(**env))  # type: ignore[arg-type]


def test_the_defaults_are_the_spec_s():
    retention = _retention()
    assert (retention.results, retention.dead_letters, retention.rejections) == (
        7 * DAY,
        30 * DAY,
        7 * DAY,
    )
    assert retention.keyed_results == 7 * DAY


@pytest.mark.parametrize("setting", ["2s", "15m", "23h"])
def test_keyed_results_are_kept_a_day_whatever_the_setting(setting):
    retention = _retention(result_retention=setting)
    assert retention.result_kept(keyed=False) < DAY
    assert retention.result_kept(keyed=True) == KEYED_RESULT_MINIMUM == DAY


def test_a_longer_setting_keeps_keyed_results_as_long():
    assert _retention(result_retention="90d").result_kept(keyed=True) == 90 * DAY


def test_attempt_marks_are_kept_as_long_as_dead_letters_and_at_least_a_day():
    assert _retention(dead_letter_retention="60d").attempts == 60 * DAY
    assert _retention(dead_letter_retention="1m").attempts == DAY


def test_a_missing_result_is_purged_only_once_its_request_is_older_than_the_retention():
    retention = _retention(result_retention="1h")
    now = 1_000_000_000.0
    assert not retention.result_purged(False, issued_by=now - HOUR, now=now)
    assert retention.result_purged(False, issued_by=now - HOUR - 1, now=now)
    # Keyed: a day at least.
    assert not retention.result_purged(True, issued_by=now - 2 * HOUR, now=now)
    assert retention.result_purged(True, issued_by=now - DAY - 1, now=now)


def test_what_a_purge_removed_is_summed_and_said():
    purged = Purged(results=3, dead_letters=1, rejections=0, attempts=2)
    assert purged.total == 6
    assert purged.summary() == (
        "purged 3 request result(s), 1 dead letter(s), 0 rejection(s) and 2 attempt mark(s)"
    )
