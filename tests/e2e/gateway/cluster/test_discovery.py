"""HERD_WORKERS may name a DNS name with several addresses (a headless Service, a compose service
with replicas): each address is a node, and the name is re-resolved, so workers join and leave
without a gateway restart. Names are answered by a resolver stub (tests/support/resolver_stub)
in the real gateway process: 127.0.0.1 and 127.0.0.2 are two workers on one port."""

from __future__ import annotations

import json
import os

import httpx

from support.herd_server import HerdServer, free_port, wait_until
from support.herd_server import ROOT

NAME = "herd-workers.test"


def test_a_name_with_two_addresses_is_two_nodes(tmp_path, tiny_gguf) -> None:
    port = free_port()
    models = tmp_path / "models"
    hosts = tmp_path / "hosts.json"
    hosts.write_text(json.dumps({NAME: ["127.0.0.1"]}))
    workers = [HerdServer(tmp_path / f"w{i}", models_dir=models,
                          command=("worker", "--bind", f"tcp://127.0.0.{i + 1}:{port}"))
               for i in range(2)]
    stub = str(ROOT / "tests" / "support" / "resolver_stub")
    gateway = HerdServer(tmp_path / "gw", models_dir=models, command=("gateway",), env={
        "HERD_WORKERS": f"tcp://{NAME}:{port}", "HERD_DISCOVERY_INTERVAL": "0.5",
        "HERD_TEST_HOSTS_FILE": str(hosts),
        "PYTHONPATH": os.pathsep.join([stub, os.environ.get("PYTHONPATH", "")])})

    def ready_nodes() -> list[str]:
        ready = httpx.get(gateway.url + "/readyz")
        if ready.status_code != 200:
            return []
        return sorted(w["endpoint"] for w in ready.json()["workers"] if w["ready"])

    with workers[0], workers[1], gateway:
        gateway.create_model("tiny", tiny_gguf)
        assert wait_until(lambda: ready_nodes() == [f"tcp://127.0.0.1:{port}"])
        # Scaled up: the name now has two addresses, each one a node.
        hosts.write_text(json.dumps({NAME: ["127.0.0.1", "127.0.0.2"]}))
        assert wait_until(lambda: ready_nodes() == [f"tcp://127.0.0.1:{port}",
                                                    f"tcp://127.0.0.2:{port}"])
        r = gateway.client().generate(model="tiny", prompt="hi", options={"num_predict": 2})
        assert r.eval_count == 2
        # Scaled down: the address that left is no longer a node.
        hosts.write_text(json.dumps({NAME: ["127.0.0.2"]}))
        assert wait_until(lambda: ready_nodes() == [f"tcp://127.0.0.2:{port}"])
        r = gateway.client().generate(model="tiny", prompt="again", options={"num_predict": 2})
        assert r.eval_count == 2
