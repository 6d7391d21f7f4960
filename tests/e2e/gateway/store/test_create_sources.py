"""/api/create takes its files as blobs or models, never as paths on the server's disk.

Ollama's CreateRequest (api/types.go) has no path field left: `files` and `adapters` map names
to blob digests uploaded with POST /api/blobs, and `from` names a model. Herd keeps the legacy
`modelfile` form, so there FROM and ADAPTER may name a blob (sha256:<hex>) or a model only, and
every path gets one answer whether or not it exists: no oracle for the server's files."""

from __future__ import annotations

import httpx

from support.tiny_models import write_tiny_lora


def create(server, **body) -> httpx.Response:
    return httpx.post(server.url + "/api/create", json={"stream": False, **body}, timeout=120)


def names(server) -> list[str]:
    return [m["name"] for m in httpx.get(server.url + "/api/tags").json()["models"]]


def test_the_modelfile_form_reads_no_server_file(server, tiny_gguf, tmp_path) -> None:
    lora = write_tiny_lora(tmp_path / "lora.gguf")
    paths = [str(tiny_gguf), "/etc/passwd", "/etc/shadow", "/no/such/file.gguf", "./tiny.gguf",
             "~/model.gguf", "C:\\models\\x.gguf", "tiny.gguf"]
    answers = set()
    for path in paths:
        r = create(server, model="leak", modelfile=f"FROM {path}\n")
        answers.add((r.status_code, r.json()["error"]))
    for path in (str(lora), "/no/such/lora.gguf"):
        r = create(server, model="leak", modelfile=f"FROM tiny\nADAPTER {path}\n")
        answers.add((r.status_code, r.json()["error"]))
    assert len(answers) == 1
    status, error = answers.pop()
    assert status == 400 and "never files on the server" in error
    assert "leak:latest" not in names(server)


def test_from_an_existing_and_a_missing_path_answer_alike(server, tiny_gguf) -> None:
    real = create(server, model="leak", **{"from": str(tiny_gguf)})
    ghost = create(server, model="leak", **{"from": str(tiny_gguf) + ".missing"})
    assert (real.status_code, real.json()) == (ghost.status_code, ghost.json())
    assert real.status_code == 400
    assert "leak:latest" not in names(server)


def test_the_modelfile_form_names_blobs_and_models(server, tiny_gguf, tmp_path) -> None:
    client = server.client()
    model = client.create_blob(tiny_gguf)
    adapter = client.create_blob(write_tiny_lora(tmp_path / "lora2.gguf"))
    r = create(server, model="from-blob",
               modelfile=f"FROM {model}\nADAPTER @{adapter}\nSYSTEM terse\n")
    assert (r.status_code, r.json()) == (200, {"status": "success"})
    info = httpx.post(server.url + "/api/show", json={"model": "from-blob"}).json()
    assert info["system"] == "terse" and "ADAPTER " in info["modelfile"]
    r = create(server, model="from-model", modelfile="FROM tiny\nPARAMETER top_k 3\n")
    assert r.status_code == 200
    out = client.generate(model="from-blob", prompt="hi", options={"num_predict": 2})
    assert out.eval_count == 2
