"""compose.yaml is valid for Docker Compose (checked with the docker-compose CLI, no engine),
with CURVE keys as secrets, gateways health-checked on /readyz, and nginx re-resolving them."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from support.herd_server import ROOT


@pytest.mark.skipif(shutil.which("docker-compose") is None, reason="docker-compose is not installed")
def test_compose_file_is_valid() -> None:
    r = subprocess.run(["docker-compose", "-f", str(ROOT / "compose.yaml"), "config", "-q"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr


@pytest.mark.skipif(shutil.which("docker-compose") is None, reason="docker-compose is not installed")
def test_compose_runs_gateway_replicas_and_a_worker_per_gpu() -> None:
    import yaml  # docker-compose depends on PyYAML; the venv may not have it

    config = yaml.safe_load((ROOT / "compose.yaml").read_text())
    services = config["services"]
    workers = [name for name in services if name.startswith("worker-")]
    assert len(workers) >= 2
    endpoints = services["gateway"]["environment"]["HERD_WORKERS"].split(",")
    assert endpoints == [f"tcp://{w}:11435" for w in workers]
    assert services["gateway"]["deploy"]["replicas"] >= 2
    assert "lb" in services


@pytest.mark.skipif(shutil.which("docker-compose") is None, reason="docker-compose is not installed")
def test_compose_links_are_keyed_and_gateways_checked_for_readiness() -> None:
    import yaml

    config = yaml.safe_load((ROOT / "compose.yaml").read_text())
    services = config["services"]
    for name in (n for n in services if n.startswith("worker-")):
        env = services[name]["environment"]
        assert env["HERD_CURVE_SECRET_KEY"] == "/run/secrets/herd_worker_key"
        assert env["HERD_CURVE_AUTHORIZED"] == "/run/secrets/herd_authorized_gateways"
        assert set(services[name]["secrets"]) == {"herd_worker_key", "herd_authorized_gateways"}
    gateway = services["gateway"]
    assert gateway["environment"]["HERD_CURVE_SERVER_KEY"] == "/run/secrets/herd_worker_pub"
    assert "/readyz" in " ".join(gateway["healthcheck"]["test"])
    assert services["lb"]["depends_on"]["gateway"]["condition"] == "service_healthy"
    assert set(config["secrets"]) == {"herd_worker_key", "herd_worker_pub", "herd_gateway_key",
                                      "herd_authorized_gateways"}


def test_nginx_re_resolves_the_gateways_and_skips_unready_ones() -> None:
    conf = (ROOT / "deploy" / "nginx.conf").read_text()
    assert "resolver 127.0.0.11" in conf
    assert "server gateway:11434 resolve" in conf and "zone gateways" in conf
    assert "proxy_next_upstream error timeout http_502 http_503 non_idempotent;" in conf
