"""A dropped TCP link to a node comes back by itself; a lease lost in the outage is reconciled:
the node stopped the runner nobody renewed, the gateway drops it when the node's heartbeat
answer no longer names it, and the next request loads a fresh one."""

from __future__ import annotations

import httpx

from support.cluster import TcpProxy
from support.herd_server import HerdServer, free_port, wait_until


def test_the_link_comes_back_and_lost_leases_are_reconciled(tmp_path, tiny_gguf) -> None:
    port = free_port()
    models = tmp_path / "models"
    worker = HerdServer(tmp_path / "worker", models_dir=models,
                        command=("worker", "--bind", f"tcp://127.0.0.1:{port}"),
                        env={"HERD_LEASE_TIMEOUT": "2"})
    proxy = TcpProxy(port)
    gateway = HerdServer(tmp_path / "gw", models_dir=models, command=("gateway",),
                         env={"HERD_WORKERS": proxy.endpoint})
    try:
        with worker, gateway:
            gateway.create_model("tiny", tiny_gguf)
            r = gateway.client().generate(model="tiny", prompt="hi", options={"num_predict": 2})
            assert r.eval_count == 2
            (first,) = worker.runner_pids()

            proxy.cut()
            # No heartbeat reaches the node: the lease expires and the runner stops.
            assert wait_until(lambda: worker.runner_pids() == [], timeout=60)
            assert wait_until(lambda: httpx.get(gateway.url + "/readyz").status_code == 503)
            proxy.restore()
            assert wait_until(lambda: httpx.get(gateway.url + "/readyz").status_code == 200,
                              timeout=60)
            # The gateway no longer lists the runner that died while it could not hear...
            assert wait_until(lambda: httpx.get(gateway.url + "/api/ps").json()["models"] == [])
            # ... and the next request starts a fresh one.
            r = gateway.client().generate(model="tiny", prompt="hi", options={"num_predict": 2})
            assert r.eval_count == 2
            assert worker.runner_pids() and worker.runner_pids() != [first]
    finally:
        proxy.close()
