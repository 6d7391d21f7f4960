"""CURVE on the TCP links: a worker with keys serves only the gateways whose public keys are in
its authorized folder, on its node socket and on every runner socket; any other gateway gets
nothing and its /readyz says why."""

from __future__ import annotations

import os
import stat
import subprocess
import sys

import httpx
import zmq
from zmq.utils.monitor import recv_monitor_message

from support.cluster import RawGateway, blob_digest, keygen
from support.herd_server import ROOT, HerdServer, free_port, wait_until


def test_keygen_writes_a_private_secret_and_a_public_key(tmp_path) -> None:
    r = subprocess.run([sys.executable, "-m", "herd.cli", "keygen", str(tmp_path / "gw")],
                       cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert stat.S_IMODE(os.stat(tmp_path / "gw.key").st_mode) == 0o600
    public, secret = zmq.auth.load_certificate(str(tmp_path / "gw.key"))
    assert secret and zmq.auth.load_certificate(str(tmp_path / "gw.pub")) == (public, None)
    # It never overwrites a key pair.
    again = subprocess.run([sys.executable, "-m", "herd.cli", "keygen", str(tmp_path / "gw")],
                           cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert again.returncode == 1 and "already exists" in again.stderr


def test_only_authorized_gateways_are_served(tmp_path, tiny_gguf) -> None:
    keys = tmp_path / "keys"
    authorized = tmp_path / "authorized"
    keys.mkdir()
    authorized.mkdir()
    for name in ("worker", "good", "intruder"):
        keygen(keys / name)
    (authorized / "good.pub").write_bytes((keys / "good.pub").read_bytes())
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    models = tmp_path / "models"
    worker = HerdServer(tmp_path / "worker", models_dir=models, command=("worker", "--bind", endpoint),
                        env={"HERD_CURVE_SECRET_KEY": str(keys / "worker.key"),
                             "HERD_CURVE_AUTHORIZED": str(authorized)})

    def gateway(name: str, **env: str) -> HerdServer:
        return HerdServer(tmp_path / name, models_dir=models, command=("gateway",),
                          env={"HERD_WORKERS": endpoint, **env})

    good = gateway("good", HERD_CURVE_SECRET_KEY=str(keys / "good.key"),
                   HERD_CURVE_SERVER_KEY=str(keys / "worker.pub"))
    intruder = gateway("intruder", HERD_CURVE_SECRET_KEY=str(keys / "intruder.key"),
                       HERD_CURVE_SERVER_KEY=str(keys / "worker.pub"))
    keyless = gateway("keyless")
    with worker, good, intruder, keyless:
        good.create_model("tiny", tiny_gguf)
        assert wait_until(lambda: httpx.get(good.url + "/readyz").status_code == 200)
        r = good.client().generate(model="tiny", prompt="hello", options={"num_predict": 4})
        assert r.eval_count == 4

        # The intruder's and the keyless gateway's readiness says why they cannot serve.
        def reason(gw: HerdServer) -> str:
            ready = httpx.get(gw.url + "/readyz")
            return "" if ready.status_code == 200 else ready.json()["error"]

        assert wait_until(lambda: "refused this gateway's CURVE key" in reason(intruder))
        assert wait_until(lambda: "requires CURVE keys" in reason(keyless))
        for gw in (intruder, keyless):
            # No load, no inference ...
            denied = httpx.post(gw.url + "/api/generate",
                                json={"model": "tiny", "prompt": "hi", "stream": False})
            assert denied.status_code >= 500, denied.text
            assert "reachable" in denied.json()["error"]
            # ... and nothing listed as running for it.
            assert httpx.get(gw.url + "/api/ps").json()["models"] == []
        # The one runner the good gateway uses is still the only one.
        assert len(worker.runner_pids()) == 1

        # The runner's own socket is CURVE too: an authorized peer gets its endpoint from the
        # node; the intruder's key is refused at the runner's handshake.
        with RawGateway(endpoint, keys / "good.key", keys / "worker.pub") as raw:
            loaded = raw.load(blob_digest(models, tiny_gguf), key="raw-probe")
        assert loaded.endpoint.startswith("tcp://127.0.0.1:")  # binds where its node binds
        ctx = zmq.Context.instance()
        sock = ctx.socket(zmq.DEALER)
        public, secret = zmq.auth.load_certificate(str(keys / "intruder.key"))
        sock.curve_publickey, sock.curve_secretkey = public, secret
        sock.curve_serverkey = zmq.auth.load_certificate(str(keys / "worker.pub"))[0]
        monitor = sock.get_monitor_socket(addr="inproc://test-intruder")
        sock.connect(loaded.endpoint)
        events = []
        while zmq.EVENT_HANDSHAKE_FAILED_AUTH not in events and monitor.poll(30_000):
            events.append(recv_monitor_message(monitor)["event"])
        assert zmq.EVENT_HANDSHAKE_FAILED_AUTH in events
        assert zmq.EVENT_HANDSHAKE_SUCCEEDED not in events
        sock.disable_monitor()
        monitor.close()
        sock.close()

