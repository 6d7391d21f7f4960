"""Per-token log-probabilities (`logprobs`, `top_logprobs`) natively and on /v1."""

from __future__ import annotations

import json
import math

import httpx

GREEDY = {"temperature": 0, "num_predict": 12}


def _check_entries(entries: list[dict], top: int) -> None:
    for e in entries:
        assert e["logprob"] <= 0.0
        assert bytes(e["bytes"]).decode("utf-8", "replace") == e["token"]
        alternatives = e.get("top_logprobs", [])
        assert len(alternatives) == top
        values = [a["logprob"] for a in alternatives]
        assert values == sorted(values, reverse=True)
        assert sum(math.exp(v) for v in values) <= 1.0 + 1e-4


def test_generate_reports_one_entry_per_generated_token(server) -> None:
    r = httpx.post(server.url + "/api/generate", json={
        "model": "tiny", "prompt": "once upon a time", "stream": False, "logprobs": True,
        "top_logprobs": 3, "options": GREEDY})
    body = r.json()
    entries = body["logprobs"]
    assert len(entries) == body["eval_count"] > 0
    _check_entries(entries, 3)
    # greedy: every chosen token is the likeliest one
    for e in entries:
        assert e["token"] == e["top_logprobs"][0]["token"]
        assert abs(e["logprob"] - e["top_logprobs"][0]["logprob"]) < 1e-5
    assert b"".join(bytes(e["bytes"]) for e in entries).decode("utf-8", "replace") == body["response"]


def test_streamed_chunks_carry_the_same_entries(server) -> None:
    body = {"model": "tiny", "prompt": "once upon a time", "logprobs": True, "options": GREEDY}
    whole = httpx.post(server.url + "/api/generate", json={**body, "stream": False}).json()
    streamed: list[dict] = []
    with httpx.stream("POST", server.url + "/api/generate", json=body) as r:
        for line in r.iter_lines():
            streamed += json.loads(line).get("logprobs", [])
    assert [e["token"] for e in streamed] == [e["token"] for e in whole["logprobs"]]
    assert all("top_logprobs" not in e for e in streamed)


def test_no_logprobs_unless_asked(server) -> None:
    r = httpx.post(server.url + "/api/generate", json={
        "model": "tiny", "prompt": "hi", "stream": False, "options": GREEDY})
    assert "logprobs" not in r.json()


def test_chat_and_openai_chat(server) -> None:
    messages = [{"role": "user", "content": "hello there"}]
    chat = httpx.post(server.url + "/api/chat", json={
        "model": "tiny", "messages": messages, "stream": False, "logprobs": True,
        "top_logprobs": 2, "options": GREEDY}).json()
    assert len(chat["logprobs"]) == chat["eval_count"]
    _check_entries(chat["logprobs"], 2)

    from openai import OpenAI

    oai = OpenAI(base_url=server.url + "/v1", api_key="unused")
    r = oai.chat.completions.create(model="tiny", messages=messages, logprobs=True,
                                    top_logprobs=2, max_tokens=8, temperature=0)
    content = r.choices[0].logprobs.content
    assert len(content) == r.usage.completion_tokens
    assert all(len(c.top_logprobs) == 2 and c.logprob <= 0 for c in content)
    stream = oai.chat.completions.create(model="tiny", messages=messages, logprobs=True,
                                         max_tokens=8, temperature=0, stream=True)
    tokens = [c.token for chunk in stream if chunk.choices and chunk.choices[0].logprobs
              for c in chunk.choices[0].logprobs.content]
    assert tokens == [c.token for c in content]


def test_openai_completions_logprobs(server) -> None:
    r = httpx.post(server.url + "/v1/completions", json={
        "model": "tiny", "prompt": "abc", "max_tokens": 5, "temperature": 0, "logprobs": 2})
    choice = r.json()["choices"][0]
    assert len(choice["logprobs"]["content"]) == r.json()["usage"]["completion_tokens"]
    _check_entries(choice["logprobs"]["content"], 2)


def test_out_of_range_top_logprobs_is_a_400(server) -> None:
    r = httpx.post(server.url + "/api/generate", json={
        "model": "tiny", "prompt": "hi", "logprobs": True, "top_logprobs": 21})
    assert r.status_code == 400
    assert r.json()["error"] == "top_logprobs must be between 0 and 20"
