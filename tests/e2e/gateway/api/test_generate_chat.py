"""/api/generate and /api/chat on a real server with a tiny random-weight model."""

from __future__ import annotations

import re

import httpx
import ollama
import pytest

RFC3339_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+Z$")
GREEDY = {"temperature": 0, "num_predict": 24}
METRICS = ("total_duration", "load_duration", "prompt_eval_count", "prompt_eval_duration",
           "eval_count", "eval_duration")


def test_generate_streaming_equals_non_streaming_at_temperature_0(server) -> None:
    client = server.client()
    whole = client.generate(model="tiny", prompt="hello world", options=GREEDY, stream=False)
    chunks = list(client.generate(model="tiny", prompt="hello world", options=GREEDY, stream=True))
    assert len(chunks) >= 2  # deltas merge for a reader that is behind: the count varies
    assert all(not c.done for c in chunks[:-1])
    assert "".join(c.response for c in chunks) == whole.response
    assert whole.response.strip()
    assert chunks[-1].eval_count == whole.eval_count == 24


def test_chat_streaming_equals_non_streaming_at_temperature_0(server) -> None:
    client = server.client()
    messages = [{"role": "system", "content": "be short"}, {"role": "user", "content": "why is the sky blue"}]
    whole = client.chat(model="tiny", messages=messages, options=GREEDY, stream=False)
    chunks = list(client.chat(model="tiny", messages=messages, options=GREEDY, stream=True))
    assert "".join(c.message.content for c in chunks) == whole.message.content
    assert whole.message.role == "assistant"
    assert whole.message.content.strip()
    assert chunks[-1].message.content == ""


def test_final_generate_chunk_has_every_field(server) -> None:
    r = httpx.post(server.url + "/api/generate", json={
        "model": "tiny", "prompt": "hello", "options": GREEDY, "stream": False}, timeout=60)
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert body["done"] is True and body["done_reason"] == "length"
    assert body["model"] == "tiny"
    assert RFC3339_UTC.match(body["created_at"])
    for field in METRICS:
        assert isinstance(body[field], int) and body[field] > 0, field
    assert body["eval_count"] == 24
    assert isinstance(body["context"], list) and len(body["context"]) > body["eval_count"]


def test_streaming_is_ndjson_and_final_line_carries_metrics(server) -> None:
    with httpx.stream("POST", server.url + "/api/chat", json={
            "model": "tiny", "messages": [{"role": "user", "content": "hi"}],
            "options": GREEDY}, timeout=60) as r:
        assert r.headers["content-type"] == "application/x-ndjson"
        lines = [httpx.Response(200, content=line).json() for line in r.iter_lines() if line]
    assert [line["done"] for line in lines] == [False] * (len(lines) - 1) + [True]
    final = lines[-1]
    assert final["message"] == {"role": "assistant", "content": ""}
    for field in METRICS:
        assert final[field] > 0, field
    assert "context" not in final


def test_context_continues_a_generation(server) -> None:
    client = server.client()
    first = client.generate(model="tiny", prompt="hello", options=GREEDY)
    second = client.generate(model="tiny", prompt="world", context=first.context, options=GREEDY)
    assert second.prompt_eval_count > len(first.context)
    assert second.context[:len(first.context)] == first.context


@pytest.mark.parametrize("num_predict", [1, 7, 30])
def test_num_predict_bounds_eval_count(server, num_predict: int) -> None:
    r = server.client().generate(model="tiny", prompt="tell me a story",
                                 options={"temperature": 0.7, "seed": 3, "num_predict": num_predict})
    assert r.eval_count == num_predict
    assert r.done_reason == "length"


def test_num_predict_minus_two_fills_the_context(server) -> None:
    r = server.client().generate(model="tiny", prompt="hello",
                                 options={"temperature": 0, "num_predict": -2, "num_ctx": 64})
    assert r.done_reason == "length"
    assert r.prompt_eval_count + r.eval_count == 64


def test_without_shift_generation_stops_at_a_full_context(server) -> None:
    r = httpx.post(server.url + "/api/generate", json={
        "model": "tiny", "prompt": "hello", "stream": False, "shift": False,
        "options": {"temperature": 0, "num_predict": 200, "num_ctx": 64}}).json()
    assert r["done_reason"] == "length"
    assert r["prompt_eval_count"] + r["eval_count"] == 64


def test_the_context_shifts_so_generation_goes_past_it(server) -> None:
    options = {"temperature": 0.8, "seed": 9, "num_predict": 200, "num_ctx": 64}
    r = httpx.post(server.url + "/api/generate", json={
        "model": "tiny", "prompt": "hello", "stream": False, "options": options}).json()
    assert r["done_reason"] == "length" and r["eval_count"] == 200
    # seeded, so the same answer again (the shifted cells are dropped when it ends)
    again = httpx.post(server.url + "/api/generate", json={
        "model": "tiny", "prompt": "hello", "stream": False, "options": options}).json()
    assert again["response"] == r["response"]


def test_unlimited_generation_is_capped_after_several_contexts(server) -> None:
    from herd.worker.engine.batch import UNLIMITED_CAP_CONTEXTS

    r = httpx.post(server.url + "/api/generate", json={
        "model": "tiny", "prompt": "hello", "stream": False,
        "options": {"temperature": 0, "num_predict": -1, "num_ctx": 32}}).json()
    assert r["done_reason"] == "length"
    assert r["eval_count"] == UNLIMITED_CAP_CONTEXTS * 32


def test_stop_string_ends_generation_and_is_not_emitted(server) -> None:
    client = server.client()
    base = client.generate(model="tiny", prompt="why is the sky blue", options={**GREEDY, "num_predict": 40})
    words = base.response.split()
    stop = next(w for w in words[3:] if len(w) >= 2)
    expected = base.response[:base.response.index(stop)]
    for stream in (False, True):
        options = {**GREEDY, "num_predict": 40, "stop": [stop]}
        if stream:
            chunks = list(client.generate(model="tiny", prompt="why is the sky blue", options=options, stream=True))
            text, final = "".join(c.response for c in chunks), chunks[-1]
            assert all(stop not in c.response for c in chunks)
        else:
            final = client.generate(model="tiny", prompt="why is the sky blue", options=options)
            text = final.response
        assert text == expected
        assert final.done_reason == "stop"


def test_stop_string_split_across_tokens_is_never_emitted(server) -> None:
    client = server.client()
    base = client.generate(model="tiny", prompt="hello world", options={**GREEDY, "num_predict": 40})
    # A stop that spans a token boundary: the tail of one word and the head of the next.
    i = base.response.index(" ", 6)
    stop = base.response[i - 2:i + 3]
    chunks = list(client.generate(model="tiny", prompt="hello world", stream=True,
                                  options={**GREEDY, "num_predict": 40, "stop": [stop]}))
    text = "".join(c.response for c in chunks)
    assert text == base.response[:base.response.index(stop)]
    assert chunks[-1].done_reason == "stop"


def test_same_seed_same_output_other_seed_other_output(server) -> None:
    client = server.client()
    opts = {"temperature": 0.9, "top_k": 100, "top_p": 0.95, "num_predict": 24}
    runs = [client.generate(model="tiny", prompt="tell me a story", options={**opts, "seed": 42}).response
            for _ in range(2)]
    others = {client.generate(model="tiny", prompt="tell me a story", options={**opts, "seed": s}).response
              for s in (1, 2, 3)}
    assert runs[0] == runs[1]
    assert len(others | {runs[0]}) > 1


def test_sampling_options_are_accepted_and_change_the_output(server) -> None:
    client = server.client()
    prompt = "hello world"
    greedy = client.generate(model="tiny", prompt=prompt, options=GREEDY).response
    penalised = client.generate(model="tiny", prompt=prompt, options={
        **GREEDY, "repeat_penalty": 1.8, "repeat_last_n": 64, "presence_penalty": 1.5,
        "frequency_penalty": 1.0}).response
    assert penalised != greedy
    r = client.generate(model="tiny", prompt=prompt, options={
        "temperature": 0.8, "top_k": 20, "top_p": 0.8, "min_p": 0.05, "typical_p": 0.9,
        "seed": 5, "num_keep": 2, "num_predict": 8})
    assert r.eval_count == 8


def test_raw_generate_returns_no_context(server) -> None:
    r = httpx.post(server.url + "/api/generate", json={
        "model": "tiny", "prompt": "hello", "raw": True, "stream": False, "options": GREEDY},
        timeout=60).json()
    assert r["done"] and "context" not in r and r["response"]


def test_chat_history_is_part_of_the_prompt(server) -> None:
    client = server.client()
    short = client.chat(model="tiny", messages=[{"role": "user", "content": "hi"}], options=GREEDY)
    long = client.chat(model="tiny", options=GREEDY, messages=[
        {"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"},
        {"role": "user", "content": "hi"}])
    assert long.prompt_eval_count > short.prompt_eval_count


def test_model_without_template_uses_a_builtin_one(server, tiny_gguf_no_template) -> None:
    server.create_model("tiny-nt", tiny_gguf_no_template)
    r = server.client().chat(model="tiny-nt", messages=[{"role": "user", "content": "hi"}],
                             options=GREEDY)
    assert r.done and r.eval_count == 24


def test_ollama_client_raises_for_unknown_model(server) -> None:
    with pytest.raises(ollama.ResponseError) as info:
        server.client().chat(model="nope", messages=[{"role": "user", "content": "hi"}])
    assert info.value.status_code == 404
    assert info.value.error == "model 'nope' not found"


def test_format_json_constrains_the_output_to_json(server) -> None:
    import json

    finished = 0
    for seed in range(4):
        r = server.client().generate(model="tiny", prompt="hello", format="json",
                                     options={"temperature": 0.9, "seed": seed, "num_predict": 40})
        text = r.response.strip()
        assert text[0] in '{["-0123456789tfn'
        if r.done_reason == "stop":  # the grammar allows the end only after a whole value
            json.loads(text)
            finished += 1
    assert finished >= 1


def test_format_json_schema_is_followed(server) -> None:
    import json

    schema = {"type": "object", "properties": {"answer": {"type": "boolean"}}, "required": ["answer"]}
    r = server.client().chat(model="tiny", messages=[{"role": "user", "content": "yes or no"}],
                             format=schema, options={"temperature": 0.5, "seed": 1, "num_predict": 64})
    assert r.done_reason == "stop"
    assert isinstance(json.loads(r.message.content)["answer"], bool)


def test_invalid_format_is_400(server) -> None:
    r = httpx.post(server.url + "/api/generate", json={"model": "tiny", "prompt": "x", "format": "yaml"})
    assert r.status_code == 400
    assert r.json()["error"].startswith('invalid format: "yaml"')


def test_a_long_chat_drops_its_oldest_messages_to_fit(server) -> None:
    filler = " ".join(["many words of history"] * 12)
    messages = [{"role": "system", "content": "SYSTEM-NOTE"}]
    for i in range(6):
        messages += [{"role": "user", "content": f"question {i} {filler}"},
                     {"role": "assistant", "content": f"answer {i} {filler}"}]
    messages.append({"role": "user", "content": "the last question"})
    body = {"model": "tiny", "messages": messages, "stream": False,
            "options": {"num_ctx": 256, "num_predict": 2}}
    rendered = httpx.post(server.url + "/api/chat", json={**body, "_debug_render_only": True}).json()
    text = rendered["_debug_info"]["rendered_template"]
    assert "SYSTEM-NOTE" in text and "the last question" in text
    assert "question 0 " not in text and "answer 5 " in text
    r = httpx.post(server.url + "/api/chat", json=body).json()
    assert r["done"] and r["prompt_eval_count"] < 256
    refused = httpx.post(server.url + "/api/chat", json={**body, "truncate": False})
    assert refused.status_code == 400
    assert refused.json()["error"] == "the input length exceeds the context length"
