"""Where Herd followed Ollama only partly, checked against a real server: each test names the
place in Ollama's source (github.com/ollama/ollama) whose behaviour it pins."""

from __future__ import annotations

import base64

import hashlib
import json
import pathlib

import httpx
import pytest

from support.tiny_models import write_tiny_llama

HISTORY = [{"role": "user", "content": "earlier question"},
           {"role": "assistant", "content": "earlier answer"}]
CHATML = "<|im_start|>{role}\n{content}<|im_end|>\n"
PNG = "iVBORw0KGgo="
PROJECTOR = "application/vnd.ollama.image.projector"


def post(server, path: str, **body) -> httpx.Response:
    return httpx.post(server.url + path, json=body)


def ok(server, path: str, **body) -> dict:
    r = post(server, path, **{"stream": False, **body})
    assert r.status_code == 200, r.text
    return r.json()


def rendered(server, path: str, **body) -> str:
    return ok(server, path, _debug_render_only=True, **body)["_debug_info"]["rendered_template"]


def _upload(server, path: pathlib.Path) -> str:
    digest = "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()
    httpx.post(f"{server.url}/api/blobs/{digest}", content=path.read_bytes())
    return digest


@pytest.fixture(scope="module")
def parity(server, tmp_path_factory: pytest.TempPathFactory):
    """`tiny` plus: `tiny-msgs` (SYSTEM and MESSAGE layers), `tiny-think-go` (a Go template
    that shows .Think/.ThinkLevel and each message's .Thinking), `tiny-params` (its own
    PARAMETER), `tiny-embed` (an embedding model) and `tiny-vision` (a projector layer)."""
    client = server.client()
    client.create(model="tiny-msgs", from_="tiny", system="SYS", messages=HISTORY)
    client.create(model="tiny-think-go", from_="tiny", template=(
        "{{ if .Think }}[think:{{ .ThinkLevel }}]{{ end }}{{ range .Messages }}"
        "{{ if .Thinking }}({{ .Thinking }}){{ end }}{{ .Content }};{{ end }}<think>"))
    client.create(model="tiny-params", from_="tiny", parameters={"temperature": 0.5})
    folder = tmp_path_factory.mktemp("parity")
    embed = write_tiny_llama(folder / "embed.gguf", seed=3, pooling_type=1)
    client.create(model="tiny-embed", files={"embed.gguf": _upload(server, embed)})
    # A vision model as Ollama stores one: the model layer plus a projector GGUF layer.
    projector = write_tiny_llama(folder / "projector.gguf", seed=4, name="tiny-projector")
    digest = _upload(server, projector)
    base = server.models_dir / "manifests/registry.ollama.ai/library/tiny/latest"
    manifest = json.loads(base.read_text())
    manifest["layers"].append({"mediaType": PROJECTOR, "digest": digest,
                               "size": projector.stat().st_size})
    vision = base.parent.parent / "tiny-vision" / "latest"
    vision.parent.mkdir(parents=True, exist_ok=True)
    vision.write_text(json.dumps(manifest))
    return server


def test_message_layers_come_first_on_every_chat_route(parity) -> None:
    """server/routes.go ChatHandler: `msgs := append(m.Messages, req.Messages...)`, the model's
    SYSTEM in front unless the request starts with its own; /v1/chat/completions,
    /v1/messages and /v1/responses are middleware in front of that handler."""
    now = [{"role": "user", "content": "now"}]
    expected = (CHATML.format(role="system", content="SYS")
                + "".join(CHATML.format(**m) for m in HISTORY)
                + CHATML.format(role="user", content="now") + "<|im_start|>assistant\n")
    assert rendered(parity, "/api/chat", model="tiny-msgs", messages=now) == expected
    # A request's own system message replaces the model's SYSTEM, after the layers (Ollama
    # checks req.Messages[0], then appends req.Messages to m.Messages).
    own = [{"role": "system", "content": "MINE"}, *now]
    assert rendered(parity, "/api/chat", model="tiny-msgs", messages=own) == (
        "".join(CHATML.format(**m) for m in HISTORY) + CHATML.format(role="system", content="MINE")
        + CHATML.format(role="user", content="now") + "<|im_start|>assistant\n")
    # The /v1 routes cannot render only: the layers show in the prompt's token count.
    for model_a, model_b in (("tiny-msgs", "tiny"),):
        a = ok(parity, "/v1/chat/completions", model=model_a, messages=now, max_tokens=1)
        b = ok(parity, "/v1/chat/completions", model=model_b, messages=now, max_tokens=1)
        assert a["usage"]["prompt_tokens"] > b["usage"]["prompt_tokens"]
        a = ok(parity, "/v1/messages", model=model_a, messages=now, max_tokens=1)
        b = ok(parity, "/v1/messages", model=model_b, messages=now, max_tokens=1)
        assert a["usage"]["input_tokens"] > b["usage"]["input_tokens"]
        a = ok(parity, "/v1/responses", model=model_a, input="now", max_output_tokens=1)
        b = ok(parity, "/v1/responses", model=model_b, input="now", max_output_tokens=1)
        assert a["usage"]["input_tokens"] > b["usage"]["input_tokens"]


def test_generate_prepends_message_layers_and_falls_back_to_the_models_system(parity) -> None:
    """server/routes.go GenerateHandler: system is req.System, else m.System when req.System
    is "" (so `system: ""` is the model's); then m.Messages unless a `context` continues a
    conversation; then the prompt."""
    head = CHATML.format(role="system", content="SYS") + "".join(
        CHATML.format(**m) for m in HISTORY)
    tail = CHATML.format(role="user", content="now") + "<|im_start|>assistant\n"
    assert rendered(parity, "/api/generate", model="tiny-msgs", prompt="now") == head + tail
    assert rendered(parity, "/api/generate", model="tiny-msgs", prompt="now",
                    system="") == head + tail
    assert rendered(parity, "/api/generate", model="tiny-msgs", prompt="now",
                    system="S2").startswith(CHATML.format(role="system", content="S2")
                                            + CHATML.format(**HISTORY[0]))
    assert "earlier" not in rendered(parity, "/api/generate", model="tiny-msgs", prompt="now",
                                     context=[1, 2])


def test_think_absent_on_a_thinking_model_thinks_at_level_medium(parity) -> None:
    """server/routes.go ChatHandler/GenerateHandler: a thinking-capable model with no `think`
    gets `req.Think = &api.ThinkValue{Value: true}`; api/types.go ThinkValue.String() makes
    true "medium", the template's .ThinkLevel."""
    q = [{"role": "user", "content": "q"}]
    assert rendered(parity, "/api/chat", model="tiny-think-go", messages=q) == (
        "[think:medium]q;<think>")
    assert rendered(parity, "/api/chat", model="tiny-think-go", messages=q, think=True) == (
        "[think:medium]q;<think>")
    assert rendered(parity, "/api/chat", model="tiny-think-go", messages=q, think="low") == (
        "[think:low]q;<think>")
    assert rendered(parity, "/api/chat", model="tiny-think-go", messages=q, think=False) == (
        "q;<think>")
    assert rendered(parity, "/api/generate", model="tiny-think-go", prompt="q") == (
        "[think:medium]q;<think>")


def test_assistant_thinking_in_the_history_reaches_the_template(parity) -> None:
    """template/template.go passes api.Message whole: .Thinking of earlier answers is there."""
    history = [{"role": "user", "content": "a"},
               {"role": "assistant", "content": "b", "thinking": "pondered"},
               {"role": "user", "content": "c"}]
    assert rendered(parity, "/api/chat", model="tiny-think-go", messages=history,
                    think=False) == "a;(pondered)b;c;<think>"


def test_keep_alive_0_unloads_an_embedding_model_before_any_capability_check(parity) -> None:
    """server/routes.go: "expire the runner" (empty prompt/messages and keep_alive 0) comes
    before scheduleRunner's capability check, in GenerateHandler and ChatHandler alike."""
    assert httpx.post(parity.url + "/api/embed", json={"model": "tiny-embed",
                                                       "input": "hi"}).status_code == 200
    assert "tiny-embed:latest" in [m["name"] for m in httpx.get(parity.url + "/api/ps").json()[
        "models"]]
    gen = post(parity, "/api/generate", model="tiny-embed", keep_alive=0)
    assert gen.status_code == 200 and gen.json()["done_reason"] == "unload"
    assert "tiny-embed:latest" not in [m["name"] for m in httpx.get(
        parity.url + "/api/ps").json()["models"]]
    chat = post(parity, "/api/chat", model="tiny-embed", messages=[], keep_alive=0)
    assert chat.status_code == 200 and chat.json()["done_reason"] == "unload"
    # Anything else still meets the check.
    r = post(parity, "/api/generate", model="tiny-embed", prompt="hi")
    assert r.status_code == 400 and r.json()["error"] == '"tiny-embed" does not support generate'


def test_json_null_is_an_absent_field_on_every_route(parity) -> None:
    """api/types.go decodes with encoding/json, where null leaves a field at its zero value."""
    # `stream: null` is the native default, a stream.
    r = post(parity, "/api/chat", model="tiny", stream=None, think=None, format=None,
              truncate=None, shift=None, logprobs=None, top_logprobs=None, keep_alive=None,
              tools=None, options={"num_predict": 2, "temperature": None},
              messages=[{"role": "user", "content": None, "images": None},
                        {"role": "user", "content": "hi", "tool_calls": None}])
    assert r.status_code == 200 and r.headers["content-type"] == "application/x-ndjson"
    chat = json.loads(r.text.splitlines()[-1])
    assert chat["done"] and chat["eval_count"] == 2
    gen = ok(parity, "/api/generate", model="tiny", prompt="hi", raw=None,
             system=None, suffix=None, context=None, truncate=None, shift=None,
             logprobs=None, top_logprobs=None, options={"num_predict": 2})
    assert gen["done"] and gen["eval_count"] == 2
    load = ok(parity, "/api/generate", model="tiny", prompt=None, options=None)
    assert load["done_reason"] == "load"
    oai = ok(parity, "/v1/chat/completions", model="tiny", stream=None, temperature=None,
             logprobs=None, top_logprobs=None, tools=None, response_format=None, max_tokens=2,
             messages=[{"role": "user", "content": "hi", "name": None}])
    assert oai["choices"][0]["finish_reason"] == "length"
    assert ok(parity, "/v1/completions", model="tiny", prompt="hi", stream=None,
              max_tokens=2, suffix=None)["choices"]
    assert ok(parity, "/v1/messages", model="tiny", max_tokens=2, stream=None, system=None,
              messages=[{"role": "user", "content": "hi"}])["content"] is not None
    assert ok(parity, "/v1/responses", model="tiny", input="hi", stream=None,
              max_output_tokens=2, instructions=None)["status"] == "incomplete"
    assert ok(parity, "/api/embed", model="tiny", input="hi", truncate=None,
              dimensions=None)["embeddings"]
    assert ok(parity, "/api/show", model="tiny", verbose=None, system=None)["details"]


def test_images_for_a_vision_model_are_never_dropped(parity) -> None:
    """Images reach a model whose capabilities include vision, or answer a 400 saying why:
    this `tiny-vision`'s projector layer is a text GGUF, which libmtmd cannot load; a file that
    is no image is refused first, naming it (tests/e2e/gateway/api/test_vision_api.py has the
    models that see)."""
    from support.tiny_vision import RED, solid_png

    assert "vision" in ok(parity, "/api/show", model="tiny-vision")["capabilities"]
    gen = post(parity, "/api/generate", model="tiny-vision", prompt="what?", images=[PNG])
    chat = post(parity, "/api/chat", model="tiny-vision", messages=[
        {"role": "user", "content": "what?", "images": [PNG]}])
    for r in (gen, chat):
        assert r.status_code == 400 and r.json()["error"].startswith("image 1: failed to read")
    real = base64.b64encode(solid_png(RED)).decode()
    r = post(parity, "/api/generate", model="tiny-vision", prompt="what?", images=[real])
    assert r.status_code == 400 and r.json()["error"].startswith("unable to load projector")


def test_version_is_a_current_ollama_api(parity) -> None:
    """version/version.go is stamped at release: Herd follows ollama/ollama v0.32.15."""
    version = httpx.get(parity.url + "/api/version").json()["version"]
    assert version == "0.32.15"


def test_tags_carry_capabilities_and_lengths(parity) -> None:
    """api/types.go ListModelResponse.Capabilities, ModelDetails.ContextLength and
    EmbeddingLength (omitempty), filled by server/model_list_cache.go."""
    models = {m["name"]: m for m in httpx.get(parity.url + "/api/tags").json()["models"]}
    assert models["tiny:latest"]["capabilities"] == ["completion"]
    assert models["tiny:latest"]["details"]["context_length"] == 2048
    assert models["tiny:latest"]["details"]["embedding_length"] == 64
    assert models["tiny-embed:latest"]["capabilities"] == ["embedding"]
    assert "thinking" in models["tiny-think-go:latest"]["capabilities"]
    ps_details = httpx.get(parity.url + "/api/ps").json()["models"]
    assert all("context_length" not in m["details"] for m in ps_details)


def test_show_tensors_parent_model_and_projector_info(parity) -> None:
    """server/routes.go GetModelInfo: tensors (name, type, shape), details.parent_model (the
    model layer's `from`, server/images.go; set by server/model.go parseFromModel) and
    projector_info from the first projector layer."""
    tiny = ok(parity, "/api/show", model="tiny")
    tensors = {t["name"]: t for t in tiny["tensors"]}
    assert tensors["output_norm.weight"] == {"name": "output_norm.weight", "type": "F32",
                                             "shape": [64]}
    assert tensors["token_embd.weight"]["shape"][0] == 64
    assert len(tensors) == 3 + 2 * 9
    assert tiny["details"]["parent_model"] == "" and "projector_info" not in tiny
    assert ok(parity, "/api/show", model="tiny-msgs")["details"]["parent_model"] == "tiny:latest"
    vision = ok(parity, "/api/show", model="tiny-vision")
    assert vision["projector_info"]["general.architecture"] == "llama"
    assert "general.name" not in vision["projector_info"]


def test_show_parameters_are_the_models_own(parity) -> None:
    """server/routes.go GetModelInfo renders `parameters` from m.Options before the request's
    options are merged (those reach only the Modelfile)."""
    shown = ok(parity, "/api/show", model="tiny-params", options={"top_k": 3})
    assert "temperature" in shown["parameters"] and "top_k" not in shown["parameters"]
    assert "PARAMETER top_k 3" in shown["modelfile"]


def test_v1_models_carry_context_length(parity) -> None:
    """Herd's extension of openai/openai.go's Model: the trained context of each model."""
    listed = {m["id"]: m for m in httpx.get(parity.url + "/v1/models").json()["data"]}
    assert listed["tiny:latest"]["context_length"] == 2048
    one = httpx.get(parity.url + "/v1/models/tiny").json()
    assert one["context_length"] == 2048 and one["object"] == "model"


def test_previous_response_id_and_unknown_response_format_are_ignored(parity) -> None:
    """openai/responses.go: previous_response_id is not supported and ignored, not refused;
    openai/openai.go FromChatRequest: a response_format type other than json_object and
    json_schema sets no format."""
    answer = ok(parity, "/v1/responses", model="tiny", input="hi", max_output_tokens=2,
                previous_response_id="resp_123")
    assert answer["status"] == "incomplete"
    for kind in ("text", "whatever", "json_schema"):
        r = ok(parity, "/v1/chat/completions", model="tiny", max_tokens=2,
               response_format={"type": kind}, messages=[{"role": "user", "content": "hi"}])
        assert r["choices"][0]["finish_reason"] == "length"


@pytest.mark.parametrize("path,body", [
    ("/api/generate", {"prompt": "hi", "top_logprobs": 21}),
    ("/api/chat", {"messages": [{"role": "user", "content": "hi"}], "top_logprobs": 21}),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}],
                              "logprobs": True, "top_logprobs": 21}),
    ("/v1/completions", {"prompt": "hi", "logprobs": 21}),
    ("/api/chat", {"messages": [{"role": "user", "content": "hi"}], "top_logprobs": -1}),
])
def test_top_logprobs_over_20_is_a_400_on_every_route(parity, path: str, body: dict) -> None:
    """server/routes.go GenerateHandler and ChatHandler: "top_logprobs must be between 0 and
    20", first of all checks; the OpenAI routes pass theirs through (openai/openai.go)."""
    r = post(parity, path, model="tiny", stream=False, **body)
    assert r.status_code == 400, r.text
    assert "top_logprobs must be between 0 and 20" in r.text
