"""The deployment files are consistent: Dockerfile, .dockerignore, compose, Prometheus, Grafana provisioning.

No Docker engine runs here, so these checks are static: the files parse, reference paths that exist, and the
dashboard only queries metrics the service really exposes. ``promtool check config`` runs when installed.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry

from service.metrics import ServiceMetrics
from tests.service.helpers import missing_system_package


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def dockerfile_instructions(repo_root: Path) -> list[tuple[str, str]]:
    text = (repo_root / "Dockerfile").read_text(encoding="utf-8").replace("\\\n", " ")
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line else "") for line in lines]


def test_dockerfile(repo_root: Path) -> None:
    instructions = dockerfile_instructions(repo_root)
    keys = [k for k, _ in instructions]
    assert "ARG PYTHON_IMAGE=python:3.11-slim" in [f"{k} {v}" for k, v in instructions]
    assert keys.count("FROM") == 2  # build stage + slim runtime stage
    assert any(k == "ARG" and v.startswith("ONNXRUNTIME_PACKAGE=onnxruntime") for k, v in instructions)
    user = [v for k, v in instructions if k == "USER"]
    assert user and user[-1] not in ("root", "0")
    assert keys.index("USER") > max(i for i, k in enumerate(keys) if k == "COPY")
    assert any(k == "HEALTHCHECK" and "/v2/health/ready" in v for k, v in instructions)
    assert any(k == "CMD" and '"-m", "service"' in v for k, v in instructions)
    assert "torch" not in " ".join(v for k, v in instructions if k == "RUN").replace("find_spec('torch')", "")
    for key, value in instructions:  # every COPY source of the build context exists
        if key == "COPY" and "--from=" not in value:
            sources = [s for s in value.split() if not s.startswith("--")][:-1]
            assert all((repo_root / s).exists() or s == "README.md" for s in sources), value


def test_dockerignore_keeps_the_context_small(repo_root: Path) -> None:
    lines = (repo_root / ".dockerignore").read_text().split()
    assert lines[lines.index("*")] == "*"
    allowed = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    assert allowed == {"pyproject.toml", "README.md", "service", "models"}


def test_compose_file(repo_root: Path) -> None:
    compose = load_yaml(repo_root / "docker-compose.yml")
    services = compose["services"]
    assert {"service", "prometheus", "grafana"} <= set(services)
    assert services["service"]["build"]["context"] == "."
    assert services["service"]["build"]["args"]["ONNXRUNTIME_PACKAGE"] == "onnxruntime"
    assert "onnxruntime-gpu" in services["service-gpu"]["build"]["args"]["ONNXRUNTIME_PACKAGE"]
    assert services["service-gpu"]["profiles"] == ["gpu"]
    assert "8000:8000" in services["service"]["ports"]
    for name, service in services.items():
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            if source.startswith("./"):
                assert (repo_root / source).exists(), (name, volume)
            else:
                assert source in compose.get("volumes", {}), (name, volume)
    prometheus_mount = [v for v in services["prometheus"]["volumes"] if "prometheus.yml" in v]
    assert prometheus_mount == ["./deploy/prometheus/prometheus.yml:/etc/prometheus/prometheus.yml:ro"]


def test_prometheus_config(repo_root: Path, tmp_path: Path) -> None:
    path = repo_root / "deploy" / "prometheus" / "prometheus.yml"
    config = load_yaml(path)
    job = next(j for j in config["scrape_configs"] if j["job_name"] == "stn-service")
    assert job["metrics_path"] == "/metrics"
    assert job["static_configs"][0]["targets"] == ["service:8000"]
    promtool = shutil.which("promtool")
    if promtool is None:
        missing_system_package(
            "promtool not installed (Debian package prometheus); YAML structure checked only"
        )
    out = subprocess.run([promtool, "check", "config", str(path)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr


def test_grafana_provisioning(repo_root: Path) -> None:
    base = repo_root / "deploy" / "grafana"
    datasource = load_yaml(base / "provisioning" / "datasources" / "prometheus.yml")["datasources"][0]
    assert datasource["type"] == "prometheus" and datasource["url"] == "http://prometheus:9090"
    provider = load_yaml(base / "provisioning" / "dashboards" / "stn.yml")["providers"][0]
    assert provider["options"]["path"] == "/var/lib/grafana/dashboards"
    compose = load_yaml(repo_root / "docker-compose.yml")
    assert (
        "./deploy/grafana/dashboards:/var/lib/grafana/dashboards:ro"
        in compose["services"]["grafana"]["volumes"]
    )


def exposed_names() -> set[str]:
    registry = CollectorRegistry()
    ServiceMetrics(registry, "stn")
    names: set[str] = set()
    for family in registry.collect():
        names.add(family.name)
        suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum")}.get(family.type, ())
        names.update(family.name + s for s in suffixes)
    return names


def _registry_with_one_outside_sample() -> CollectorRegistry:
    registry = CollectorRegistry()
    ServiceMetrics(registry, "stn").crop_outside.labels("m", "1").observe(0.3)
    return registry


def test_dashboard_queries_only_exposed_metrics(repo_root: Path) -> None:
    dashboard = json.loads((repo_root / "deploy" / "grafana" / "dashboards" / "stn-service.json").read_text())
    datasource_uid = load_yaml(repo_root / "deploy/grafana/provisioning/datasources/prometheus.yml")[
        "datasources"
    ][0]["uid"]
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    exprs += [v["definition"] for v in dashboard["templating"]["list"]]
    assert len(exprs) >= 15
    used = {m for e in exprs for m in re.findall(r"\bstn_[a-z_]+", e)}
    missing = used - exposed_names()
    assert not missing, missing
    families = {
        "stn_requests_total", "stn_queue_depth", "stn_predictions_total", "stn_transform_scale_bucket",
        "stn_transform_rotation_degrees_bucket", "stn_prediction_confidence_bucket", "stn_rejections_total",
        "stn_batch_size_bucket", "stn_inference_duration_seconds_bucket", "stn_model_info",
        "stn_crop_outside_fraction_bucket", "stn_crop_outside_fraction_count",
    }  # fmt: skip
    assert families <= used
    assert all(p["datasource"]["uid"] == datasource_uid for p in dashboard["panels"] if "datasource" in p)
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    # the crop-outside panels: the share of crops more than 10% outside, and its histogram over time
    outside = [e for e in exprs if "stn_crop_outside_fraction" in e]
    assert any('le="0.1"' in e for e in outside) and any("histogram_quantile" in e for e in outside)
    assert any(p["type"] == "heatmap" and "outside" in p["title"] for p in dashboard["panels"])
    buckets = {
        s.labels["le"]
        for family in _registry_with_one_outside_sample().collect()
        for s in family.samples
        if s.name == "stn_crop_outside_fraction_bucket"
    }
    assert "0.1" in buckets  # the bucket the share reads


def test_compose_config_validates(repo_root: Path) -> None:
    """``docker compose config`` (or the older ``docker-compose``) validates the file; no engine needed."""
    if (
        shutil.which("docker")
        and subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0
    ):
        command = ["docker", "compose"]
    elif shutil.which("docker-compose"):
        command = ["docker-compose"]
    else:
        pytest.skip("neither `docker compose` nor `docker-compose` is installed; structure checked above")
    out = subprocess.run(
        [*command, "-f", str(repo_root / "docker-compose.yml"), "config", "-q"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=repo_root,
        env={"PATH": os.environ.get("PATH", ""), "HOME": os.environ.get("HOME", "/tmp")},
    )
    assert out.returncode == 0, out.stdout + out.stderr
