"""Unit tests: pure modules, no Postgres and no RabbitMQ (`make test-unit` runs them with neither
reachable). Every service fixture of tests/conftest.py needs the template database, so refusing
it here makes a unit test that asks for a service fail at once, saying why, instead of hanging
on a connection."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def template_database() -> str:
    pytest.fail("unit tests use no services: a test that needs Postgres or RabbitMQ goes in tests/")
