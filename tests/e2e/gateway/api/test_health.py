"""GET /healthz (the process answers) and GET /readyz (a worker node answers and the store is
readable; else 503 with the reason), for load balancers (ollama#1378)."""

from __future__ import annotations

import shutil

import httpx
from support.herd_server import HerdServer, free_port, wait_until


def test_healthz_and_readyz_on_a_serving_server(server) -> None:
    r = httpx.get(server.url + "/healthz")
    assert r.status_code == 200 and r.json() == {"status": "ok"}
    assert wait_until(lambda: httpx.get(server.url + "/readyz").status_code == 200)
    ready = httpx.get(server.url + "/readyz").json()
    assert (ready["status"], ready["nodes"]) == ("ready", 1)
    assert [w["ready"] for w in ready["workers"]] == [True]


def test_not_ready_without_a_reachable_worker(tmp_path) -> None:
    endpoint = f"tcp://127.0.0.1:{free_port()}"  # nothing listens there
    with HerdServer(tmp_path, command=("gateway",), env={"HERD_WORKERS": endpoint}) as gw:
        assert httpx.get(gw.url + "/healthz").status_code == 200
        r = httpx.get(gw.url + "/readyz")
        assert r.status_code == 503
        assert r.json() == {"error": f"no worker node reachable ({endpoint})"}


def test_not_ready_when_the_store_is_unreadable(tmp_path) -> None:
    with HerdServer(tmp_path) as srv:
        assert wait_until(lambda: httpx.get(srv.url + "/readyz").status_code == 200)
        shutil.rmtree(srv.models_dir / "manifests")
        r = httpx.get(srv.url + "/readyz")
        assert r.status_code == 503
        assert r.json()["error"].startswith("model store not readable: ")
        assert httpx.get(srv.url + "/healthz").status_code == 200
