"""docker-compose.yml and the Dockerfile, checked without an engine (none runs here)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys

import pytest
import yaml

from ingest.settings import Settings
from tests.conftest import ROOT

COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]
KNOWN_SETTINGS = {f"INGEST_{name.upper()}" for name in Settings.model_fields}


def test_stack_has_every_service():
    assert set(SERVICES) == {"postgres", "rabbitmq", "migrate", "edge", "worker", "prometheus"}


def test_optional_prometheus_scrapes_the_edge_and_every_worker():
    prometheus = SERVICES["prometheus"]
    assert prometheus["profiles"] == ["monitoring"]
    mount = prometheus["volumes"][0].split(":")[0]
    config = yaml.safe_load((ROOT / mount).read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert jobs["ingest-edge"]["static_configs"][0]["targets"] == ["edge:8080"]
    worker_port = SERVICES["worker"]["environment"]["INGEST_WORKER_METRICS_PORT"]
    assert jobs["ingest-worker"]["dns_sd_configs"][0]["port"] == int(worker_port)


def test_rabbitmq_serves_the_management_ui():
    assert "management" in SERVICES["rabbitmq"]["image"]
    assert any("15672" in str(port) for port in SERVICES["rabbitmq"]["ports"])


def test_long_running_services_have_healthchecks():
    for name in ("postgres", "rabbitmq", "edge", "worker"):
        assert SERVICES[name]["healthcheck"]["test"], name
    assert "/readyz" in " ".join(SERVICES["edge"]["healthcheck"]["test"])


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


@pytest.mark.slow
def test_the_image_install_step_works_in_a_fresh_venv(tmp_path):
    """What the Dockerfile does: copy only what it COPYs, `pip install .`, run the commands."""
    context = tmp_path / "context"
    context.mkdir()
    dockerfile = (ROOT / "Dockerfile").read_text()
    for match in re.finditer(r"^COPY (.+) (\S+)$", dockerfile, re.MULTILINE):
        for source in match.group(1).split():
            target = context / source
            if (ROOT / source).is_dir():
                shutil.copytree(ROOT / source, target, ignore=shutil.ignore_patterns("__pycache__"))
            else:
                shutil.copy(ROOT / source, target)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet"]
    assert "--constraint constraints.txt" in dockerfile
    subprocess.run(
        [*pip, "--constraint", str(context / "constraints.txt"), str(context)],
        check=True,
        timeout=600,
        capture_output=True,
    )
    done = subprocess.run(
        [str(venv / "bin" / "ingest"), "settings"], check=True, capture_output=True, text=True
    )
    assert "INGEST_DATABASE_URL" in done.stdout
    code = "import worker.main, ingest.edge.app, ingest.migrations as m; print(len(m.available()))"
    done = subprocess.run(
        [str(venv / "bin" / "python"), "-c", code],
        check=True,
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert int(done.stdout) >= 2  # the SQL migrations are packaged
