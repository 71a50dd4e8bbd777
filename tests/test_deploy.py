"""deploy/: the Grafana dashboard and the Prometheus alert rules speak of metrics the service
exports, and promtool accepts the rules (and their unit tests) where it is installed."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator

import aiohttp
import pytest
import yaml

from tests.conftest import ROOT, WorkerHandle, free_port

DEPLOY = ROOT / "deploy"
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool is not installed (Debian package `prometheus`)"
)

#: PromQL words that are not metric names.
_KEYWORDS = frozenset(
    {"and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right"}
    | {"offset", "bool", "inf", "nan"}
)


def dashboard_expressions() -> Iterator[str]:
    dashboard = json.loads((DEPLOY / "grafana-dashboard.json").read_text())
    for panel in dashboard["panels"]:
        for target in panel.get("targets", ()):
            yield target["expr"]


def rule_expressions() -> Iterator[str]:
    rules = yaml.safe_load((DEPLOY / "prometheus-rules.yml").read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            yield rule["expr"]


def metric_names(expression: str) -> set[str]:
    """The metric names a PromQL expression reads: what is left once strings, label matchers,
    ranges, grouping clauses, functions, keywords and numbers are taken away."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expression)
    text = re.sub(r"\{[^}]*\}", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    text = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    names = set()
    for match in re.finditer(r"[a-zA-Z_:][a-zA-Z0-9_:]*", text):
        word = match.group()
        followed_by = text[match.end() :].lstrip()[:1]
        if followed_by == "(" or word.lower() in _KEYWORDS:
            continue
        before = text[: match.start()]
        if re.search(r"[0-9.]$", before):  # a unit of a number (`5m`) or an exponent
            continue
        names.add(word)
    return names


def exported_names(exposition: str) -> set[str]:
    """Every series name a scrape may show: a histogram's `_bucket`, `_sum`, `_count` included,
    also for families that have no sample yet (their `# TYPE` line says what they are)."""
    names = set()
    for line in exposition.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split()
            names.add(name)
            if kind in ("histogram", "summary"):
                names.update(f"{name}{suffix}" for suffix in ("_bucket", "_sum", "_count"))
        elif line and not line.startswith("#"):
            names.add(re.split(r"[{ ]", line, maxsplit=1)[0])
    return names


def test_expression_names_are_read_as_promql_would():
    expression = (
        "histogram_quantile(0.99, sum by (le) ("
        'rate(ingest_x_bucket{route=~"a|b"}[$__rate_interval])))'
        " / on() group_left sum without (job) (ingest_y offset 5m) > 1e3"
        " and deriv(max(ingest_z)[10m:1m]) > 0 or up"
    )
    assert metric_names(expression) == {"ingest_x_bucket", "ingest_y", "ingest_z", "up"}


def test_the_dashboard_and_the_rules_have_expressions():
    assert len(list(dashboard_expressions())) >= 15
    assert len(list(rule_expressions())) >= 5


async def test_dashboard_and_rules_name_only_metrics_the_service_exports(settings, client):
    port = free_port()
    handle = WorkerHandle(settings.model_copy(update={"worker_metrics_port": port}))
    await handle.start()
    try:
        edge = await (await client.get("/metrics")).text()
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"http://127.0.0.1:{port}/metrics") as response,
        ):
            worker = await response.text()
    finally:
        await handle.stop()
    exported = exported_names(edge) | exported_names(worker)
    for source, expressions in (
        ("grafana-dashboard.json", dashboard_expressions()),
        ("prometheus-rules.yml", rule_expressions()),
    ):
        for expression in expressions:
            names = metric_names(expression)
            assert names, f"{source}: {expression!r} reads no metric"
            unknown = names - exported
            assert not unknown, f"{source}: {expression!r} reads {unknown}, not exported"


def test_every_alert_the_issue_asks_for_is_there():
    rules = yaml.safe_load((DEPLOY / "prometheus-rules.yml").read_text())
    alerts = {rule["alert"] for group in rules["groups"] for rule in group["rules"]}
    assert {
        "IngestQueueDepthGrowing",
        "IngestDeadLettersAppearing",
        "IngestSyncTimeouts",
        "IngestRejectionsSpiking",
        "IngestConsumerMissing",
    } <= alerts


def _promtool(*args: str) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None
    return subprocess.run(
        [PROMTOOL, *args], capture_output=True, text=True, cwd=DEPLOY, timeout=60, check=False
    )


@needs_promtool
def test_promtool_accepts_the_rules():
    done = _promtool("check", "rules", "prometheus-rules.yml")
    assert done.returncode == 0, done.stdout + done.stderr


@needs_promtool
def test_the_alerts_fire_as_their_unit_tests_expect():
    done = _promtool("test", "rules", "prometheus-rules.test.yml")
    assert done.returncode == 0, done.stdout + done.stderr


@needs_promtool
def test_promtool_accepts_the_prometheus_configuration_with_its_rules():
    done = _promtool("check", "config", "prometheus.yml")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 rule files found" in done.stdout + done.stderr
