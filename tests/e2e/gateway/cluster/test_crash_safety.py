"""A store write interrupted by a crash or a vanished client leaves nothing half-written visible."""

from __future__ import annotations

import hashlib
import socket

import httpx

from support.herd_server import HerdServer, wait_until
from support.tiny_models import write_tiny_llama


def visible_names(server) -> list[str]:
    return [m["name"] for m in httpx.get(server.url + "/api/tags").json()["models"]]


def dot_files(server) -> list[str]:
    return [p.name for p in (server.models_dir / "blobs").iterdir() if p.name.startswith(".")]


def test_create_killed_mid_quantize_leaves_no_manifest_or_blob(tmp_path) -> None:
    big = write_tiny_llama(tmp_path / "big.gguf", embedding_length=1024, block_count=4, head_count=8)
    server = HerdServer(tmp_path / "a").start()
    try:
        server.create_model("big", big)
        blobs_before = {p.name for p in (server.models_dir / "blobs").iterdir()}
        with httpx.stream("POST", server.url + "/api/create", timeout=120, json={
                "model": "big-q4", "from": "big", "quantize": "q4_K_M"}) as r:
            for line in r.iter_lines():
                if '"completed"' in line and '"completed":0' not in line:
                    break  # the quantizer is writing its output now
            server.kill_all()
    finally:
        server.stop()
    manifest = server.models_dir / "manifests" / "registry.ollama.ai" / "library" / "big-q4"
    assert not manifest.exists()
    real_blobs = {p.name for p in (server.models_dir / "blobs").iterdir() if not p.name.startswith(".")}
    assert real_blobs == blobs_before
    # A restart sweeps the leftovers; the store lists only complete models.
    again = HerdServer(tmp_path / "b", models_dir=server.models_dir)
    with again:
        assert visible_names(again) == ["big:latest"]
        assert wait_until(lambda: dot_files(again) == [])


def test_blob_upload_cut_off_leaves_no_blob(server) -> None:
    data = b"x" * 100_000
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    with socket.create_connection(("127.0.0.1", server.port)) as s:
        s.sendall(f"POST /api/blobs/{digest} HTTP/1.1\r\nHost: localhost\r\n"
                  f"Content-Length: {len(data)}\r\n\r\n".encode() + data[:1000])
    assert wait_until(lambda: dot_files(server) == [])
    assert httpx.head(f"{server.url}/api/blobs/{digest}").status_code == 404
    # The same upload, complete, then works.
    assert httpx.post(f"{server.url}/api/blobs/{digest}", content=data).status_code == 201
