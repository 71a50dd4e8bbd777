"""docker-compose.yml and the Dockerfile, checked without an engine (none runs here)."""

from __future__ import annotations

import re

import yaml

from ingest.settings import Settings
from tests.conftest import ROOT

COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]
KNOWN_SETTINGS = {f"INGEST_{name.upper()}" for name in Settings.model_fields}


def test_stack_has_every_service():
    assert set(SERVICES) == {"postgres", "rabbitmq", "migrate", "edge", "worker"}


def test_rabbitmq_serves_the_management_ui():
    assert "management" in SERVICES["rabbitmq"]["image"]
    assert any("15672" in str(port) for port in SERVICES["rabbitmq"]["ports"])


def test_long_running_services_have_healthchecks():
    for name in ("postgres", "rabbitmq", "edge", "worker"):
        assert SERVICES[name]["healthcheck"]["test"], name


def test_edge_and_worker_start_after_a_successful_migration():
    for name in ("edge", "worker"):
        depends = SERVICES[name]["depends_on"]
        assert depends["migrate"]["condition"] == "service_completed_successfully"
        assert depends["postgres"]["condition"] == "service_healthy"
        assert depends["rabbitmq"]["condition"] == "service_healthy"
    assert SERVICES["migrate"]["command"] == ["ingest", "migrate"]


def test_worker_can_be_scaled():
    worker = SERVICES["worker"]
    assert "container_name" not in worker
    assert "ports" not in worker


def test_configuration_is_env_driven_with_known_settings():
    for name in ("migrate", "edge", "worker"):
        env = SERVICES[name]["environment"]
        assert "INGEST_DATABASE_URL" in env
        assert "INGEST_AMQP_URL" in env
        assert set(env) <= KNOWN_SETTINGS, set(env) - KNOWN_SETTINGS


def test_services_built_here_use_the_dockerfile_and_real_commands():
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^USER (?!root)", dockerfile, re.MULTILINE), "the image must not run as root"
    for match in re.finditer(r"^COPY (.+) \./?\S*$", dockerfile, re.MULTILINE):
        for source in match.group(1).split():
            assert (ROOT / source).exists(), source
    commands = {name: SERVICES[name]["command"] for name in ("migrate", "edge", "worker")}
    assert commands["edge"] == ["ingest", "serve"]
    assert commands["worker"] in (["ingest", "work"], ["python", "-m", "worker"])
    for name in commands:
        assert SERVICES[name]["build"] == "."


def test_readme_settings_table_matches_the_settings_class():
    from ingest.settings import settings_table

    assert settings_table() in (ROOT / "README.md").read_text()
