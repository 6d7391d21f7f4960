"""Thinking models: the <think> block is split from the answer in the runner and comes back as
`thinking` (native) or `reasoning` (/v1); `think` reaches the template."""

from __future__ import annotations

import json

import httpx
import pytest
from support.tool_templates import THINKING_TEMPLATE



GO_THINK = ("{{ if .Think }}[think:{{ .ThinkLevel }}]{{ end }}{{ range .Messages }}"
            "{{ .Content }}{{ end }}<think>")


@pytest.fixture(scope="module")
def thinker(server):
    server.client().create(model="tiny-think", from_="tiny", template=THINKING_TEMPLATE)
    server.client().create(model="tiny-think-go", from_="tiny", template=GO_THINK)
    return server


def _post(server, path: str, body: dict) -> dict:
    r = httpx.post(server.url + path, json={"stream": False, **body})
    assert r.status_code == 200, r.text
    return r.json()


def test_capability_and_refusal(thinker) -> None:
    assert "thinking" in _post(thinker, "/api/show", {"model": "tiny-think"})["capabilities"]
    r = httpx.post(thinker.url + "/api/generate", json={"model": "tiny", "prompt": "x",
                                                         "think": True})
    assert r.status_code == 400 and r.json()["error"] == '"tiny" does not support thinking'
    r = httpx.post(thinker.url + "/api/chat", json={"model": "tiny-think", "think": "lots",
                                                     "messages": [{"role": "user", "content": "x"}]})
    assert r.status_code == 400 and r.json()["error"].startswith('invalid think value: "lots"')


def test_answer_inside_the_opened_block_is_thinking(thinker) -> None:
    opts = {"temperature": 0, "num_predict": 10}
    gen = _post(thinker, "/api/generate", {"model": "tiny-think", "prompt": "why", "options": opts})
    assert gen["thinking"] and gen["response"] == "" and gen["eval_count"] == 10
    chat = _post(thinker, "/api/chat", {"model": "tiny-think", "options": opts,
                                        "messages": [{"role": "user", "content": "why"}]})
    assert chat["message"]["thinking"] == gen["thinking"]
    streamed = ""
    with httpx.stream("POST", thinker.url + "/api/chat", json={
            "model": "tiny-think", "options": opts,
            "messages": [{"role": "user", "content": "why"}]}) as r:
        for line in r.iter_lines():
            message = json.loads(line)["message"]
            assert message["content"] == ""
            streamed += message.get("thinking", "")
    assert streamed == gen["thinking"]
    oai = _post(thinker, "/v1/chat/completions", {
        "model": "tiny-think", "max_tokens": 10, "temperature": 0,
        "messages": [{"role": "user", "content": "why"}]})
    assert oai["choices"][0]["message"]["reasoning"] == gen["thinking"]


def test_think_false_reaches_the_template_and_hides_thinking(thinker) -> None:
    body = {"model": "tiny-think", "messages": [{"role": "user", "content": "q"}]}
    on = _post(thinker, "/api/chat", {**body, "_debug_render_only": True})
    off = _post(thinker, "/api/chat", {**body, "think": False, "_debug_render_only": True})
    assert on["_debug_info"]["rendered_template"].endswith("<|assistant|><think>\n")
    assert off["_debug_info"]["rendered_template"].endswith("<think>\n\n</think>\n\n")
    answer = _post(thinker, "/api/chat", {**body, "think": False,
                                          "options": {"temperature": 0, "num_predict": 6}})
    assert "thinking" not in answer["message"] and answer["eval_count"] == 6
    effort = _post(thinker, "/v1/chat/completions", {
        "model": "tiny-think", "reasoning_effort": "none", "max_tokens": 4,
        "messages": [{"role": "user", "content": "q"}]})
    assert "reasoning" not in effort["choices"][0]["message"]


def test_go_templates_see_think_and_its_level(thinker) -> None:
    body = {"model": "tiny-think-go", "messages": [{"role": "user", "content": "q"}],
            "_debug_render_only": True}
    assert _post(thinker, "/api/chat", {**body, "think": "high"})["_debug_info"][
        "rendered_template"] == "[think:high]q<think>"
    assert _post(thinker, "/api/chat", {**body, "think": False})["_debug_info"][
        "rendered_template"] == "q<think>"
