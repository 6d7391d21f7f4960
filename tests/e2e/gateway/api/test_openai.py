"""The OpenAI-compatible /v1 surface, driven with the official openai client."""

from __future__ import annotations

import base64
import struct

import httpx
import openai
import pytest


@pytest.fixture
def oai(server) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key="ignored", timeout=60)


def test_chat_completion(oai: openai.OpenAI) -> None:
    r = oai.chat.completions.create(model="tiny", max_tokens=8, temperature=0,
                                    messages=[{"role": "system", "content": "be brief"},
                                              {"role": "user", "content": "hello"}])
    assert r.object == "chat.completion" and r.id.startswith("chatcmpl-")
    assert r.system_fingerprint == "fp_ollama"
    (choice,) = r.choices
    assert choice.message.role == "assistant" and choice.message.content
    assert choice.finish_reason == "length"
    assert r.usage.completion_tokens == 8
    assert r.usage.total_tokens == r.usage.prompt_tokens + 8


def test_chat_completion_stream_with_usage_matches_non_stream(oai: openai.OpenAI) -> None:
    args = dict(model="tiny", max_tokens=12, temperature=0, messages=[{"role": "user", "content": "hi"}])
    whole = oai.chat.completions.create(**args).choices[0].message.content
    chunks = list(oai.chat.completions.create(**args, stream=True, stream_options={"include_usage": True}))
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole
    finish = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert [c.choices[0].finish_reason for c in finish] == ["length"]
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 12


def test_sse_framing_ends_with_done(server) -> None:
    with httpx.stream("POST", server.url + "/v1/chat/completions", timeout=60, json={
            "model": "tiny", "stream": True, "max_tokens": 3,
            "messages": [{"role": "user", "content": "hi"}]}) as r:
        assert r.headers["content-type"] == "text/event-stream"
        events = [line for line in r.iter_lines() if line]
    assert all(e.startswith("data: ") for e in events)
    assert events[-1] == "data: [DONE]"


def test_completions(oai: openai.OpenAI) -> None:
    r = oai.completions.create(model="tiny", prompt="tell me a story", max_tokens=5, temperature=0)
    assert r.object == "text_completion" and r.choices[0].text and r.choices[0].finish_reason == "length"
    chunks = list(oai.completions.create(model="tiny", prompt="tell me a story", max_tokens=5,
                                         temperature=0, stream=True))
    assert "".join(c.choices[0].text for c in chunks if c.choices) == r.choices[0].text


def test_stop_and_seed_and_options_extension(oai: openai.OpenAI, server) -> None:
    a = oai.chat.completions.create(model="tiny", max_tokens=16, seed=7, temperature=0.9,
                                    messages=[{"role": "user", "content": "hi"}])
    b = oai.chat.completions.create(model="tiny", max_tokens=16, seed=7, temperature=0.9,
                                    messages=[{"role": "user", "content": "hi"}])
    assert a.choices[0].message.content == b.choices[0].message.content
    r = oai.chat.completions.create(model="tiny", max_tokens=16, messages=[{"role": "user", "content": "hi"}],
                                    extra_body={"options": {"num_ctx": 256}})
    assert r.choices[0].message.content is not None
    ps = httpx.get(server.url + "/api/ps").json()["models"]
    assert 256 in [m["context_length"] for m in ps if m["name"] == "tiny:latest"]


def test_json_response_format(oai: openai.OpenAI) -> None:
    import json

    r = oai.chat.completions.create(
        model="tiny", max_tokens=64, temperature=0.5, seed=1,
        messages=[{"role": "user", "content": "yes or no"}],
        response_format={"type": "json_schema", "json_schema": {"name": "a", "schema": {
            "type": "object", "properties": {"answer": {"type": "boolean"}}, "required": ["answer"]}}})
    assert isinstance(json.loads(r.choices[0].message.content)["answer"], bool)


def test_embeddings_float_and_base64(oai: openai.OpenAI) -> None:
    r = oai.embeddings.create(model="tiny", input=["hello", "world"])
    assert [d.index for d in r.data] == [0, 1]
    assert abs(sum(x * x for x in r.data[0].embedding) - 1.0) < 1e-4
    assert r.usage.prompt_tokens > 0
    raw = httpx.post(str(oai.base_url) + "embeddings", json={
        "model": "tiny", "input": "hello", "encoding_format": "base64"}).json()
    decoded = base64.b64decode(raw["data"][0]["embedding"])
    floats = struct.unpack(f"<{len(decoded) // 4}f", decoded)
    assert max(abs(a - b) for a, b in zip(floats, r.data[0].embedding)) < 1e-5


def test_models(oai: openai.OpenAI) -> None:
    ids = [m.id for m in oai.models.list().data]
    assert "tiny:latest" in ids
    m = oai.models.retrieve("tiny:latest")
    assert (m.id, m.owned_by, m.object) == ("tiny:latest", "library", "model")


def test_errors_use_openais_envelope(oai: openai.OpenAI, server) -> None:
    with pytest.raises(openai.NotFoundError) as info:
        oai.chat.completions.create(model="ghost", messages=[{"role": "user", "content": "hi"}])
    assert info.value.body["message"] == "model 'ghost' not found"
    assert info.value.body["type"] == "not_found_error"
    with pytest.raises(openai.BadRequestError) as bad:
        oai.chat.completions.create(model="tiny", messages=[])
    assert bad.value.body["message"] == "[] is too short - 'messages'"
    r = httpx.post(server.url + "/v1/embeddings", json={"model": "tiny", "input": "x", "encoding_format": "hex"})
    assert r.status_code == 400
    assert r.json()["error"]["message"].startswith("Invalid value for 'encoding_format' = hex")
    r = httpx.get(server.url + "/v1/models/ghost")
    assert (r.status_code, r.json()["error"]["type"]) == (404, "not_found_error")
