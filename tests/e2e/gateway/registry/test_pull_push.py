"""/api/pull, /api/push, `herd pull|push` and create `from` a remote name, against a real OCI
registry (Debian's docker-registry) and real Herd servers."""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
import subprocess
import sys
import threading
import uuid
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from support.herd_server import ROOT, HerdServer, free_port
from support.registry_server import Registry, require_registry_binary

MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"


@pytest.fixture(scope="session")
def registry(tmp_path_factory: pytest.TempPathFactory):
    require_registry_binary()
    with Registry(tmp_path_factory.mktemp("registry")) as reg:
        yield reg


@pytest.fixture(scope="module")
def pushed(server, registry: Registry) -> str:
    """`tiny` of the shared server, pushed to the registry as <registry>/herd/tiny:v1."""
    name = f"{registry.host}/herd/tiny:v1"
    httpx.post(f"{server.url}/api/copy", json={"source": "tiny", "destination": name})
    assert transfer(server, "push", name, insecure=True)[-1] == {"status": "success"}
    return name


@pytest.fixture(scope="module")
def fresh(tmp_path_factory: pytest.TempPathFactory):
    """A second Herd server that starts with no models at all."""
    with HerdServer(tmp_path_factory.mktemp("fresh")) as srv:
        yield srv


def transfer(srv: HerdServer, kind: str, model: str, **body: object) -> list[dict]:
    r = httpx.post(f"{srv.url}/api/{kind}", json={"model": model, **body}, timeout=120)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/x-ndjson"
    return [json.loads(line) for line in r.text.splitlines()]


def tags(srv: HerdServer) -> dict[str, dict]:
    return {m["name"]: m for m in httpx.get(f"{srv.url}/api/tags").json()["models"]}


def blob_lines(lines: list[dict], verb: str) -> dict[str, list[dict]]:
    by_digest: dict[str, list[dict]] = {}
    for line in lines:
        if line.get("status", "").startswith(f"{verb} ") and "digest" in line:
            by_digest.setdefault(line["digest"], []).append(line)
    return by_digest


def registry_manifest(registry: Registry, name: str) -> bytes:
    repo, tag = name.split("/", 1)[1].rsplit(":", 1)
    r = httpx.get(f"{registry.url}/v2/{repo}/manifests/{tag}", headers={"Accept": MANIFEST})
    assert r.status_code == 200
    return r.content


def test_push_reports_every_layer_then_the_manifest(server, registry: Registry,
                                                    pushed: str) -> None:
    lines = transfer(server, "push", pushed, insecure=True)
    assert lines[0] == {"status": "retrieving manifest"}
    assert lines[-2:] == [{"status": "pushing manifest"}, {"status": "success"}]
    manifest = json.loads(registry_manifest(registry, pushed))
    layers = {layer["digest"]: layer["size"] for layer in
              [*manifest["layers"], manifest["config"]]}
    progress = blob_lines(lines, "pushing")
    assert set(progress) == set(layers)
    for digest, shown in progress.items():
        # Already in the registry after the first push: one line, completed == total.
        assert shown == [{"status": f"pushing {digest[7:19]}", "digest": digest,
                          "total": layers[digest], "completed": layers[digest]}]
    # The registry holds the local manifest byte for byte: the digests agree.
    raw = registry_manifest(registry, pushed)
    assert hashlib.sha256(raw).hexdigest() == tags(server)[pushed]["digest"]


def test_pull_into_a_fresh_server_then_generate(server, fresh: HerdServer, pushed: str) -> None:
    lines = transfer(fresh, "pull", pushed, insecure=True)
    assert lines[0] == {"status": "pulling manifest"}
    assert lines[-3:] == [{"status": "verifying sha256 digest"}, {"status": "writing manifest"},
                          {"status": "success"}]
    for digest, shown in blob_lines(lines, "pulling").items():
        assert all(line["status"] == f"pulling {digest[7:19]}" for line in shown)
        assert shown[-1]["completed"] == shown[-1]["total"] > 0
        assert (fresh.models_dir / "blobs" / f"sha256-{digest[7:]}").is_file()
    assert tags(fresh)[pushed]["digest"] == tags(server)[pushed]["digest"]
    assert fresh.client().show(pushed).details.family == "llama"
    reply = fresh.client().generate(model=pushed, prompt="hi", options={"num_predict": 3})
    assert reply.eval_count == 3


def test_pull_again_skips_blobs_already_present(fresh: HerdServer, registry: Registry,
                                                pushed: str) -> None:
    transfer(fresh, "pull", pushed, insecure=True)
    start = registry.mark()
    lines = transfer(fresh, "pull", pushed, insecure=True)
    for shown in blob_lines(lines, "pulling").values():
        assert len(shown) == 1 and shown[0]["completed"] == shown[0]["total"]
    assert registry.requests_since(start, "GET", "/blobs/") == []
    assert lines[-1] == {"status": "success"}


def test_interrupted_download_resumes_from_its_partial_file(fresh: HerdServer, registry: Registry,
                                                            pushed: str) -> None:
    transfer(fresh, "pull", pushed, insecure=True)
    model = json.loads(registry_manifest(registry, pushed))["layers"][0]
    data = registry.blob_data(model["digest"]).read_bytes()
    blob = fresh.models_dir / "blobs" / f"sha256-{model['digest'][7:]}"
    partial = blob.with_name(blob.name + "-partial")
    half = len(data) // 2
    for prefix, expect_ok in ((data[:half], True), (b"\0" * half, False)):
        httpx.request("DELETE", f"{fresh.url}/api/delete", json={"model": pushed})
        assert not blob.exists()
        partial.write_bytes(prefix)
        start = registry.mark()
        lines = transfer(fresh, "pull", pushed, insecure=True)
        # Only the missing half crossed the network.
        (get,) = registry.requests_since(start, "GET", model["digest"])
        assert "http.response.status=206" in get
        assert f"http.response.written={len(data) - half}" in get
        assert not partial.exists()
        if expect_ok:
            assert lines[-1] == {"status": "success"} and blob.read_bytes() == data
        else:  # a wrong prefix is caught by the digest, and nothing is left behind
            assert lines[-1]["error"].startswith(
                f"digest mismatch, file must be downloaded again: want {model['digest']}, got ")
            assert not blob.exists() and pushed not in tags(fresh)
    assert transfer(fresh, "pull", pushed, insecure=True)[-1] == {"status": "success"}


def test_tampered_blob_fails_the_digest_check_and_stays_invisible(
        server, fresh: HerdServer, registry: Registry) -> None:
    name = f"{registry.host}/herd/tamper:v1"
    system = f"a system prompt only this test has {uuid.uuid4()}"
    r = httpx.post(f"{server.url}/api/create",
                   json={"model": name, "from": "tiny", "system": system, "stream": False})
    assert r.status_code == 200, r.text
    assert transfer(server, "push", name, insecure=True)[-1] == {"status": "success"}
    digest = "sha256:" + hashlib.sha256(system.encode()).hexdigest()
    stored = registry.blob_data(digest)
    stored.write_bytes(stored.read_bytes().upper())  # same size, other bytes
    lines = transfer(fresh, "pull", name, insecure=True)
    assert lines[-2] == {"status": "verifying sha256 digest"}
    got = "sha256:" + hashlib.sha256(system.upper().encode()).hexdigest()
    assert lines[-1] == {
        "error": f"digest mismatch, file must be downloaded again: want {digest}, got {got}"}
    blobs = fresh.models_dir / "blobs"
    assert not (blobs / f"sha256-{digest[7:]}").exists()
    assert not (blobs / f"sha256-{digest[7:]}-partial").exists()
    assert name not in tags(fresh)
    r = httpx.post(f"{fresh.url}/api/show", json={"model": name})
    assert r.status_code == 404


def test_a_new_version_of_a_tag_drops_layers_only_the_old_one_used(
        server, fresh: HerdServer, registry: Registry) -> None:
    name = f"{registry.host}/herd/moving:v1"
    r = httpx.post(f"{server.url}/api/create", json={
        "model": name, "from": "tiny", "system": f"version one {uuid.uuid4()}", "stream": False})
    assert r.status_code == 200, r.text
    transfer(server, "push", name, insecure=True)
    lines = transfer(fresh, "pull", name, insecure=True)
    assert {"status": "removing unused layers"} not in lines
    system_layer = blob_lines(lines, "pulling")
    httpx.post(f"{server.url}/api/copy", json={"source": "tiny", "destination": name})
    transfer(server, "push", name, insecure=True)
    lines = transfer(fresh, "pull", name, insecure=True)
    assert lines[-3:] == [{"status": "writing manifest"}, {"status": "removing unused layers"},
                          {"status": "success"}]
    gone = set(system_layer) - set(blob_lines(lines, "pulling"))
    assert len(gone) == 1
    assert not (fresh.models_dir / "blobs" / f"sha256-{gone.pop()[7:]}").exists()


def test_registry_without_the_model(fresh: HerdServer, registry: Registry) -> None:
    name = f"{registry.host}/herd/nothing:v1"
    assert transfer(fresh, "pull", name, insecure=True) == [
        {"status": "pulling manifest"}, {"error": "pull model manifest: file does not exist"}]
    r = httpx.post(f"{fresh.url}/api/pull", json={"model": name, "insecure": True,
                                                  "stream": False})
    assert (r.status_code, r.json()) == (500, {"error": "pull model manifest: file does not exist"})


def test_http_needs_insecure(fresh: HerdServer, registry: Registry, pushed: str) -> None:
    r = httpx.post(f"{fresh.url}/api/pull", json={"model": f"http://{pushed}"})
    assert (r.status_code, r.json()) == (500, {"error": "insecure protocol http"})
    # Without insecure the registry is spoken to over https, which a plain-http one refuses.
    lines = transfer(fresh, "pull", pushed)
    assert lines[-1]["error"].startswith(f'pull model manifest: GET "https://{registry.host}/v2/')


def test_unreachable_registry_is_a_clear_error(server, fresh: HerdServer) -> None:
    host = f"127.0.0.1:{free_port()}"  # nothing listens there
    name = f"{host}/herd/tiny:v1"
    lines = transfer(fresh, "pull", name, insecure=True)
    assert lines[-1]["error"].startswith(f'pull model manifest: GET "http://{host}/v2/herd/tiny/')
    httpx.post(f"{server.url}/api/copy", json={"source": "tiny", "destination": name})
    r = httpx.post(f"{server.url}/api/push", json={"model": name, "insecure": True,
                                                   "stream": False})
    assert r.status_code == 500
    assert r.json()["error"].startswith('push blob sha256:')
    assert f'HEAD "http://{host}/v2/herd/tiny/blobs/sha256:' in r.json()["error"]


def test_stream_false_returns_only_the_last_status(server, fresh: HerdServer,
                                                   pushed: str) -> None:
    for srv, kind in ((fresh, "pull"), (server, "push")):
        r = httpx.post(f"{srv.url}/api/{kind}", json={"model": pushed, "insecure": True,
                                                      "stream": False})
        assert (r.status_code, r.json()) == (200, {"status": "success"})
        assert r.headers["content-type"].startswith("application/json")


def test_request_errors(fresh: HerdServer, registry: Registry) -> None:
    for kind in ("pull", "push"):
        r = httpx.post(f"{fresh.url}/api/{kind}", json={})
        assert (r.status_code, r.json()) == (400, {"error": "model is required"})
        r = httpx.post(f"{fresh.url}/api/{kind}", json={"model": "bad name"})
        assert (r.status_code, r.json()) == (400, {"error": "invalid model name"})
    name = f"{registry.host}/herd/ghost:v1"
    assert transfer(fresh, "push", name, insecure=True) == [
        {"status": "retrieving manifest"}, {"status": "couldn't retrieve manifest"},
        {"error": f"model '{name}' not found"}]


def test_concurrent_pulls_fetch_each_blob_once(tmp_path: pathlib.Path, registry: Registry,
                                               pushed: str) -> None:
    with HerdServer(tmp_path / "srv") as srv:
        start = registry.mark()
        results: list[list[dict]] = []
        threads = [threading.Thread(target=lambda: results.append(
            transfer(srv, "pull", pushed, insecure=True))) for _ in range(3)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert [lines[-1] for lines in results] == [{"status": "success"}] * 3
        manifest = json.loads(registry_manifest(registry, pushed))
        for layer in [*manifest["layers"], manifest["config"]]:
            assert len(registry.requests_since(start, "GET", layer["digest"])) == 1


def test_cli_push_and_pull(server, fresh: HerdServer, registry: Registry) -> None:
    name = f"{registry.host}/herd/cli:v1"
    httpx.post(f"{server.url}/api/copy", json={"source": "tiny", "destination": name})

    def herd(srv: HerdServer, *args: str) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "OLLAMA_HOST": f"127.0.0.1:{srv.port}", "PYTHONPATH": str(ROOT)}
        return subprocess.run([sys.executable, "-m", "herd.cli", *args], cwd=ROOT, env=env,
                              text=True, capture_output=True, timeout=120)

    pushed = herd(server, "push", name, "--insecure")
    assert (pushed.returncode, pushed.stdout) == (0, "success\n"), pushed.stderr
    assert pushed.stderr.splitlines()[0] == "retrieving manifest"
    assert "pushing manifest" in pushed.stderr.splitlines()
    pulled = herd(fresh, "pull", name, "--insecure")
    assert (pulled.returncode, pulled.stdout) == (0, "success\n"), pulled.stderr
    assert pulled.stderr.splitlines()[0] == "pulling manifest"
    assert any(line.startswith("pulling ") and len(line) == len("pulling ") + 12
               for line in pulled.stderr.splitlines())
    assert name in tags(fresh)
    missing = herd(fresh, "pull", f"{registry.host}/herd/nothing:v1", "--insecure")
    assert missing.returncode == 1
    assert missing.stderr.splitlines()[-1] == "Error: pull model manifest: file does not exist"
    insecure = herd(fresh, "pull", f"http://{name}")
    assert (insecure.returncode, insecure.stderr) == (1, "Error: insecure protocol http\n")


@pytest.fixture(scope="module")
def tls_registry(tmp_path_factory: pytest.TempPathFactory):
    require_registry_binary()
    with Registry(tmp_path_factory.mktemp("tls-registry"), tls=True) as reg:
        yield reg


def test_create_from_a_remote_name_pulls_it_over_https(tmp_path: pathlib.Path, tiny_gguf,
                                                       tls_registry: Registry) -> None:
    env = {"SSL_CERT_FILE": str(tls_registry.cert)}  # trust the registry's own certificate
    name = f"{tls_registry.host}/herd/base:v1"
    with HerdServer(tmp_path / "src", env=env) as src, HerdServer(tmp_path / "dst", env=env) as dst:
        src.create_model(name, tiny_gguf)
        assert transfer(src, "push", name)[-1] == {"status": "success"}  # https: no insecure
        r = httpx.post(f"{dst.url}/api/create", timeout=120,
                       json={"model": "derived", "from": name, "system": "Be brief."})
        lines = [json.loads(line) for line in r.text.splitlines()]
        assert lines[0] == {"status": "pulling manifest"}
        assert {"status": "verifying sha256 digest"} in lines
        assert [line["status"] for line in lines].count("success") == 1
        assert lines[-1] == {"status": "success"}
        assert {name, "derived:latest"} <= set(tags(dst))
        shown = httpx.post(f"{dst.url}/api/show", json={"model": "derived"}).json()
        assert shown["system"] == "Be brief."
        assert dst.client().generate(model="derived", prompt="hi",
                                     options={"num_predict": 2}).eval_count == 2
        r = httpx.post(f"{dst.url}/api/create", json={
            "model": "orphan", "from": f"{tls_registry.host}/herd/nothing:v1", "stream": False})
        assert (r.status_code, r.json()) == (
            404, {"error": f'model "{tls_registry.host}/herd/nothing:v1" not found'})


def test_bearer_token_challenge(server, fresh: HerdServer, tmp_path: pathlib.Path) -> None:
    require_registry_binary()
    with Registry(tmp_path / "auth-registry", token_auth=True) as reg:
        assert reg.tokens is not None
        name = f"{reg.host}/herd/private:v1"
        httpx.post(f"{server.url}/api/copy", json={"source": "tiny", "destination": name})
        assert httpx.get(f"{reg.url}/v2/herd/private/tags/list").status_code == 401
        assert transfer(server, "push", name, insecure=True)[-1] == {"status": "success"}

        def scopes(since: int = 0) -> list[str]:
            # The registry's challenge lists the actions in no fixed order (a Go map).
            found = [parse_qs(urlsplit(path).query)["scope"][0]
                     for path in reg.tokens.requests[since:]]  # type: ignore[union-attr]
            return [f"{s.rsplit(':', 1)[0]}:{','.join(sorted(s.rsplit(':', 1)[1].split(',')))}"
                    for s in found]

        # Reading first asks for pull; the upload's challenge widens it to pull,push.
        assert scopes() == ["repository:herd/private:pull", "repository:herd/private:pull,push"]
        pushed_with = len(reg.tokens.requests)
        assert transfer(fresh, "pull", name, insecure=True)[-1] == {"status": "success"}
        assert scopes(pushed_with) == ["repository:herd/private:pull"]  # one token, reused
        assert name in tags(fresh)
