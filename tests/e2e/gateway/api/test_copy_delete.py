"""/api/copy and /api/delete: names normalised like Ollama, blobs reference-counted."""

from __future__ import annotations

import httpx
import pytest

from support.herd_server import HerdServer


@pytest.fixture
def store_server(tmp_path, tiny_gguf, tiny_gguf_no_template):
    srv = HerdServer(tmp_path / "srv")
    with srv:
        srv.create_model("alpha", tiny_gguf)
        srv.create_model("other", tiny_gguf_no_template)
        yield srv


def names(server) -> set[str]:
    return {m["name"] for m in httpx.get(server.url + "/api/tags").json()["models"]}


def blobs(server) -> set[str]:
    return {p.name for p in (server.models_dir / "blobs").iterdir()}


def delete(server, name: str) -> httpx.Response:
    return httpx.request("DELETE", server.url + "/api/delete", json={"model": name})


def test_copy_shares_blobs_and_survives_deleting_the_source(store_server) -> None:
    before = blobs(store_server)
    r = httpx.post(store_server.url + "/api/copy", json={"source": "alpha", "destination": "beta:v1"})
    assert (r.status_code, r.content) == (200, b"")
    assert {"alpha:latest", "beta:v1"} <= names(store_server)
    assert blobs(store_server) == before  # a copy is a manifest, not new blobs
    assert delete(store_server, "alpha").status_code == 200
    assert "alpha:latest" not in names(store_server)
    assert blobs(store_server) == before  # still referenced by beta:v1
    r = store_server.client().generate(model="beta:v1", prompt="hi", options={"num_predict": 2})
    assert r.eval_count == 2


def test_deleting_the_last_reference_removes_the_blobs_but_not_shared_ones(store_server) -> None:
    httpx.post(store_server.url + "/api/copy", json={"source": "alpha", "destination": "gamma"})
    all_blobs = blobs(store_server)
    assert delete(store_server, "alpha:latest").status_code == 200
    assert blobs(store_server) == all_blobs
    assert delete(store_server, "gamma").status_code == 200
    remaining = blobs(store_server)
    assert remaining < all_blobs
    # The other model's blobs are untouched and it still runs.
    assert store_server.client().generate(model="other", prompt="hi", options={"num_predict": 1}).eval_count == 1
    assert delete(store_server, "other").status_code == 200
    assert blobs(store_server) == set()
    # No empty manifest folders are left behind.
    manifests = store_server.models_dir / "manifests"
    assert [p for p in manifests.rglob("*") if p.is_file()] == []
    assert not (manifests / "registry.ollama.ai" / "library" / "alpha").exists()


def test_names_are_normalised(store_server) -> None:
    r = httpx.post(store_server.url + "/api/copy", json={
        "source": "registry.ollama.ai/library/alpha:latest", "destination": "me/alpha:v2"})
    assert r.status_code == 200
    assert "me/alpha:v2" in names(store_server)
    assert delete(store_server, "ALPHA").status_code == 200  # lookup is case-insensitive
    assert "alpha:latest" not in names(store_server)


def test_copy_and_delete_errors(store_server) -> None:
    r = httpx.post(store_server.url + "/api/copy", json={"source": "ghost", "destination": "x"})
    assert (r.status_code, r.json()) == (404, {"error": 'model "ghost:latest" not found'})
    r = httpx.post(store_server.url + "/api/copy", json={"source": "bad name", "destination": "x"})
    assert (r.status_code, r.json()) == (400, {"error": 'source "bad name" is invalid'})
    r = httpx.post(store_server.url + "/api/copy", json={"source": "alpha", "destination": "-x"})
    assert (r.status_code, r.json()) == (400, {"error": 'destination "-x" is invalid'})
    r = delete(store_server, "ghost")
    assert (r.status_code, r.json()) == (404, {"error": "model 'ghost' not found"})
    r = delete(store_server, "bad name")
    assert (r.status_code, r.json()) == (400, {"error": 'name "bad name" is invalid'})
    r = httpx.request("DELETE", store_server.url + "/api/delete", content=b"")
    assert (r.status_code, r.json()) == (400, {"error": "missing request body"})


def test_ollama_client_copy_and_delete(store_server) -> None:
    client = store_server.client()
    client.copy("alpha", "delta")
    assert "delta:latest" in names(store_server)
    client.delete("delta")
    assert "delta:latest" not in names(store_server)
