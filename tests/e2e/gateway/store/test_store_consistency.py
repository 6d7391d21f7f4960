"""The store under concurrency and damage, through real servers: a model whose metadata cannot
be read is still listed, the start-up sweep takes only what a dead process (or this one) left,
creates that must pull cannot starve the threads other routes need, and a blob a create has
chosen survives a delete of another model that shared it."""

from __future__ import annotations

import os
import pathlib
import socket
import subprocess
import sys
import threading
import time

import httpx

from herd.gateway.store.blobs import temp_prefix
from support.herd_server import HerdServer, wait_until


def create(server, **body) -> httpx.Response:
    return httpx.post(server.url + "/api/create", json={"stream": False, **body}, timeout=300)


def blob_file(server, digest: str) -> pathlib.Path:
    return pathlib.Path(server.models_dir) / "blobs" / digest.replace(":", "-")


def layer_digest(server, name: str, media_type: str) -> str:
    import json

    host, rest = "registry.ollama.ai", name.split(":")[0]
    path = pathlib.Path(server.models_dir) / "manifests" / host / "library" / rest / "latest"
    manifest = json.loads(path.read_text())
    return next(layer["digest"] for layer in manifest["layers"] if layer["mediaType"] == media_type)


def test_a_model_with_unreadable_metadata_is_listed(server) -> None:
    assert create(server, model="damaged", **{"from": "tiny"}, license="MIT, unique 1f3a",
                  parameters={"top_k": 7}).status_code == 200
    lic = layer_digest(server, "damaged", "application/vnd.ollama.image.license")
    params = layer_digest(server, "damaged", "application/vnd.ollama.image.params")
    blob_file(server, lic).write_bytes(b"\xff\xfe not utf-8 \xc3")
    blob_file(server, params).write_bytes(b"{not json")
    # A new mtime on the manifest: the store reads it afresh rather than from its cache.
    manifest = pathlib.Path(server.models_dir, "manifests", "registry.ollama.ai", "library",
                            "damaged", "latest")
    os.utime(manifest, (time.time() + 5, time.time() + 5))
    r = httpx.get(server.url + "/api/tags")
    assert r.status_code == 200
    assert {"damaged:latest", "tiny:latest"} <= {m["name"] for m in r.json()["models"]}
    info = httpx.post(server.url + "/api/show", json={"model": "damaged"})
    assert info.status_code == 200 and info.json().get("license") is None
    assert "unreadable application/vnd.ollama.image.license" in server.log()


def test_startup_sweep_takes_only_dead_or_own_leftovers(tmp_path) -> None:
    blobs = tmp_path / "models" / "blobs"
    blobs.mkdir(parents=True)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    mine_alive = temp_prefix()  # this test process: alive, on this host
    dead_prefix = temp_prefix().replace(f".{os.getpid()}-", f".{dead.pid}-")
    kept = [blobs / f"{mine_alive}inflight", blobs / ".tmp-otherhost.1-inflight",
            blobs / ".tmp-legacy-recent"]
    gone = [blobs / f"{dead_prefix}crashed", blobs / f"{dead_prefix}convert-dir"]
    for path in kept + gone[:1]:
        path.write_bytes(b"x")
    gone[1].mkdir()
    old = blobs / ".tmp-otherhost.1-a-day-old"
    old.write_bytes(b"x")
    os.utime(old, (time.time() - 2 * 86400, time.time() - 2 * 86400))
    with HerdServer(tmp_path / "srv", models_dir=tmp_path / "models"):
        pass
    assert [p.exists() for p in kept] == [True, True, True]
    assert [p.exists() for p in gone + [old]] == [False, False, False]


class Unanswering:
    """A registry host that accepts connections and never answers, until released: then every
    connection closes and the port refuses, so the pulls fail (404 for create's `from`)."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.held: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.held.append(conn)

    def release(self) -> None:
        self.listener.close()
        for conn in self.held:
            conn.close()


def test_creates_that_must_pull_do_not_starve_the_other_routes(server) -> None:
    """2 x (cpus + 4) creates `from` a registry that does not answer, all in flight at once:
    the default thread pool holds cpus + 4 threads, and each pull needs one for its DNS lookup
    of `localhost`. A create that parked a thread while its pull ran would take them all."""
    registry = Unanswering()
    count = 2 * ((os.cpu_count() or 1) + 4)
    results: list[int] = []

    def one(i: int) -> None:
        r = create(server, model=f"starved{i}",
                   **{"from": f"localhost:{registry.port}/library/m{i}"})
        results.append(r.status_code)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    try:
        assert wait_until(lambda: len(registry.held) >= count, timeout=60), (len(registry.held), results)
        assert httpx.get(server.url + "/api/tags").status_code == 200
        assert httpx.post(server.url + "/api/show", json={"model": "tiny"}).status_code == 200
        assert httpx.post(server.url + "/api/copy",
                          json={"source": "tiny", "destination": "beside"}).status_code == 200
        assert httpx.request("DELETE", server.url + "/api/delete",
                             json={"model": "beside"}).status_code == 200
    finally:
        registry.release()
    for t in threads:
        t.join()
    assert results == [404] * count
    assert httpx.get(server.url + "/api/tags").status_code == 200


def test_pinned_blobs_survive_a_delete(tmp_path, tiny_gguf) -> None:
    """In process: the window between a create choosing a blob and writing its manifest is too
    short to hit from outside, so the store's own pins are driven directly."""
    from herd.gateway.store.models import ModelStore
    from herd.protocol.names import parse_name

    store = ModelStore(str(tmp_path / "store"))
    digest = store.import_file(str(tiny_gguf))
    store.create_from_gguf(parse_name("old"), digest)
    with store.pinning() as pin:
        pin([digest.upper().replace("SHA256", "sha256")])  # any spelling pins the one file
        store.delete(parse_name("old"), "old")
        assert store.has_blob(digest)
        store.create_from_gguf(parse_name("new"), digest)
    store.delete(parse_name("new"), "new")
    assert not store.has_blob(digest)  # unpinned and unreferenced: gone as before


_HOLD_PIN = """
import sys
from herd.gateway.store.models import ModelStore
store = ModelStore(sys.argv[1])
with store.pinning() as pin:
    pin([sys.argv[2]])
    print("pinned", flush=True)
    sys.stdin.read()
"""


def test_a_pin_of_another_process_on_the_store_holds_too(tmp_path, tiny_gguf) -> None:
    """Two replicas share one store (compose.yaml): a pin taken in one is seen by a delete in
    the other; once its process is gone the pin no longer counts."""
    from herd.gateway.store.models import ModelStore
    from herd.protocol.names import parse_name

    root = str(tmp_path / "shared")
    store = ModelStore(root)
    digest = store.import_file(str(tiny_gguf))
    store.create_from_gguf(parse_name("one"), digest)
    store.create_from_gguf(parse_name("two"), digest)
    other = subprocess.Popen([sys.executable, "-c", _HOLD_PIN, root, digest],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert other.stdout.readline() == "pinned\n"
        store.delete(parse_name("one"), "one")
        other.kill()  # a crash: its marker file stays, but its process is dead
        other.wait()
        store.delete(parse_name("two"), "two")
    finally:
        if other.poll() is None:
            other.kill()
    assert not store.has_blob(digest)


def test_a_pin_of_a_live_process_keeps_the_blob(tmp_path, tiny_gguf) -> None:
    from herd.gateway.store.models import ModelStore
    from herd.protocol.names import parse_name

    root = str(tmp_path / "shared")
    store = ModelStore(root)
    digest = store.import_file(str(tiny_gguf))
    store.create_from_gguf(parse_name("only"), digest)
    other = subprocess.Popen([sys.executable, "-c", _HOLD_PIN, root, digest],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert other.stdout.readline() == "pinned\n"
        store.delete(parse_name("only"), "only")
        assert store.has_blob(digest)
    finally:
        other.stdin.close()
        other.wait()
    assert not [p for p in os.listdir(os.path.join(root, "blobs")) if "-pin-" in p]
