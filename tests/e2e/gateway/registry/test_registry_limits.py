"""What a registry may make the gateway do, against a scripted registry (support.fake_registry)
and a real Herd server: digests in any case name one blob, answers are size-limited, redirects
and upload Locations stay on the registry's host (a blob may come from a storage host it names,
never with the token), and a layer that cannot fit on the disk is refused up front."""

from __future__ import annotations

import hashlib
import json
import os
import pathlib

import httpx
import pytest

from support.fake_registry import FakeRegistry, Reply, Seen

MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
MODEL = "application/vnd.ollama.image.model"
LICENSE = "application/vnd.ollama.image.license"
CONFIG = "application/vnd.docker.container.image.v1+json"


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def manifest(config: bytes, *layers: tuple[str, bytes | None, str, int]) -> bytes:
    """layers: (media type, bytes or None, hex digest, size)."""
    return json.dumps({"schemaVersion": 2, "mediaType": MANIFEST,
                       "config": {"mediaType": CONFIG, "digest": f"sha256:{sha(config)}",
                                  "size": len(config)},
                       "layers": [{"mediaType": m, "digest": f"sha256:{d}", "size": n}
                                  for m, _, d, n in layers]}).encode()


def serve(reg: FakeRegistry, repo: str, raw: bytes, blobs: dict[str, bytes]) -> None:
    reg.route("GET", f"/v2/{repo}/manifests/latest",
              lambda _: Reply(200, raw, {"Content-Type": MANIFEST}))
    for digest, data in blobs.items():
        # Either case: the registry names the blob, the gateway may ask in its own spelling.
        reg.route("GET", f"(?i)/v2/{repo}/blobs/sha256:{digest}", lambda _, d=data: Reply(200, d))


def pull(server, name: str) -> httpx.Response:
    return httpx.post(f"{server.url}/api/pull",
                      json={"model": name, "insecure": True, "stream": False}, timeout=120)


def still_serving(server) -> None:
    assert httpx.get(f"{server.url}/api/version").status_code == 200
    r = httpx.post(f"{server.url}/api/generate", json={
        "model": "tiny", "prompt": "hi", "stream": False, "options": {"num_predict": 2}})
    assert r.status_code == 200, r.text


def test_an_uppercase_digest_names_the_same_blob_and_delete_keeps_it(server, tiny_gguf) -> None:
    """Ollama lower-cases digests when it names blob files (server/images.go, GetBlobsPath):
    `sha256:ABC…` in a pulled manifest is the file `tiny` uses too; deleting the pulled model
    must not take it."""
    data = tiny_gguf.read_bytes()
    config = b'{"model_format":"gguf","model_family":"llama"}'
    raw = json.dumps({"schemaVersion": 2, "mediaType": MANIFEST,
                      "config": {"mediaType": CONFIG, "digest": f"sha256:{sha(config).upper()}",
                                 "size": len(config)},
                      "layers": [{"mediaType": MODEL, "digest": f"sha256:{sha(data).upper()}",
                                  "size": len(data)}]}).encode()
    with FakeRegistry() as reg:
        serve(reg, "library/upper", raw, {sha(config).upper(): config, sha(data).upper(): data})
        name = f"{reg.host}/library/upper"
        assert pull(server, name).json() == {"status": "success"}
    blob = pathlib.Path(server.models_dir) / "blobs" / f"sha256-{sha(data)}"
    assert httpx.request("DELETE", f"{server.url}/api/delete",
                         json={"model": name}).status_code == 200
    assert blob.is_file()
    still_serving(server)


def test_answers_over_their_size_limit_are_refused(server) -> None:
    with FakeRegistry() as reg:
        reg.route("GET", "/v2/library/big/manifests/latest",
                  lambda _: Reply(200, b" " * (5 << 20), {"Content-Type": MANIFEST}))
        reg.route("GET", "/v2/library/noisy/manifests/latest",
                  lambda _: Reply(500, b"x" * (8 << 20)))
        big = pull(server, f"{reg.host}/library/big")
        noisy = pull(server, f"{reg.host}/library/noisy")
    assert big.status_code == 500 and "allowed" in big.json()["error"]
    assert noisy.status_code == 500 and len(noisy.json()["error"]) < 1024
    still_serving(server)


def test_a_blob_from_a_storage_host_gets_no_token(server, tiny_gguf) -> None:
    """Ollama's registry sends blobs from a CDN by redirect; the bearer token is the registry's
    and must not follow it (the storage URL is signed)."""
    license_ = os.urandom(64).hex().encode()
    data = tiny_gguf.read_bytes()
    config = b'{"model_format":"gguf","model_family":"llama","file_type":"cdn"}'
    with FakeRegistry() as reg, FakeRegistry() as storage:
        storage_url = f"http://localhost:{storage.port}"  # another host name for the same box
        realm = f"{reg.url}/token"

        def guarded(reply: Reply):
            def route(seen: Seen) -> Reply:
                if seen.headers.get("Authorization") != "Bearer s3cret":
                    return Reply(401, b"", {"WWW-Authenticate":
                                            f'Bearer realm="{realm}",service="fake"'})
                return reply
            return route

        raw = manifest(config, (MODEL, data, sha(data), len(data)),
                       (LICENSE, license_, sha(license_), len(license_)))
        reg.route("GET", "/token", lambda _: Reply(200, b'{"token": "s3cret"}'))
        reg.route("GET", "/v2/library/cdn/manifests/latest",
                  guarded(Reply(200, raw, {"Content-Type": MANIFEST})))
        reg.route("GET", f"/v2/library/cdn/blobs/sha256:{sha(config)}", guarded(Reply(200, config)))
        reg.route("GET", f"/v2/library/cdn/blobs/sha256:{sha(license_)}",
                  guarded(Reply(307, b"", {"Location": f"{storage_url}/signed/lic?sig=1"})))
        storage.route("GET", "/signed/lic", lambda _: Reply(200, license_))
        assert pull(server, f"{reg.host}/library/cdn").json() == {"status": "success"}
        assert [s.path for s in storage.seen] == ["/signed/lic?sig=1"]
        assert "Authorization" not in storage.seen[0].headers
    show = httpx.post(f"{server.url}/api/show", json={"model": f"{reg.host}/library/cdn"})
    assert show.json()["license"] == license_.decode()


def test_redirects_and_upload_locations_stay_on_the_registry_host(server) -> None:
    with FakeRegistry() as reg, FakeRegistry() as elsewhere:
        other = f"http://localhost:{elsewhere.port}"
        reg.route("GET", "/v2/library/moved/manifests/latest",
                  lambda _: Reply(302, b"", {"Location": f"{other}/v2/library/moved/manifests/x"}))
        reg.route("POST", "/v2/herd/up/blobs/uploads/",
                  lambda _: Reply(202, b"", {"Location": f"{other}/upload/1"}))
        moved = pull(server, f"{reg.host}/library/moved")
        name = f"{reg.host}/herd/up"
        assert httpx.post(f"{server.url}/api/copy",
                          json={"source": "tiny", "destination": name}).status_code == 200
        pushed = httpx.post(f"{server.url}/api/push",
                            json={"model": name, "insecure": True, "stream": False}, timeout=120)
        assert elsewhere.seen == []
    assert moved.status_code == 500 and "another host" in moved.json()["error"]
    assert pushed.status_code == 500 and "another host" in pushed.json()["error"]
    still_serving(server)


def test_a_layer_larger_than_the_free_disk_is_refused_before_download(server) -> None:
    config = b'{"model_format":"gguf"}'
    digest = sha(b"never sent")
    with FakeRegistry() as reg:
        serve(reg, "library/huge", manifest(config, (MODEL, None, digest, 1 << 60)), {})
        r = pull(server, f"{reg.host}/library/huge")
        assert not [s for s in reg.seen if "/blobs/" in s.path]
    assert r.status_code == 500 and "insufficient disk space" in r.json()["error"]
    assert not (pathlib.Path(server.models_dir) / "blobs" / f"sha256-{digest}-partial").exists()


@pytest.mark.parametrize("size", [0, 1 << 30])
def test_every_transfer_has_a_total_time(size: int) -> None:
    """No timed wait in a test: the bound itself is checked, a floor rate over the size."""
    from herd.gateway.registry.limits import MIN_RATE, SMALL_TOTAL, transfer_timeout

    assert transfer_timeout(size).total == SMALL_TOTAL + size / MIN_RATE
