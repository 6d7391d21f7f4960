"""Ollama TEMPLATE layers in Go syntax, through real servers: what the model is fed (seen with
`_debug_render_only`, and checked against what generation counts), capabilities, insert."""

from __future__ import annotations


import httpx
import pytest
from support import FIXTURES

CHATML_LEGACY = ("{{ if .System }}<|im_start|>system\n{{ .System }}<|im_end|>\n{{ end }}"
                 "{{ if .Prompt }}<|im_start|>user\n{{ .Prompt }}<|im_end|>\n{{ end }}"
                 "<|im_start|>assistant\n{{ .Response }}<|im_end|>\n")
LLAMA31 = (FIXTURES / "llama3.1.gotmpl").read_text()
FIM = "<PRE> {{ .Prompt }} <SUF>{{ .Suffix }} <MID>"
WEATHER = {"type": "function", "function": {"name": "get_weather", "description": "Weather now",
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}


@pytest.fixture(scope="module")
def go_server(server):
    client = server.client()
    client.create(model="tiny-chatml", from_="tiny", template=CHATML_LEGACY, system="Be kind.")
    client.create(model="tiny-llama31", from_="tiny", template=LLAMA31)
    client.create(model="tiny-fim", from_="tiny", template=FIM)
    return server


def _post(server, path: str, body: dict) -> httpx.Response:
    return httpx.post(server.url + path, json={"stream": False, **body})


def _rendered(server, path: str, body: dict) -> str:
    r = _post(server, path, {**body, "_debug_render_only": True})
    assert r.status_code == 200, r.text
    data = r.json()
    assert "response" not in data and "message" not in data
    return data["_debug_info"]["rendered_template"]


def test_legacy_template_renders_each_exchange(go_server) -> None:
    messages = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"},
                {"role": "user", "content": "again"}]
    assert _rendered(go_server, "/api/chat", {"model": "tiny-chatml", "messages": messages}) == (
        "<|im_start|>system\nBe kind.<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n"
        "<|im_start|>assistant\nyo<|im_end|>\n<|im_start|>user\nagain<|im_end|>\n"
        "<|im_start|>assistant\n")
    assert _rendered(go_server, "/api/generate", {"model": "tiny-chatml", "prompt": "q",
                                                  "system": "S"}) == (
        "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nq<|im_end|>\n<|im_start|>assistant\n")


def test_generation_is_fed_exactly_the_rendered_prompt(go_server) -> None:
    body = {"model": "tiny-chatml", "prompt": "count the tokens",
            "options": {"num_predict": 1, "temperature": 0}}
    text = _rendered(go_server, "/api/generate", body)
    templated = _post(go_server, "/api/generate", body).json()
    raw = _post(go_server, "/api/generate", {**body, "prompt": text, "raw": True}).json()
    assert templated["prompt_eval_count"] == raw["prompt_eval_count"] > 10
    assert templated["response"] == raw["response"]


def test_request_template_overrides_the_models(go_server) -> None:
    assert _rendered(go_server, "/api/generate", {
        "model": "tiny", "prompt": "p", "template": "[{{ .Prompt }}]"}) == "[p]"


def test_messages_template_gets_tools_and_tool_history(go_server) -> None:
    show = _post(go_server, "/api/show", {"model": "tiny-llama31"}).json()
    assert "tools" in show["capabilities"]
    assert show["template"] == LLAMA31
    messages = [{"role": "user", "content": "Weather in Paris?"},
                {"role": "assistant", "content": "", "tool_calls": [
                    {"function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]},
                {"role": "tool", "content": "22C", "tool_name": "get_weather"}]
    text = _rendered(go_server, "/api/chat", {"model": "tiny-llama31", "messages": messages,
                                              "tools": [WEATHER]})
    assert '{"name": "get_weather", "parameters": {"city":"Paris"}}<|eot_id|>' in text
    assert text.endswith("<|start_header_id|>ipython<|end_header_id|>\n\n22C<|eot_id|>"
                         "<|start_header_id|>assistant<|end_header_id|>\n\n")
    last = _rendered(go_server, "/api/chat", {"model": "tiny-llama31", "tools": [WEATHER],
                                              "messages": messages[:1]})
    assert '{"type":"function","function":{"name":"get_weather"' in last


def test_insert_uses_prompt_and_suffix(go_server) -> None:
    show = _post(go_server, "/api/show", {"model": "tiny-fim"}).json()
    assert "insert" in show["capabilities"]
    body = {"model": "tiny-fim", "prompt": "def f(", "suffix": "    return x",
            "options": {"num_predict": 3}}
    assert _rendered(go_server, "/api/generate", body) == "<PRE> def f( <SUF>    return x <MID>"
    r = _post(go_server, "/api/generate", body)
    assert r.status_code == 200 and r.json()["done"]
    refused = _post(go_server, "/api/generate", {**body, "model": "tiny-chatml"})
    assert refused.status_code == 400
    assert refused.json()["error"].endswith("tiny-chatml:latest does not support insert")


def test_a_broken_go_template_is_refused_at_create(go_server) -> None:
    r = _post(go_server, "/api/create", {"model": "broken", "from": "tiny",
                                         "template": "{{ if .Prompt }}unclosed"})
    assert r.status_code == 400
    assert r.json()["error"].startswith("template error:")
    assert _post(go_server, "/api/show", {"model": "broken"}).status_code == 404


def test_a_template_that_fails_while_rendering_is_a_400(go_server) -> None:
    r = _post(go_server, "/api/generate", {"model": "tiny", "prompt": "p",
                                           "template": "{{ index .Messages 9 }}"})
    assert r.status_code == 400
    assert "index out of range" in r.json()["error"]
