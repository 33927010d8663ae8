"""The Kubernetes, KServe and Kubeflow manifests, validated offline (no cluster, no network).

Every object validates against the Kubernetes schemas of a pinned version (kubernetes-validate, strict), the
custom resources have the fields their controllers need, every overlay renders, and the manifests agree with
the service they run: probe routes, ports, drain timing, user id, metric names. Each validator also refuses a
deliberately broken copy.
"""

from __future__ import annotations

import copy
import re
import shutil
import socket
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry

from service.app import create_app
from service.metrics import ServiceMetrics
from service.settings import Settings
from tests.deploy.manifests import (
    DEPLOY,
    KUBERNETES,
    OVERLAYS,
    REPO_ROOT,
    ManifestError,
    apply_json_patch,
    by_kind,
    env_of,
    is_object,
    load_documents,
    manifest_files,
    render,
    validate_any,
    validate_custom,
    validate_k8s,
)
from tests.deploy.tools import require_tool

ADAPTER_VALUES = KUBERNETES / "prometheus-adapter" / "values.yaml"


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[dict[str, Any]]]:
    return {name: render(KUBERNETES / "overlays" / name) for name in OVERLAYS}


def container(deployment: dict[str, Any]) -> dict[str, Any]:
    (only,) = deployment["spec"]["template"]["spec"]["containers"]
    return only


def exported_metrics() -> dict[str, str]:
    """The service's metric families (default prefix) and their types."""
    registry = CollectorRegistry()
    ServiceMetrics(registry, "stn")
    return {family.name: family.type for family in registry.collect()}


# --- schemas ----------------------------------------------------------------------------------------------


def test_every_manifest_file_validates() -> None:
    files = manifest_files()
    names = {p.relative_to(DEPLOY).as_posix() for p in files}
    assert {
        "kubernetes/base/deployment.yaml",
        "kubernetes/base/servicemonitor.yaml",
        "kubernetes/overlays/models-volume/models-pvc.yaml",
        "kserve/inferenceservice.yaml",
        "training/pytorchjob.yaml",
        "training/storage.yaml",
    } <= names
    kinds = set()
    for path in files:
        for obj in load_documents(path):
            if is_object(obj):
                validate_any(obj)
                kinds.add(obj["kind"])
    assert kinds >= {
        "Deployment", "Service", "PodDisruptionBudget", "NetworkPolicy", "HorizontalPodAutoscaler",
        "ServiceMonitor", "InferenceService", "PyTorchJob", "PersistentVolumeClaim",
    }  # fmt: skip


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_overlay_renders_and_validates(rendered: dict[str, list[dict[str, Any]]], overlay: str) -> None:
    objects = rendered[overlay]
    for obj in objects:
        validate_any(obj)
        assert obj["metadata"]["namespace"] == "stn-signs"
    image = container(by_kind(objects, "Deployment"))["image"]
    assert image.startswith("registry.example.com/stn-signs-service:0.1.0")


def test_validation_needs_no_network(
    rendered: dict[str, list[dict[str, Any]]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The schemas ship inside kubernetes-validate: with every connection refused, validation still works."""

    def no_network(*args: object, **kwargs: object) -> None:
        raise OSError("the validation tried to use the network")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    monkeypatch.setattr(socket, "getaddrinfo", no_network)
    for overlay in OVERLAYS:
        for obj in rendered[overlay]:
            validate_any(obj)


def broken(obj: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    copied = copy.deepcopy(obj)
    apply_json_patch(copied, [{"op": "add", "path": path, "value": value}])
    return copied


def test_the_schema_validator_refuses_broken_copies(rendered: dict[str, list[dict[str, Any]]]) -> None:
    deployment = by_kind(rendered["cpu"], "Deployment")
    validate_k8s(deployment)
    with pytest.raises(ManifestError, match="imagePullPolicyy"):  # a typo: strict mode refuses unknown fields
        validate_k8s(broken(deployment, "/spec/template/spec/containers/0/imagePullPolicyy", "Always"))
    with pytest.raises(ManifestError, match="replicas"):
        validate_k8s(broken(deployment, "/spec/replicas", "two"))
    hpa = by_kind(rendered["cpu"], "HorizontalPodAutoscaler")
    with pytest.raises(ManifestError):  # autoscaling/v2 has no targetCPUUtilizationPercentage
        validate_k8s(broken(hpa, "/spec/targetCPUUtilizationPercentage", 70))
    with pytest.raises(ManifestError, match="schema"):  # an apiVersion that does not exist in 1.31
        validate_k8s({**hpa, "apiVersion": "autoscaling/v2beta1"})


# --- custom resources -------------------------------------------------------------------------------------


def custom_resource(path: str) -> dict[str, Any]:
    (obj,) = [d for d in load_documents(DEPLOY / path) if is_object(d)]
    return obj


@pytest.mark.parametrize(
    ("path", "breakage", "message"),
    [
        ("kserve/inferenceservice.yaml", [{"op": "remove", "path": "/spec/predictor"}], "predictor"),
        (
            "kserve/inferenceservice.yaml",
            [{"op": "replace", "path": "/spec/predictor/containers/0/name", "value": "server"}],
            "kserve-container",
        ),
        (
            "kserve/inferenceservice.yaml",  # the embedded pod spec is checked against the core schema
            [{"op": "add", "path": "/spec/predictor/containers/0/readinessProbe/httpGet/paht", "value": "/"}],
            "paht",
        ),
        ("kubernetes/base/servicemonitor.yaml", [{"op": "remove", "path": "/spec/endpoints"}], "endpoints"),
        (
            "kubernetes/base/servicemonitor.yaml",
            [{"op": "replace", "path": "/spec/endpoints/0/interval", "value": "15 seconds"}],
            "does not match",
        ),
        (
            "training/pytorchjob.yaml",
            [{"op": "remove", "path": "/spec/pytorchReplicaSpecs/Master"}],
            "Master",
        ),
        (
            "training/pytorchjob.yaml",
            [{"op": "add", "path": "/spec/pytorchReplicaSpecs/Chief", "value": {}}],
            "Chief",
        ),
        (
            "training/pytorchjob.yaml",
            [
                {
                    "op": "replace",
                    "path": "/spec/pytorchReplicaSpecs/Worker/template/spec/containers/0/name",
                    "value": "trainer",
                }
            ],
            "pytorch",
        ),
    ],
)
def test_custom_resources_have_their_required_fields(
    path: str, breakage: list[dict[str, Any]], message: str
) -> None:
    obj = custom_resource(path)
    validate_custom(obj)
    copied = copy.deepcopy(obj)
    apply_json_patch(copied, breakage)
    with pytest.raises(ManifestError, match=message):
        validate_custom(copied)


# --- rendering --------------------------------------------------------------------------------------------


def test_the_renderer_refuses_what_it_cannot_render(tmp_path: Path) -> None:
    overlay = tmp_path / "deploy" / "kubernetes" / "overlays" / "gpu"
    shutil.copytree(KUBERNETES, tmp_path / "deploy" / "kubernetes")
    patch = overlay / "deployment-gpu.yaml"
    operations = yaml.safe_load(patch.read_text())
    # the base's env reordered: the guarding `test` must stop the patch from changing the wrong variable
    operations[0]["value"] = "SERVICE_MODELS_DIR"
    patch.write_text(yaml.safe_dump(operations))
    with pytest.raises(ManifestError, match="test failed"):
        render(overlay)
    shutil.copy(KUBERNETES / "overlays" / "gpu" / patch.name, patch)
    render(overlay)
    kustomization = overlay / "kustomization.yaml"
    text = kustomization.read_text()
    kustomization.write_text(text + "commonLabels:\n  team: vision\n")
    with pytest.raises(ManifestError, match="commonLabels"):
        render(overlay)
    target = "kind: Deployment\n      name: stn-signs-service"
    assert target in text
    kustomization.write_text(text.replace(target, "kind: Deployment\n      name: no-such-deployment"))
    with pytest.raises(ManifestError, match="matches no resource"):
        render(overlay)


def key(obj: dict[str, Any]) -> tuple[str, str, str]:
    return obj["kind"], obj["metadata"].get("namespace", ""), obj["metadata"]["name"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_renderer_agrees_with_kustomize(rendered: dict[str, list[dict[str, Any]]], overlay: str) -> None:
    """``kubectl kustomize`` (kustomize built into kubectl), where installed, gives the very same objects."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed; the Python renderer alone rendered the overlays")
    out = subprocess.run(
        [kubectl, "kustomize", str(KUBERNETES / "overlays" / overlay)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    theirs = {key(o): o for o in yaml.safe_load_all(out.stdout) if o}
    ours = {key(o): o for o in rendered[overlay]}
    assert theirs == ours


# --- the manifests agree with the service -----------------------------------------------------------------


def dockerfile_env() -> dict[str, str]:
    text = (REPO_ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    env: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("ENV "):
            env.update(dict(re.findall(r"([A-Z_]+)=(\S+)", line)))
    return env


def dockerfile_user() -> str:
    return [
        line.split()[1]
        for line in (REPO_ROOT / "Dockerfile").read_text().splitlines()
        if line.startswith("USER ")
    ][-1]


def test_the_deployment_runs_the_service_as_built(rendered: dict[str, list[dict[str, Any]]]) -> None:
    deployment = by_kind(rendered["cpu"], "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    main = container(deployment)
    assert main["command"] == ["python", "-m", "service"]
    port = int(main["args"][main["args"].index("--port") + 1])
    assert main["ports"] == [{"name": "http", "containerPort": port, "protocol": "TCP"}]
    env = env_of(main)
    literal = {k[len("SERVICE_") :].lower(): v for k, v in env.items() if isinstance(v, str)}
    settings = Settings(**literal)  # every literal SERVICE_* value is a valid setting
    assert env["SERVICE_MODELS_DIR"] == dockerfile_env()["SERVICE_MODELS_DIR"] == "/app/models"
    assert env["SERVICE_INTRA_OP_THREADS"] == {"resourceFieldRef": {"resource": "limits.cpu", "divisor": "1"}}
    assert env["SERVICE_API_KEY"]["secretKeyRef"]["optional"] is True

    # probes on the service's own /v2 health routes
    routes = set(create_app(Settings(models_dir=Path("/nonexistent"))).openapi()["paths"])
    assert main["readinessProbe"]["httpGet"] == {"path": "/v2/health/ready", "port": "http"}
    assert main["livenessProbe"]["httpGet"] == {"path": "/v2/health/live", "port": "http"}
    assert main["startupProbe"]["httpGet"]["path"] in routes
    assert {"/v2/health/ready", "/v2/health/live"} <= routes

    # drain: the grace period covers the preStop sleep, uvicorn's drain and the lifespan's queue drain
    sleep = int(main["lifecycle"]["preStop"]["exec"]["command"][1])
    assert pod["terminationGracePeriodSeconds"] >= sleep + settings.shutdown_timeout_s + 5
    assert settings.shutdown_timeout_s == Settings.model_fields["shutdown_timeout_s"].default

    # non-root (the image's numeric user), read-only root, no capabilities; /tmp the only writable path
    uid, gid = dockerfile_user().split(":")
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert (pod["securityContext"]["runAsUser"], pod["securityContext"]["runAsGroup"]) == (int(uid), int(gid))
    security = main["securityContext"]
    assert security["readOnlyRootFilesystem"] is True and security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]
    assert main["volumeMounts"] == [{"name": "tmp", "mountPath": "/tmp"}]
    assert pod["volumes"][0]["name"] == "tmp" and "emptyDir" in pod["volumes"][0]
    assert main["resources"]["requests"]["cpu"] == main["resources"]["limits"]["cpu"]


def test_service_pdb_networkpolicy_and_monitor_select_the_pods(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    objects = rendered["cpu"]
    deployment = by_kind(objects, "Deployment")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    service = by_kind(objects, "Service")
    pdb = by_kind(objects, "PodDisruptionBudget")
    policy = by_kind(objects, "NetworkPolicy")
    monitor = by_kind(objects, "ServiceMonitor")
    for selector in (
        service["spec"]["selector"],
        pdb["spec"]["selector"]["matchLabels"],
        policy["spec"]["podSelector"]["matchLabels"],
        deployment["spec"]["selector"]["matchLabels"],
    ):
        assert selector.items() <= labels.items()
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    port_names = {p["name"] for p in service["spec"]["ports"]}
    assert monitor["spec"]["endpoints"][0]["port"] in port_names
    assert monitor["spec"]["endpoints"][0]["path"] == "/metrics"
    assert service["spec"]["ports"][0]["targetPort"] == "http"
    assert policy["spec"]["ingress"][0]["ports"] == [{"port": "http", "protocol": "TCP"}]
    assert policy["spec"]["egress"] == [] and "Egress" in policy["spec"]["policyTypes"]
    hpa = by_kind(objects, "HorizontalPodAutoscaler")
    assert pdb["spec"]["maxUnavailable"] < hpa["spec"]["minReplicas"] <= deployment["spec"]["replicas"]


def adapter_rules() -> list[dict[str, Any]]:
    return list(yaml.safe_load(ADAPTER_VALUES.read_text())["rules"]["custom"])


def check_hpa_metrics(hpa: dict[str, Any], rules: list[dict[str, Any]]) -> None:
    """Every custom metric of the HPA is served by a prometheus-adapter rule over a gauge the service exports.

    Raises:
        ManifestError: a metric no rule serves, or a rule over a series the service does not export.
    """
    exported = exported_metrics()
    served = {}
    for rule in rules:
        for field in ("seriesQuery", "resources", "name", "metricsQuery"):
            if field not in rule:
                raise ManifestError(f"adapter rule without {field}: {rule}")
        series = re.match(r"[a-zA-Z_:][a-zA-Z0-9_:]*", rule["seriesQuery"].strip("'\""))
        if series is None or exported.get(series.group(0)) != "gauge":
            raise ManifestError(f"adapter rule over {rule['seriesQuery']!r}: not a gauge the service exports")
        if rule["resources"]["overrides"].get("pod", {}).get("resource") != "pod":
            raise ManifestError(f"adapter rule {rule['name']} does not map the pod label to pods")
        for placeholder in ("<<.Series>>", "<<.LabelMatchers>>", "<<.GroupBy>>"):
            if placeholder not in rule["metricsQuery"]:
                raise ManifestError(f"adapter rule {rule['name']}: metricsQuery lacks {placeholder}")
        served[rule["name"]["as"]] = rule
    for metric in hpa["spec"]["metrics"]:
        if metric["type"] == "Pods" and metric["pods"]["metric"]["name"] not in served:
            raise ManifestError(f"HPA metric {metric['pods']['metric']['name']} is served by no adapter rule")


def test_the_hpa_scales_on_cpu_and_a_metric_the_adapter_serves(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    hpa = by_kind(rendered["cpu"], "HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": by_kind(rendered["cpu"], "Deployment")["metadata"]["name"],
    }
    types = [m["type"] for m in hpa["spec"]["metrics"]]
    assert types == ["Resource", "Pods"]
    assert hpa["spec"]["metrics"][1]["pods"]["metric"]["name"] == "stn_requests_in_flight"
    rules = adapter_rules()
    check_hpa_metrics(hpa, rules)
    check_hpa_metrics(by_kind(rendered["gpu"], "HorizontalPodAutoscaler"), rules)
    unserved = broken(hpa, "/spec/metrics/1/pods/metric/name", "stn_requests_waiting")
    with pytest.raises(ManifestError, match="served by no adapter rule"):
        check_hpa_metrics(unserved, rules)
    wrong_series = copy.deepcopy(rules)
    wrong_series[0]["seriesQuery"] = 'stn_requests_total{namespace!="",pod!=""}'  # a counter, not a gauge
    with pytest.raises(ManifestError, match="not a gauge"):
        check_hpa_metrics(hpa, wrong_series)


def expand(rule: dict[str, Any]) -> str:
    """The adapter's metricsQuery as it sends it for two pods of one namespace."""
    series = re.match(r"[a-zA-Z_:][a-zA-Z0-9_:]*", rule["seriesQuery"].strip("'\"")).group(0)  # type: ignore[union-attr]
    return (
        rule["metricsQuery"]
        .replace("<<.Series>>", series)
        .replace("<<.LabelMatchers>>", 'namespace="stn-signs",pod=~"a|b"')
        .replace("<<.GroupBy>>", "pod")
    )


def promtool_check(queries: list[str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    rules = {
        "groups": [
            {
                "name": "adapter",
                "rules": [{"record": f"adapter:q{i}", "expr": q} for i, q in enumerate(queries)],
            }
        ]
    }
    path = tmp_path / "rules.yml"
    path.write_text(yaml.safe_dump(rules))
    promtool = require_tool("promtool", "prometheus")
    return subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True, timeout=60)


def test_the_adapter_queries_are_valid_promql(tmp_path: Path) -> None:
    """promtool parses every metricsQuery once the adapter's placeholders are filled in (and refuses a broken
    one)."""
    out = promtool_check([expand(rule) for rule in adapter_rules()], tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    out = promtool_check(["sum(avg_over_time(stn_requests_in_flight[1m]) by (pod)"], tmp_path)
    assert out.returncode != 0


def test_the_gpu_overlay(rendered: dict[str, list[dict[str, Any]]]) -> None:
    deployment = by_kind(rendered["gpu"], "Deployment")
    main = container(deployment)
    assert main["image"].endswith("-gpu")
    assert main["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert env_of(main)["SERVICE_EXECUTION_PROVIDER"] == "cuda"
    pod = deployment["spec"]["template"]["spec"]
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
    assert env_of(container(by_kind(rendered["cpu"], "Deployment")))["SERVICE_EXECUTION_PROVIDER"] == "cpu"
    # the image the overlay names is the Dockerfile's onnxruntime-gpu build
    dockerfile = (REPO_ROOT / "Dockerfile").read_text()
    assert "ARG ONNXRUNTIME_PACKAGE=onnxruntime\n" in dockerfile
    assert (
        'ONNXRUNTIME_PACKAGE="onnxruntime-gpu[cuda,cudnn]"'
        in (KUBERNETES / "overlays" / "gpu" / "kustomization.yaml").read_text()
    )
    hpa = by_kind(rendered["gpu"], "HorizontalPodAutoscaler")
    assert [m["type"] for m in hpa["spec"]["metrics"]] == ["Pods"]


def test_the_models_volume_overlay(rendered: dict[str, list[dict[str, Any]]]) -> None:
    objects = rendered["models-volume"]
    main = container(by_kind(objects, "Deployment"))
    assert env_of(main)["SERVICE_MODELS_DIR"] == "/models"
    assert {"name": "models", "mountPath": "/models", "readOnly": True} in main["volumeMounts"]
    claim = by_kind(objects, "PersistentVolumeClaim")["metadata"]["name"]
    volumes = by_kind(objects, "Deployment")["spec"]["template"]["spec"]["volumes"]
    assert {"name": "models", "persistentVolumeClaim": {"claimName": claim, "readOnly": True}} in volumes
    # why not a ConfigMap: a bundle's ONNX file is over the 1 MiB a ConfigMap holds
    onnx = max((REPO_ROOT / "models").glob("*/model.onnx"), key=lambda p: p.stat().st_size)
    assert onnx.stat().st_size > 1024 * 1024


def test_the_inferenceservice(rendered: dict[str, list[dict[str, Any]]]) -> None:
    isvc = custom_resource("kserve/inferenceservice.yaml")
    (main,) = isvc["spec"]["predictor"]["containers"]
    env = env_of(main)
    assert env["PROTOCOL"] == "v2"
    port = int(main["args"][main["args"].index("--port") + 1])
    assert main["ports"][0]["containerPort"] == port == 8080
    assert main["readinessProbe"]["httpGet"] == {"path": "/v2/health/ready", "port": port}
    assert main["livenessProbe"]["httpGet"] == {"path": "/v2/health/live", "port": port}
    Settings(**{k[len("SERVICE_") :].lower(): v for k, v in env.items() if k.startswith("SERVICE_")})
    cpu_image = container(by_kind(rendered["cpu"], "Deployment"))["image"]
    assert main["image"] == cpu_image


def test_the_pytorchjob_is_two_nodes_of_one_gpu() -> None:
    job = custom_resource("training/pytorchjob.yaml")
    replicas = job["spec"]["pytorchReplicaSpecs"]
    assert replicas["Master"]["replicas"] == 1 and replicas["Worker"]["replicas"] == 1
    for replica in replicas.values():
        (main,) = replica["template"]["spec"]["containers"]
        assert main["resources"]["limits"]["nvidia.com/gpu"] == 1
        args = main["args"]
        assert "--nnodes=2" in args and "--nproc-per-node=1" in args
        assert "--node-rank=$(RANK)" in args and "--master-addr=$(MASTER_ADDR)" in args
        assert args[args.index("--no-python") + 1 : args.index("--no-python") + 3] == [
            "sh",
            "deploy/training/run-train.sh",
        ]
        assert main["ports"][0]["name"] == "pytorchjob-port"
