"""deploy/k8s builds with kustomize and every resource validates against the Kubernetes API
schemas (kubernetes-validate ships them: no cluster needed); the set has what a Herd cluster
needs: gateways probed on /healthz and /readyz and drained before stop, GPU workers behind a
headless Service the gateways discover, one shared model volume, CURVE keys from Secrets."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from support.herd_server import ROOT

pytestmark = pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")


@pytest.fixture(scope="module")
def resources() -> dict[tuple[str, str], dict]:
    import yaml

    r = subprocess.run(["kubectl", "kustomize", str(ROOT / "deploy" / "k8s")],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    docs = [d for d in yaml.safe_load_all(r.stdout) if d]
    return {(d["kind"], d["metadata"]["name"]): d for d in docs}


def test_every_resource_matches_the_api_schema(resources) -> None:
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    version = kubernetes_validate.utils.latest_version()
    for resource in resources.values():
        kubernetes_validate.validate(resource, version, strict=True)


def _container(workload: dict) -> dict:
    (container,) = workload["spec"]["template"]["spec"]["containers"]
    return container


def _env(container: dict) -> dict[str, dict]:
    return {e["name"]: e for e in container["env"]}


def _secrets(workload: dict) -> set[str]:
    return {v["secret"]["secretName"] for v in workload["spec"]["template"]["spec"]["volumes"]
            if "secret" in v}


def _claims(workload: dict) -> set[str]:
    return {v["persistentVolumeClaim"]["claimName"]
            for v in workload["spec"]["template"]["spec"]["volumes"] if "persistentVolumeClaim" in v}


def test_gateways_are_probed_and_drained(resources) -> None:
    gateway = resources["Deployment", "herd-gateway"]
    container = _container(gateway)
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["lifecycle"]["preStop"]
    assert gateway["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] > 35
    env = _env(container)
    assert env["HERD_WORKERS"]["value"] == "tcp://herd-worker:11435"
    assert {"HERD_CURVE_SECRET_KEY", "HERD_CURVE_SERVER_KEY"} <= env.keys()
    assert _secrets(gateway) == {"herd-gateway-key", "herd-worker-pub"}
    service = resources["Service", "herd-gateway"]
    assert service["spec"]["selector"] == gateway["spec"]["selector"]["matchLabels"]


def test_workers_get_a_gpu_each_behind_a_headless_service(resources) -> None:
    worker = resources["StatefulSet", "herd-worker"]
    container = _container(worker)
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    headless = resources["Service", worker["spec"]["serviceName"]]
    assert headless["spec"]["clusterIP"] == "None"
    assert headless["spec"]["selector"] == worker["spec"]["selector"]["matchLabels"]
    env = _env(container)
    assert {"HERD_CURVE_SECRET_KEY", "HERD_CURVE_AUTHORIZED"} <= env.keys()
    assert env["HERD_RUNNER_HOST"]["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP"
    assert _secrets(worker) == {"herd-worker-key", "herd-authorized-gateways"}


def test_one_shared_model_volume(resources) -> None:
    claim = resources["PersistentVolumeClaim", "herd-models"]
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]
    assert _claims(resources["Deployment", "herd-gateway"]) == {"herd-models"}
    assert _claims(resources["StatefulSet", "herd-worker"]) == {"herd-models"}
