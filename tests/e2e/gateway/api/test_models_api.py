"""The store through the API: blobs, create from a GGUF blob, tags; and the on-disk layout."""

from __future__ import annotations

import hashlib
import json
import os
import re

import httpx
import ollama
import pytest

from support.herd_server import HerdServer

RFC3339 = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+([+-]\d\d:\d\d|Z)$")


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def test_root_and_version(server) -> None:
    r = httpx.get(server.url + "/")
    assert (r.status_code, r.text) == (200, "Ollama is running")
    assert r.headers["content-type"].startswith("text/plain")
    assert httpx.head(server.url + "/").status_code == 200
    v = httpx.get(server.url + "/api/version").json()
    assert re.match(r"^\d+\.\d+\.\d+", v["version"])
    assert httpx.head(server.url + "/api/version").status_code == 200


def test_blob_upload_head_and_verification(server) -> None:
    data = os.urandom(4096)
    digest = sha256_digest(data)
    assert httpx.head(f"{server.url}/api/blobs/{digest}").status_code == 404
    bad = httpx.post(f"{server.url}/api/blobs/{sha256_digest(b'other')}", content=data)
    assert bad.status_code == 400
    assert bad.json()["error"].startswith('digest mismatch, expected "sha256:')
    assert httpx.post(f"{server.url}/api/blobs/{digest}", content=data).status_code == 201
    assert httpx.post(f"{server.url}/api/blobs/{digest}", content=data).status_code == 200
    assert httpx.head(f"{server.url}/api/blobs/{digest}").status_code == 200
    stored = server.models_dir / "blobs" / f"sha256-{digest[7:]}"
    assert stored.read_bytes() == data
    # Nothing half-written is left beside it.
    assert not [p for p in stored.parent.iterdir() if p.name.startswith(".tmp-")]


@pytest.mark.parametrize("digest", ["sha256:abc", "md5:" + "0" * 32, "sha256-" + "g" * 64])
def test_malformed_digest_is_400(server, digest: str) -> None:
    r = httpx.post(f"{server.url}/api/blobs/{digest}", content=b"x")
    assert (r.status_code, r.json()) == (400, {"error": "invalid digest format"})
    assert httpx.head(f"{server.url}/api/blobs/{digest}").status_code == 400


def test_create_with_the_ollama_client_streams_statuses(server, tiny_gguf) -> None:
    client = server.client()
    digest = client.create_blob(tiny_gguf)
    statuses = [p.status for p in client.create(model="made", files={"tiny.gguf": digest}, stream=True)]
    assert statuses[0] == "parsing GGUF"
    assert any(s.startswith("using existing layer sha256:") for s in statuses)
    assert statuses[-2:] == ["writing manifest", "success"]
    r = client.generate(model="made", prompt="hi", options={"num_predict": 2})
    assert r.eval_count == 2


def test_create_non_streaming_returns_success(server, tiny_gguf) -> None:
    digest = server.client().create_blob(tiny_gguf)
    r = httpx.post(server.url + "/api/create", timeout=60, json={
        "model": "made2", "files": {"m.gguf": digest}, "stream": False})
    assert (r.status_code, r.json()) == (200, {"status": "success"})


def test_create_rejects_bad_requests(server) -> None:
    data = b"not a gguf at all" * 10
    digest = sha256_digest(data)
    httpx.post(f"{server.url}/api/blobs/{digest}", content=data)
    cases = [
        ({"model": "x", "stream": False}, "neither 'from' or 'files' was specified"),
        ({"model": "x", "files": {"/abs.gguf": digest}, "stream": False}, "file path must be relative"),
        ({"model": "x", "files": {"a.gguf": "sha256:zz"}, "stream": False}, "invalid digest format"),
        ({"model": "bad name!", "files": {"a.gguf": digest}, "stream": False}, "invalid model name"),
        ({"model": "x", "files": {"a.gguf": digest}, "stream": False}, "supplied file was not in GGUF format"),
    ]
    for body, error in cases:
        r = httpx.post(server.url + "/api/create", json=body, timeout=60)
        assert r.status_code == 400, body
        assert r.json()["error"] == error
    with pytest.raises(ollama.ResponseError):
        list(server.client().create(model="y", files={"a.gguf": digest}, stream=True))


def test_tags_lists_models_with_details(server) -> None:
    models = httpx.get(server.url + "/api/tags").json()["models"]
    (tiny,) = [m for m in models if m["name"] == "tiny:latest"]
    assert tiny["model"] == "tiny:latest"
    assert RFC3339.match(tiny["modified_at"])
    assert re.fullmatch(r"[0-9a-f]{64}", tiny["digest"])
    assert tiny["size"] > 100_000
    assert tiny["details"] == {"parent_model": "", "format": "gguf", "family": "llama",
                               "families": ["llama"], "parameter_size": tiny["details"]["parameter_size"],
                               "quantization_level": "F32", "context_length": 2048,
                               "embedding_length": 64}
    assert tiny["details"]["parameter_size"].endswith("K")
    assert httpx.head(server.url + "/api/tags").status_code == 200
    listed = server.client().list()
    assert "tiny:latest" in [m.model for m in listed.models]


def test_store_is_ollamas_on_disk_layout(server) -> None:
    manifest_path = server.models_dir / "manifests" / "registry.ollama.ai" / "library" / "tiny" / "latest"
    raw = manifest_path.read_bytes()
    manifest = json.loads(raw)
    assert manifest["schemaVersion"] == 2
    assert manifest["mediaType"] == "application/vnd.docker.distribution.manifest.v2+json"
    assert manifest["config"]["mediaType"] == "application/vnd.docker.container.image.v1+json"
    (layer,) = manifest["layers"]
    assert layer["mediaType"] == "application/vnd.ollama.image.model"
    for entry in [manifest["config"], layer]:
        blob = server.models_dir / "blobs" / entry["digest"].replace(":", "-")
        assert blob.stat().st_size == entry["size"]
        assert hashlib.sha256(blob.read_bytes()).hexdigest() == entry["digest"][7:]
    config = json.loads((server.models_dir / "blobs" / manifest["config"]["digest"].replace(":", "-")).read_bytes())
    assert config["model_format"] == "gguf" and config["model_family"] == "llama"
    tags = httpx.get(server.url + "/api/tags").json()["models"]
    assert [m["digest"] for m in tags if m["name"] == "tiny:latest"] == [hashlib.sha256(raw).hexdigest()]


def test_names_are_case_insensitive_and_normalised(server) -> None:
    client = server.client()
    for name in ("TINY", "tiny:latest", "library/tiny", "registry.ollama.ai/library/tiny:latest"):
        assert client.generate(model=name, prompt="hi", options={"num_predict": 1}).eval_count == 1


def test_models_survive_a_restart(tmp_path, tiny_gguf) -> None:
    first = HerdServer(tmp_path / "a")
    with first:
        first.create_model("keep", tiny_gguf)
    second = HerdServer(tmp_path / "b", models_dir=first.models_dir)
    with second:
        names = [m["name"] for m in httpx.get(second.url + "/api/tags").json()["models"]]
        assert names == ["keep:latest"]
