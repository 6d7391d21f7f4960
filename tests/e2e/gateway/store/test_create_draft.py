"""A model with a draft model (Ollama's newest create: `draft_files`, the Modelfile's DRAFT,
an `application/vnd.ollama.image.draft` layer), through a real server: stored and shown, checked
against the model's vocabulary at create, loaded by the runner beside the model, and the
answers are the model's own."""

from __future__ import annotations

import json
import pathlib

import httpx
import pytest

from support.tiny_models import write_tiny_llama, write_tiny_lora, write_tiny_reranker

DRAFT_MEDIA_TYPE = "application/vnd.ollama.image.draft"


def create(server, **body) -> httpx.Response:
    return httpx.post(server.url + "/api/create", json={"stream": False, **body}, timeout=120)


def manifest(server, name: str) -> dict:
    path = pathlib.Path(server.models_dir) / "manifests/registry.ollama.ai/library" / name / "latest"
    return json.loads(path.read_text())


@pytest.fixture(scope="module")
def draft_gguf(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    return write_tiny_llama(tmp_path_factory.mktemp("draft") / "draft.gguf", seed=11,
                            block_count=1)


def test_a_model_with_a_draft_answers_as_the_model(server, tiny_gguf, draft_gguf) -> None:
    client = server.client()
    model, draft = client.create_blob(tiny_gguf), client.create_blob(draft_gguf)
    r = create(server, model="drafted", files={"model.gguf": model},
               draft_files={"draft.gguf": draft})
    assert (r.status_code, r.json()) == (200, {"status": "success"}), r.text
    layers = {layer["mediaType"]: layer["digest"] for layer in manifest(server, "drafted")["layers"]}
    assert layers[DRAFT_MEDIA_TYPE] == draft
    shown = httpx.post(server.url + "/api/show", json={"model": "drafted"}).json()
    assert "\nDRAFT " in shown["modelfile"]

    options = {"temperature": 0, "num_predict": 24}
    got = client.generate(model="drafted", prompt="the sky is", options=options)
    drafted = [a for a in server.runner_args() if "--draft" in a]
    assert len(drafted) == 1
    assert drafted[0][drafted[0].index("--draft") + 1].endswith(draft.replace(":", "-"))
    # draft_num_predict 0 turns speculation off: the same runner, the same answer.
    off = client.generate(model="drafted", prompt="the sky is",
                          options={**options, "draft_num_predict": 0})
    # The same weights without the draft: another runner, which replaces this one (a reload).
    want = client.generate(model="tiny", prompt="the sky is", options=options)
    assert got.response == off.response == want.response
    assert got.eval_count == want.eval_count == 24

    # A model made from it keeps its draft; the Modelfile's DRAFT may name a model.
    r = create(server, model="drafted-copy", **{"from": "drafted"}, system="terse")
    assert r.status_code == 200, r.text
    assert DRAFT_MEDIA_TYPE in {l["mediaType"] for l in manifest(server, "drafted-copy")["layers"]}
    r = create(server, model="drafted-by-name", modelfile="FROM tiny\nDRAFT drafted\n")
    assert r.status_code == 200, r.text
    layers = {l["mediaType"]: l["digest"] for l in manifest(server, "drafted-by-name")["layers"]}
    assert layers[DRAFT_MEDIA_TYPE] == model  # "drafted"'s weights (tiny's) draft


def test_a_draft_of_another_vocabulary_is_a_400(server, tiny_gguf, tmp_path) -> None:
    client = server.client()
    model = client.create_blob(tiny_gguf)
    bert = client.create_blob(write_tiny_reranker(tmp_path / "bert.gguf"))
    lora = client.create_blob(write_tiny_lora(tmp_path / "lora.gguf"))
    for draft, error in ((bert, "vocabulary does not match"), (lora, "has no vocabulary")):
        r = create(server, model="bad-draft", files={"model.gguf": model},
                   draft_files={"draft.gguf": draft})
        assert r.status_code == 400 and error in r.json()["error"], r.text
    r = create(server, model="bad-draft", files={"model.gguf": model}, draft_quantize="q8_0")
    assert r.status_code == 400 and "draft_files" in r.json()["error"]
    r = create(server, model="bad-draft", modelfile="FROM tiny\nDRAFT /etc/passwd\n")
    assert r.status_code == 400 and "never files on the server" in r.json()["error"]
    r = create(server, model="bad-draft", modelfile="FROM tiny\nDRAFT no-such-model\n")
    assert r.status_code == 404
    names = [m["name"] for m in httpx.get(server.url + "/api/tags").json()["models"]]
    assert "bad-draft:latest" not in names
