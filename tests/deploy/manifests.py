"""Offline checks of the deployment manifests: Kubernetes schemas, custom resources, a kustomize renderer.

* :func:`validate_k8s` validates one object against the schemas of :data:`K8S_VERSION` that ship inside the
  ``kubernetes-validate`` package (strict: unknown fields are errors); nothing is fetched.
* Custom resources have no schema there: :data:`CR_SCHEMAS` holds the fields each one needs (JSON Schema,
  checked with ``jsonschema``), and the pod templates inside them are validated as core ``Pod`` objects.
* :func:`render` is ``kustomize build`` for the subset of kustomize the overlays use (``resources``,
  ``namespace``, ``images``, ``patches`` with RFC 6902 JSON patches); anything else is refused, so the
  renderer cannot silently diverge from kustomize. Where ``kubectl`` is installed, a test compares both
  renders.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import yaml

K8S_VERSION = "1.31.0"
"""The Kubernetes version whose schemas every manifest must satisfy (kubernetes-validate ships 1.25-1.37)."""

REPO_ROOT = Path(__file__).resolve().parents[2]
DEPLOY = REPO_ROOT / "deploy"
KUBERNETES = DEPLOY / "kubernetes"
OVERLAYS = ("cpu", "gpu", "models-volume")

CUSTOM_KINDS = {
    ("serving.kserve.io/v1beta1", "InferenceService"),
    ("monitoring.coreos.com/v1", "ServiceMonitor"),
    ("kubeflow.org/v1", "PyTorchJob"),
}


class ManifestError(ValueError):
    """A manifest (or an overlay) that must be refused."""


def load_documents(path: Path) -> list[dict[str, Any]]:
    """Every non-empty YAML document of ``path``."""
    return [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d is not None]


def is_object(document: Any) -> bool:
    """A Kubernetes object (apiVersion + kind), not a Kustomization, a JSON patch or Helm values."""
    return (
        isinstance(document, dict)
        and "apiVersion" in document
        and "kind" in document
        and document["kind"] != "Kustomization"
    )


def manifest_files() -> list[Path]:
    """Every YAML file of deploy/kubernetes, deploy/kserve and deploy/training holding Kubernetes objects."""
    files = []
    for folder in (KUBERNETES, DEPLOY / "kserve", DEPLOY / "training"):
        for path in sorted(folder.rglob("*.yaml")):
            if any(is_object(d) for d in load_documents(path)):
                files.append(path)
    return files


# --- Kubernetes schemas -----------------------------------------------------------------------------------


def validate_k8s(obj: dict[str, Any]) -> None:
    """Validate a built-in Kubernetes object against the pinned schemas (strict).

    Raises:
        ManifestError: the object breaks the schema, or its kind/apiVersion has no schema in that version.
    """
    try:
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
    except kubernetes_validate.ValidationError as exc:
        where = "/".join(str(p) for p in exc.path)
        raise ManifestError(f"{describe(obj)}: {where}: {exc.message}") from None
    except kubernetes_validate.SchemaNotFoundError as exc:
        raise ManifestError(f"{describe(obj)}: {exc.message}") from None


def validate_pod_spec(spec: dict[str, Any], name: str) -> None:
    """Validate a pod spec embedded in a custom resource as the spec of a core ``v1`` Pod."""
    validate_k8s({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": spec})


def describe(obj: dict[str, Any]) -> str:
    return f"{obj.get('kind')}/{obj.get('metadata', {}).get('name')}"


# --- custom resources -------------------------------------------------------------------------------------

_NAMED_CONTAINERS = {
    "type": "array",
    "minItems": 1,
    "items": {"type": "object", "required": ["name", "image"]},
}
_POD_TEMPLATE = {
    "type": "object",
    "required": ["spec"],
    "properties": {
        "spec": {
            "type": "object",
            "required": ["containers"],
            "properties": {"containers": _NAMED_CONTAINERS},
        }
    },
}
_REPLICA_SPEC = {
    "type": "object",
    "required": ["replicas", "template"],
    "properties": {
        "replicas": {"type": "integer", "minimum": 1},
        "restartPolicy": {"enum": ["Always", "OnFailure", "Never", "ExitCode"]},
        "template": _POD_TEMPLATE,
    },
}
_METADATA = {"type": "object", "required": ["name"], "properties": {"name": {"type": "string"}}}

CR_SCHEMAS: dict[str, dict[str, Any]] = {
    # serving.kserve.io/v1beta1 InferenceService with a custom predictor (pkg/apis/serving/v1beta1).
    "InferenceService": {
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {
            "metadata": _METADATA,
            "spec": {
                "type": "object",
                "required": ["predictor"],
                "properties": {
                    "predictor": {
                        "type": "object",
                        "required": ["containers"],
                        "properties": {
                            "containers": _NAMED_CONTAINERS,
                            "minReplicas": {"type": "integer", "minimum": 0},
                            "maxReplicas": {"type": "integer", "minimum": 1},
                            "timeout": {"type": "integer", "minimum": 1},
                            "scaleMetric": {"enum": ["cpu", "memory", "concurrency", "rps"]},
                            "scaleTarget": {"type": "integer", "minimum": 1},
                        },
                    }
                },
            },
        },
    },
    # monitoring.coreos.com/v1 ServiceMonitor (prometheus-operator's CRD: selector and endpoints required).
    "ServiceMonitor": {
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {
            "metadata": _METADATA,
            "spec": {
                "type": "object",
                "required": ["selector", "endpoints"],
                "properties": {
                    "selector": {"type": "object", "minProperties": 1},
                    "endpoints": {
                        "type": "array",
                        "minItems": 1,
                        "items": {
                            "type": "object",
                            "anyOf": [{"required": ["port"]}, {"required": ["targetPort"]}],
                            "properties": {
                                "port": {"type": "string"},
                                "path": {"type": "string", "pattern": "^/"},
                                "interval": {"type": "string", "pattern": "^[0-9]+(ms|s|m|h)$"},
                                "scrapeTimeout": {"type": "string", "pattern": "^[0-9]+(ms|s|m|h)$"},
                            },
                        },
                    },
                },
            },
        },
    },
    # kubeflow.org/v1 PyTorchJob (training-operator): replica specs keyed Master / Worker.
    "PyTorchJob": {
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {
            "metadata": _METADATA,
            "spec": {
                "type": "object",
                "required": ["pytorchReplicaSpecs"],
                "properties": {
                    "pytorchReplicaSpecs": {
                        "type": "object",
                        "required": ["Master"],
                        "additionalProperties": False,
                        "properties": {"Master": _REPLICA_SPEC, "Worker": _REPLICA_SPEC},
                    }
                },
            },
        },
    },
}


def validate_custom(obj: dict[str, Any]) -> None:
    """Check a custom resource's required fields, the container its controller needs, and its pod templates
    against the core Pod schema.

    Raises:
        ManifestError: a missing or wrong field.
    """
    if (obj.get("apiVersion"), obj.get("kind")) not in CUSTOM_KINDS:
        raise ManifestError(f"{describe(obj)}: unknown custom resource {obj.get('apiVersion')}")
    try:
        jsonschema.validate(obj, CR_SCHEMAS[obj["kind"]])
    except jsonschema.ValidationError as exc:
        where = "/".join(str(p) for p in exc.path)
        raise ManifestError(f"{describe(obj)}: {where}: {exc.message}") from None
    if obj["kind"] == "InferenceService":
        predictor = obj["spec"]["predictor"]
        names = [c["name"] for c in predictor["containers"]]
        if "kserve-container" not in names:
            raise ManifestError(
                f"{describe(obj)}: a custom predictor needs a container named kserve-container"
            )
        extension = {
            "minReplicas", "maxReplicas", "scaleTarget", "scaleMetric", "scaleMetricType", "timeout",
            "containerConcurrency", "canaryTrafficPercent", "logger", "batcher", "labels", "annotations",
            "deploymentStrategy", "autoScaling", "minAvailable", "maxUnavailable",
        }  # fmt: skip
        validate_pod_spec({k: v for k, v in predictor.items() if k not in extension}, obj["metadata"]["name"])
    elif obj["kind"] == "PyTorchJob":
        for role, replica in obj["spec"]["pytorchReplicaSpecs"].items():
            names = [c["name"] for c in replica["template"]["spec"]["containers"]]
            if "pytorch" not in names:
                raise ManifestError(
                    f"{describe(obj)}: {role} needs a container named pytorch (the operator's)"
                )
            validate_pod_spec(replica["template"]["spec"], f"{obj['metadata']['name']}-{role.lower()}")


def validate_any(obj: dict[str, Any]) -> None:
    """Built-in kinds against the Kubernetes schemas, custom kinds with :func:`validate_custom`."""
    if (obj.get("apiVersion"), obj.get("kind")) in CUSTOM_KINDS:
        validate_custom(obj)
    else:
        validate_k8s(obj)


# --- JSON patch (RFC 6902) and the kustomize subset -------------------------------------------------------


def _pointer(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise ManifestError(f"JSON pointer must start with '/': {path!r}")
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def _index(container: list[Any], token: str, *, append: bool) -> int:
    if token == "-" and append:
        return len(container)
    if not re.fullmatch(r"0|[1-9][0-9]*", token):
        raise ManifestError(f"not a list index: {token!r}")
    index = int(token)
    if index > len(container) or (index == len(container) and not append):
        raise ManifestError(f"list index {index} out of range ({len(container)} items)")
    return index


def _parent(document: Any, path: str) -> tuple[Any, str]:
    tokens = _pointer(path)
    if not tokens:
        raise ManifestError("a patch of the whole document is not supported")
    node = document
    for token in tokens[:-1]:
        if isinstance(node, list):
            node = node[_index(node, token, append=False)]
        elif isinstance(node, dict) and token in node:
            node = node[token]
        else:
            raise ManifestError(f"path {path!r} does not exist")
    return node, tokens[-1]


def apply_json_patch(document: dict[str, Any], operations: list[dict[str, Any]]) -> None:
    """Apply RFC 6902 ``add``, ``remove``, ``replace`` and ``test`` operations in place.

    Raises:
        ManifestError: a path that does not exist, a failed ``test``, or an unsupported operation.
    """
    if not isinstance(operations, list):
        raise ManifestError("a JSON patch is a list of operations")
    for op in operations:
        kind, path = op.get("op"), op.get("path", "")
        parent, token = _parent(document, path)
        if kind == "test":
            actual = (
                parent[_index(parent, token, append=False)] if isinstance(parent, list) else parent.get(token)
            )
            if actual != op.get("value"):
                raise ManifestError(f"test failed at {path}: {actual!r} != {op.get('value')!r}")
        elif kind == "add":
            if isinstance(parent, list):
                parent.insert(_index(parent, token, append=True), copy.deepcopy(op["value"]))
            else:
                parent[token] = copy.deepcopy(op["value"])
        elif kind in ("remove", "replace"):
            if isinstance(parent, list):
                index = _index(parent, token, append=False)
                if kind == "remove":
                    del parent[index]
                else:
                    parent[index] = copy.deepcopy(op["value"])
            elif token not in parent:
                raise ManifestError(f"{kind}: path {path!r} does not exist")
            elif kind == "remove":
                del parent[token]
            else:
                parent[token] = copy.deepcopy(op["value"])
        else:
            raise ManifestError(f"unsupported JSON patch operation {kind!r}")


_KUSTOMIZATION_KEYS = {"apiVersion", "kind", "resources", "namespace", "images", "patches"}


def _matches(obj: dict[str, Any], target: dict[str, Any]) -> bool:
    unknown = set(target) - {"kind", "name"}
    if unknown:
        raise ManifestError(f"patch target selects by {sorted(unknown)}: not supported by this renderer")
    return all(
        (key == "kind" and obj["kind"] == value) or (key == "name" and obj["metadata"]["name"] == value)
        for key, value in target.items()
    )


def _pod_specs(obj: dict[str, Any]) -> Iterable[dict[str, Any]]:
    spec = obj.get("spec", {})
    if obj["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "Job", "ReplicaSet"):
        yield spec["template"]["spec"]
    elif obj["kind"] == "Pod":
        yield spec


def _set_image(container: dict[str, Any], image: dict[str, Any]) -> None:
    name, tag = container["image"], None
    if "@" not in name and ":" in name.rsplit("/", 1)[-1]:
        name, tag = name.rsplit(":", 1)
    if name != image["name"]:
        return
    new_name = image.get("newName", name)
    new_tag = image.get("newTag", tag)
    container["image"] = f"{new_name}:{new_tag}" if new_tag else new_name


def render(folder: Path) -> list[dict[str, Any]]:
    """What ``kustomize build folder`` outputs, for the kustomize subset the overlays use.

    Raises:
        ManifestError: a kustomization key or patch form this renderer does not implement, a patch whose
            target matches nothing, or a failing patch.
    """
    path = folder / "kustomization.yaml"
    kustomization = yaml.safe_load(path.read_text(encoding="utf-8"))
    unknown = set(kustomization) - _KUSTOMIZATION_KEYS
    if unknown:
        raise ManifestError(
            f"{path}: kustomization keys {sorted(unknown)} are not supported by this renderer"
        )
    objects: list[dict[str, Any]] = []
    for entry in kustomization.get("resources", []):
        resource = (folder / entry).resolve()
        objects.extend(render(resource) if resource.is_dir() else load_documents(resource))
    for patch in kustomization.get("patches", []):
        if "path" in patch:
            operations = yaml.safe_load((folder / patch["path"]).read_text(encoding="utf-8"))
        else:
            operations = yaml.safe_load(patch["patch"])
        targets = [o for o in objects if _matches(o, patch.get("target", {}))]
        if not targets:
            raise ManifestError(f"{path}: patch target {patch.get('target')} matches no resource")
        for obj in targets:
            try:
                apply_json_patch(obj, operations)
            except ManifestError as exc:
                raise ManifestError(f"{path}: {describe(obj)}: {exc}") from None
    for image in kustomization.get("images", []):
        for obj in objects:
            for pod in _pod_specs(obj):
                for container in pod.get("containers", []) + pod.get("initContainers", []):
                    _set_image(container, image)
    if "namespace" in kustomization:
        for obj in objects:
            obj.setdefault("metadata", {})["namespace"] = kustomization["namespace"]
    return objects


def by_kind(objects: Iterable[dict[str, Any]], kind: str) -> dict[str, Any]:
    """The only object of ``kind`` in ``objects``."""
    (found,) = [o for o in objects if o["kind"] == kind]
    return found


def env_of(container: dict[str, Any]) -> dict[str, Any]:
    """A container's environment: literal values as strings, ``valueFrom`` entries as their dicts."""
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}
