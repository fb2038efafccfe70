"""The Grafana dashboard, the Prometheus configuration and the compose profile in config/: every
query names metrics the worker exposes, and the provisioning files fit together. (No Docker
here: the files are checked as data.)"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml

from streams.metrics import Metrics

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "config" / "grafana" / "switchboard.json"
METRIC = re.compile(r"\b(switchboard_[a-z0-9_]+)\b")
#: label names in `by (...)` and in `{label op "value"}` selectors
BY = re.compile(r"\bby\s*\(([^)]*)\)")
SELECTOR = re.compile(r"(switchboard_[a-z0-9_]+)\{([^}]*)\}")


def _load(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def _targets() -> list[dict[str, Any]]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [t for p in dashboard["panels"] if p["type"] != "row" for t in p["targets"]]


def test_dashboard_is_grafana_shaped() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] == "switchboard" and dashboard["title"]
    assert isinstance(dashboard["schemaVersion"], int)
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for panel in dashboard["panels"]:
        assert {"h", "w", "x", "y"} <= panel["gridPos"].keys()
        assert panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24
        if panel["type"] == "row":
            continue
        assert panel["targets"], panel["title"]
        assert panel["datasource"]["uid"] == "switchboard-prometheus"
        ref_ids = [t["refId"] for t in panel["targets"]]
        assert len(ref_ids) == len(set(ref_ids))


def test_every_query_names_metrics_and_labels_the_worker_exposes() -> None:
    metrics = Metrics()
    exposed = metrics.sample_names()
    labels: dict[str, set[str]] = {}
    for family in metrics.registry.collect():
        metric = next(m for m in vars(metrics).values() if getattr(m, "_name", None) == family.name)
        for suffix in ("", "_total", "_bucket", "_sum", "_count"):
            labels[family.name + suffix] = set(metric._labelnames) | (
                {"le"} if suffix == "_bucket" else set()
            )
    used: set[str] = set()
    for target in _targets():
        expr = target["expr"]
        names = set(METRIC.findall(expr))
        assert names, f"no Switchboard metric in {expr!r}"
        assert names <= exposed, (
            f"{expr!r} names {sorted(names - exposed)}, not exposed at /metrics"
        )
        used |= names
        known = set().union(*(labels[n] for n in names))
        for group in BY.findall(expr):
            by = {label.strip() for label in group.split(",") if label.strip()}
            assert by <= known, f"{expr!r} groups by {sorted(by - known)}"
        for name, selector in SELECTOR.findall(expr):
            for label in re.findall(r"([a-z_]+)\s*(?:=~|!=|!~|=)", selector):
                assert label in labels[name], f"{expr!r}: {name} has no label {label}"
    # The panels: lag, deferred, webhooks, sessions open, throughput, provider latency.
    for wanted in (
        "switchboard_consumer_lag",
        "switchboard_deferred_deliveries",
        "switchboard_deferred_oldest_age_seconds",
        "switchboard_webhook_backlog",
        "switchboard_sessions_open",
        "switchboard_status_events_total",
        "switchboard_provider_send_seconds_bucket",
        "switchboard_provider_sends_total",
    ):
        assert wanted in used, f"the dashboard shows nothing of {wanted}"


def test_sample_names_follow_the_exposition() -> None:
    metrics = Metrics()
    metrics.sends.labels("sms", "sandbox", "ok").inc()
    metrics.send_seconds.labels("sms", "sandbox").observe(0.1)
    metrics.consumer_lag.labels("comms.dispatch.sms", "0").set(3)
    text = metrics.exposition().decode()
    shown = {
        line.split("{")[0].split(" ")[0]
        for line in text.splitlines()
        if line and not line.startswith("#")
    }
    assert shown <= metrics.sample_names()
    assert {
        "switchboard_provider_sends_total",
        "switchboard_provider_send_seconds_bucket",
        "switchboard_consumer_lag",
    } <= shown


def test_in_flight_gauge_reads_the_calls_counted_on_the_loop() -> None:
    """``switchboard_provider_in_flight`` shows, when scraped, what the dispatcher added to and
    took from its channel's cell around each provider call (no locked gauge update per send)."""
    metrics = Metrics()
    sms = metrics.in_flight_cell("sms")
    assert metrics.in_flight_cell("sms") is sms  # one cell per channel
    sms.value += 3
    metrics.in_flight_cell("email").value += 1
    sms.value -= 1
    text = metrics.exposition().decode()
    assert 'switchboard_provider_in_flight{channel="sms"} 2.0' in text
    assert 'switchboard_provider_in_flight{channel="email"} 1.0' in text


def test_compose_monitoring_profile_is_provisioned() -> None:
    compose = _load(ROOT / "docker-compose.yml")
    services = compose["services"]
    assert "profiles" not in services["kafka"] and "profiles" not in services["switchboard"]
    for name in ("prometheus", "grafana"):
        assert services[name]["profiles"] == ["monitoring"]
        assert ":" in services[name]["image"] and not services[name]["image"].endswith(":latest")
        for volume in services[name]["volumes"]:
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (ROOT / source).exists(), (
                    f"{name} mounts {source}, which is not in the repository"
                )
    mounts = " ".join(services["grafana"]["volumes"])
    assert "/etc/grafana/provisioning" in mounts

    dashboards = _load(ROOT / "config/grafana/provisioning/dashboards/switchboard.yml")
    path = dashboards["providers"][0]["options"]["path"]
    assert any(
        v.split(":")[1].startswith(path + "/") and v.endswith(".json:ro")
        for v in services["grafana"]["volumes"]
    )
    sources = _load(ROOT / "config/grafana/provisioning/datasources/prometheus.yml")["datasources"]
    assert [s["uid"] for s in sources] == ["switchboard-prometheus"]
    assert sources[0]["url"] == "http://prometheus:9090"

    prometheus = _load(ROOT / "config/prometheus.yml")
    job = prometheus["scrape_configs"][0]
    assert job["metrics_path"] == "/metrics"
    assert job["static_configs"][0]["targets"] == ["switchboard:6066"]
    assert "6066:6066" in " ".join(services["switchboard"]["ports"])


def test_readme_lists_every_metric() -> None:
    readme = (ROOT / "README.md").read_text()
    table = readme.split("## Metrics and dashboard", 1)[1].split("\n## ", 1)[0]
    for family in Metrics().registry.collect():
        name = family.name + ("_total" if family.type == "counter" else "")
        assert f"| `{name}` |" in table, f"README's metrics table does not list {name}"
