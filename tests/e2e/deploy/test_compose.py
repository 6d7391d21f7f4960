"""compose.yaml is valid for Docker Compose (checked with the docker-compose CLI, no engine)."""

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
