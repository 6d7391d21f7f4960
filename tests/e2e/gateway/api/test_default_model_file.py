"""HERD_DEFAULT_MODEL_FILE: the default model imported from a local GGUF (hosts that cannot
install the PyPI package), once, and usable."""

from __future__ import annotations

import pathlib

import httpx
from support.herd_server import HerdServer


def test_default_model_comes_from_the_given_file(tmp_path: pathlib.Path, tiny_gguf: pathlib.Path) -> None:
    env = {"HERD_DEFAULT_MODEL_FILE": str(tiny_gguf)}
    with HerdServer(tmp_path / "a", default_model="offline:1b", env=env) as srv:
        names = [m["name"] for m in httpx.get(srv.url + "/api/tags").json()["models"]]
        assert names == ["offline:1b"]
        r = httpx.post(srv.url + "/api/generate", json={
            "model": "offline:1b", "prompt": "hi", "stream": False, "options": {"num_predict": 3}})
        assert r.status_code == 200 and r.json()["eval_count"] > 0
        show = httpx.post(srv.url + "/api/show", json={"model": "offline:1b"}).json()
        assert "parameters" not in show  # gemma's defaults are only for gemma3
    # a second start finds the model and keeps it as it is
    manifest = next((tmp_path / "a" / "models" / "manifests").rglob("1b"))
    before = manifest.stat().st_mtime_ns
    with HerdServer(tmp_path / "a", default_model="offline:1b", env=env) as srv:
        assert [m["name"] for m in httpx.get(srv.url + "/api/tags").json()["models"]] == ["offline:1b"]
    assert manifest.stat().st_mtime_ns == before
