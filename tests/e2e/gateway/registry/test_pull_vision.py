"""A vision model through a real OCI registry: its projector layer is pushed and pulled with
the weights, and the pulled model sees (Ollama's registry serves llava the same way: a model
layer and an application/vnd.ollama.image.projector layer)."""

from __future__ import annotations

import base64
import json
import pathlib

import httpx
import pytest

from support.herd_server import HerdServer
from support.registry_server import Registry, require_registry_binary
from support.tiny_vision import RED, solid_png, write_tiny_projector

PROJECTOR = "application/vnd.ollama.image.projector"


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory):
    require_registry_binary()
    with Registry(tmp_path_factory.mktemp("registry")) as reg:
        yield reg


def _lines(r: httpx.Response) -> list[dict]:
    assert r.status_code == 200, r.text
    return [json.loads(line) for line in r.text.splitlines()]


def test_pushed_and_pulled_vision_model_keeps_its_projector(
        tmp_path_factory: pytest.TempPathFactory, tiny_gguf: pathlib.Path,
        registry: Registry) -> None:
    projector = write_tiny_projector(tmp_path_factory.mktemp("mmproj") / "mmproj.gguf")
    name = f"{registry.host}/herd/tiny-vision:v1"
    body = {"prompt": "what is it?", "stream": False, "images": [
        base64.b64encode(solid_png(RED)).decode()],
        "options": {"temperature": 0, "seed": 1, "num_predict": 8}}
    with HerdServer(tmp_path_factory.mktemp("src")) as src:
        client = src.client()
        r = httpx.post(src.url + "/api/create", json={
            "model": name, "stream": False,
            "files": {"m.gguf": client.create_blob(tiny_gguf),
                      "p.gguf": client.create_blob(projector)}})
        assert r.status_code == 200, r.text
        assert _lines(httpx.post(src.url + "/api/push", json={
            "model": name, "insecure": True}, timeout=120))[-1] == {"status": "success"}
        answer = httpx.post(src.url + "/api/generate", json={"model": name, **body}).json()
    with HerdServer(tmp_path_factory.mktemp("dst")) as dst:
        assert _lines(httpx.post(dst.url + "/api/pull", json={
            "model": name, "insecure": True}, timeout=120))[-1] == {"status": "success"}
        show = httpx.post(dst.url + "/api/show", json={"model": name}).json()
        assert "vision" in show["capabilities"] and show["projector_info"]
        manifest = json.loads(next((dst.models_dir / "manifests").rglob("v1")).read_text())
        assert [layer["mediaType"] for layer in manifest["layers"]].count(PROJECTOR) == 1
        pulled = httpx.post(dst.url + "/api/generate", json={"model": name, **body}).json()
        assert pulled["response"] == answer["response"]
