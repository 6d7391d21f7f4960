"""Tokenize/detokenize and tools on the real default model (whatever HERD_DEFAULT_MODEL
defaults to), imported as a new user's `make serve` imports it: like Ollama's library
smollm2, it offers tools."""

from __future__ import annotations

import json

import httpx
import llama_cpp
import pytest
from support.herd_server import HerdServer

from herd.protocol.config import Settings

pytestmark = pytest.mark.gemma
DEFAULT = Settings().default_model
TEXT = "Why is the sky blue? Rayleigh scattering, 42 times."


@pytest.fixture(scope="module")
def default(tmp_path_factory: pytest.TempPathFactory):
    srv = HerdServer(tmp_path_factory.mktemp("default"), default_model=DEFAULT)
    with srv:
        yield srv


def _gguf_path(srv: HerdServer) -> str:
    show = httpx.post(srv.url + "/api/show", json={"model": DEFAULT}).json()
    assert show["capabilities"]
    name, _, tag = DEFAULT.partition(":")
    manifest = json.loads((srv.models_dir / "manifests/registry.ollama.ai/library" / name
                           / (tag or "latest")).read_text())
    (layer,) = [x for x in manifest["layers"] if x["mediaType"].endswith(".model")]
    return str(srv.models_dir / "blobs" / layer["digest"].replace(":", "-"))


def test_tokenize_matches_the_models_vocab_and_round_trips(default) -> None:
    vocab = llama_cpp.Llama(_gguf_path(default), vocab_only=True, verbose=False)
    r = httpx.post(default.url + "/api/tokenize", json={"model": DEFAULT, "content": TEXT})
    assert r.status_code == 200, r.text
    tokens = r.json()["tokens"]
    assert tokens == vocab.tokenize(TEXT.encode(), add_bos=False, special=True)
    r = httpx.post(default.url + "/api/detokenize", json={"model": DEFAULT, "tokens": tokens})
    assert r.json()["content"] == TEXT


WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Current weather of a city",
    "parameters": {"type": "object", "required": ["city"], "properties": {
        "city": {"type": "string", "enum": ["Paris", "Tokyo"]}}}}}


def test_it_offers_tools_and_answers_a_native_chat_with_them(default) -> None:
    client = default.client()
    assert "tools" in client.show(DEFAULT).capabilities
    r = client.chat(DEFAULT, [{"role": "user", "content": "What is the weather in Paris?"}],
                    tools=[WEATHER], options={"temperature": 0, "num_predict": 40})
    # A 135M model seldom calls on its own (Ollama's smollm2:135m neither): an answer, or
    # whole calls of the offered tool.
    assert r.done and (r.message.content or r.message.tool_calls)
    for call in r.message.tool_calls or []:
        assert call.function.name == "get_weather"


def test_a_forced_call_on_the_real_model(default) -> None:
    tool = WEATHER
    r = httpx.post(default.url + "/v1/chat/completions", json={
        "model": DEFAULT, "temperature": 0, "max_tokens": 60, "tools": [tool],
        "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
        "messages": [{"role": "user", "content": "What is the weather in Paris?"}]})
    assert r.status_code == 200, r.text
    choice = r.json()["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    (call,) = choice["message"]["tool_calls"]
    assert call["function"]["name"] == "get_weather"
    assert json.loads(call["function"]["arguments"])["city"] in ("Paris", "Tokyo")
