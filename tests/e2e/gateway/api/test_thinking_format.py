"""Structured outputs on a thinking model: the grammar applies after the thinking block, not
from the first token, as newest Ollama does (server/routes.go, ChatHandler: with a format on a
thinking-capable model the first completion runs without it, `structuredOutputsState` turns
it on when content starts; `think: false` applies it at once).

`tiny-closer` is a tiny model that always writes `</think>` when it may: under a template
whose prompt opens the block it closes it at once, then the grammar makes the content JSON.
Were the grammar on from the first token, `</think>` would be forbidden and the JSON would
land inside the block, as thinking."""

from __future__ import annotations

import json

import httpx
import pytest
from support.tiny_models import write_tiny_llama
from support.tool_templates import THINKING_TEMPLATE

SCHEMA = {"type": "object", "required": ["answer"],
          "properties": {"answer": {"type": "string", "enum": ["yes", "no"]}}}
# Thinking-capable (the template names <think>), but the prompt does not open the block.
LEAD_TEMPLATE = ("{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}{% endfor %}"
                 "<|assistant|>{# the answer may start with <think> #}")
ASK = [{"role": "user", "content": "is the sky blue"}]
GREEDY = {"temperature": 0, "num_predict": 40}


@pytest.fixture(scope="module")
def thinkers(server, tmp_path_factory):
    gguf = write_tiny_llama(tmp_path_factory.mktemp("closer") / "closer.gguf", favoured="</think>")
    server.create_model("tiny-closer-raw", gguf)
    client = server.client()
    client.create(model="tiny-closer", from_="tiny-closer-raw", template=THINKING_TEMPLATE)
    client.create(model="tiny-closer-lead", from_="tiny-closer-raw", template=LEAD_TEMPLATE)
    client.create(model="tiny-think", from_="tiny", template=THINKING_TEMPLATE)
    return server


def chat(server, model: str, **body) -> dict:
    r = httpx.post(server.url + "/api/chat", json={
        "model": model, "messages": ASK, "stream": False, "format": SCHEMA,
        "options": GREEDY, **body})
    assert r.status_code == 200, r.text
    return r.json()["message"]


def test_the_grammar_starts_when_the_block_closes(thinkers) -> None:
    message = chat(thinkers, "tiny-closer")
    assert json.loads(message["content"]) in ({"answer": "yes"}, {"answer": "no"})
    assert "</think>" not in message["content"]
    r = httpx.post(thinkers.url + "/api/generate", json={
        "model": "tiny-closer", "prompt": "is the sky blue", "stream": False, "format": SCHEMA,
        "options": GREEDY})
    assert json.loads(r.json()["response"]) in ({"answer": "yes"}, {"answer": "no"})


def test_reasoning_is_free_text_while_the_block_is_open(thinkers) -> None:
    """The plain tiny model never closes the block: its reasoning is words, not forced JSON."""
    message = chat(thinkers, "tiny-think", options={"temperature": 0, "num_predict": 8})
    assert message["content"] == ""
    assert message["thinking"].strip() and "{" not in message["thinking"]


def test_an_answer_that_does_not_think_is_constrained_from_its_first_token(thinkers) -> None:
    """The first token would have been `</think>` (not a block opening): it is drawn again
    under the grammar, so the content is exactly the JSON."""
    message = chat(thinkers, "tiny-closer-lead")
    assert json.loads(message["content"]) in ({"answer": "yes"}, {"answer": "no"})
    assert message["content"].lstrip().startswith("{")


def test_think_false_applies_the_format_at_once(thinkers) -> None:
    message = chat(thinkers, "tiny-closer", think=False)
    assert json.loads(message["content"]) in ({"answer": "yes"}, {"answer": "no"})
    assert not message.get("thinking")


def test_a_bad_format_is_still_refused_up_front(thinkers) -> None:
    r = httpx.post(thinkers.url + "/api/chat", json={
        "model": "tiny-think", "messages": ASK, "stream": False,
        "format": {"type": "object", "properties": {"a": {"$ref": "#/nope"}}}})
    assert r.status_code == 400
