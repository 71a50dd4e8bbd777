"""Settings (ingest.settings): read once from INGEST_* variables, checked, then frozen."""

from __future__ import annotations

import os

import pytest
from pydantic import ValidationError

from ingest.settings import Settings, settings_table


@pytest.fixture
def environment(monkeypatch):
    """An environment with no INGEST_ variables but those a test sets."""
    for name in list(os.environ):
        if name.startswith("INGEST_"):
            monkeypatch.delenv(name)
    return monkeypatch


def test_every_setting_has_a_working_default(environment):
    settings = Settings()
    assert settings.port == 8080
    assert settings.queue == "ingest.tasks"
    assert settings.dead_letter_queue == "ingest.tasks.dead"
    assert settings.base_url == "http://127.0.0.1:8080"
    assert settings.admin_token == ""


def test_settings_are_read_from_ingest_variables_as_their_types(environment):
    environment.setenv("INGEST_PORT", "9000")
    environment.setenv("INGEST_SYNC_TIMEOUT", "2.5")
    environment.setenv("INGEST_ACCESS_LOG", "false")
    environment.setenv("INGEST_QUEUE", "q")
    environment.setenv("PORT", "1")  # no prefix: not ours
    settings = Settings()
    assert (settings.port, settings.sync_timeout, settings.access_log) == (9000, 2.5, False)
    assert settings.dead_letter_queue == "q.dead"


def test_unknown_ingest_variables_are_ignored(environment):
    environment.setenv("INGEST_NO_SUCH_SETTING", "1")
    assert Settings().port == 8080


def test_settings_cannot_change_once_read(environment):
    settings = Settings()
    with pytest.raises(ValidationError):
        settings.port = 1  # type: ignore[misc]


def test_the_public_url_is_the_base_of_handed_out_urls_without_its_trailing_slash(environment):
    settings = Settings(public_url="https://ingest.example.com/")
    assert settings.public_url == "https://ingest.example.com"
    assert settings.base_url == "https://ingest.example.com"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("port", 65536),
        ("port", -1),
        ("sync_timeout", -1),
        ("sync_timeout", 61),
        ("publish_timeout", 0),
        ("edges", 0),
        ("queue", ""),
        ("delivery_limit", 0),
        ("log_format", "xml"),
        ("log_level", "LOUD"),
        ("database_url", "mysql://db/ingest"),
        ("amqp_url", "http://rabbit/"),
        ("public_url", "ftp://example.com"),
        ("public_url", "not a url"),
    ],
)
def test_a_value_out_of_bounds_or_of_the_wrong_kind_is_refused(environment, field, value):
    with pytest.raises(ValidationError) as caught:
        Settings(**{field: value})
    assert caught.value.errors()[0]["loc"] == (field,)


def test_values_at_the_bounds_are_accepted(environment):
    settings = Settings(port=65535, sync_timeout=0, workers=0, edges=64, delivery_limit=1)
    assert (settings.port, settings.sync_timeout, settings.workers) == (65535, 0, 0)


def test_postgres_dsns_are_accepted_in_both_spellings(environment):
    assert Settings(database_url="postgres://db/x").database_url == "postgres://db/x"
    assert Settings(amqp_url="amqps://rabbit/").amqp_url == "amqps://rabbit/"


def test_a_log_level_is_read_in_any_case(environment):
    assert Settings(log_level="debug").log_level == "DEBUG"


def test_the_settings_table_has_a_row_per_setting():
    table = settings_table().splitlines()
    assert table[:2] == ["| variable | default | meaning |", "|---|---|---|"]
    assert len(table) == 2 + len(Settings.model_fields)
    assert "| `INGEST_PORT` | `8080` |" in "\n".join(table)
    assert "| `INGEST_ADMIN_TOKEN` | (empty) |" in "\n".join(table)


@pytest.mark.parametrize(
    ("written", "seconds"),
    [("90s", 90), ("15m", 900), ("12h", 43_200), ("7d", 604_800), (" 1.5h ", 5400)],
)
def test_retentions_are_a_number_and_a_unit(environment, written, seconds):
    environment.setenv("INGEST_RESULT_RETENTION", written)
    assert Settings().result_retention == seconds


@pytest.mark.parametrize("written", ["7", "0s", "-5s", "1y", "7 days", "", "infd", "1e3s"])
def test_a_retention_without_a_unit_or_not_positive_is_refused(environment, written):
    environment.setenv("INGEST_RESULT_RETENTION", written)
    with pytest.raises(ValidationError):
        Settings()


def test_retentions_are_shown_as_written(environment):
    assert Settings().model_dump()["result_retention"] == "7d"
    assert Settings().model_dump()["dead_letter_retention"] == "30d"
