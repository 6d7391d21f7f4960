"""Anthropic's Messages API on /v1/messages, over raw HTTP and with the official anthropic SDK.

The tiny models have random weights: answers are checked by structure, token counts and stop
reasons; a real tool call and a finished turn are forced with `output_config.format`, Anthropic's
structured output, which becomes a llama.cpp grammar as Ollama's `format` does."""

from __future__ import annotations

import json
import re

import anthropic
import httpx
import msgspec
import pytest
from support.tool_templates import CALL_SCHEMA

from herd.gateway.pipeline.relay import Piece
from herd.gateway.api.anthropic import AnthropicFraming, native_messages, native_tools
from herd.protocol.anthropic import MessagesRequest, ToolIn
from herd.protocol.api import Metrics, ToolCall, ToolFunctionCall
from herd.protocol.wire import FinishReason, RequestOutput

ASK = [{"role": "user", "content": "What is the weather in Paris?"}]
WEATHER = {"name": "get_weather", "description": "Current weather of a city",
           "input_schema": {"type": "object", "required": ["city"],
                            "properties": {"city": {"type": "string", "enum": ["Paris", "Tokyo"]}}}}
AS_CALL = {"format": {"type": "json_schema", "schema": CALL_SCHEMA}}
AS_BOOL = {"format": {"type": "json_schema", "schema": {
    "type": "object", "properties": {"answer": {"type": "boolean"}}, "required": ["answer"]}}}
# The SDK no longer takes temperature (newest Claude models refuse it); the API field still works.
GREEDY = {"temperature": 0}
TOOL_USE_ID = re.compile(r"^toolu_[A-Za-z0-9]+$")


@pytest.fixture
def claude(models) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=models.url, api_key="ignored", timeout=60, max_retries=0)


def post(server, **body) -> httpx.Response:
    return httpx.post(server.url + "/v1/messages", json={"model": "tiny", "max_tokens": 8, **body})


def message(server, **body) -> dict:
    r = post(server, **body)
    assert r.status_code == 200, r.text
    return r.json()


def events(server, **body) -> list[tuple[str, dict]]:
    with httpx.stream("POST", server.url + "/v1/messages",
                      json={"model": "tiny", "max_tokens": 8, "stream": True, **body}) as r:
        assert r.status_code == 200
        assert r.headers["content-type"] == "text/event-stream"
        return parse_events(r.read())


def parse_events(raw: bytes) -> list[tuple[str, dict]]:
    """(event name, data) pairs; each name must be its data's type."""
    out = []
    for chunk in raw.decode().strip().split("\n\n"):
        name_line, data_line = chunk.split("\n")
        name, data = name_line.removeprefix("event: "), json.loads(data_line.removeprefix("data: "))
        assert name == data["type"]
        out.append((name, data))
    return out


def error_of(r: httpx.Response) -> tuple[int, str, str]:
    body = r.json()
    assert body["type"] == "error"
    return r.status_code, body["error"]["type"], body["error"]["message"]


# -- one message -------------------------------------------------------------------------------

def test_message_shape_usage_and_max_tokens(models) -> None:
    body = message(models, messages=[{"role": "user", "content": "hello"}], temperature=0)
    assert re.match(r"^msg_[0-9a-f]{24}$", body["id"])
    assert (body["type"], body["role"], body["model"]) == ("message", "assistant", "tiny")
    (block,) = body["content"]
    assert block["type"] == "text" and block["text"]
    assert (body["stop_reason"], body["stop_sequence"]) == ("max_tokens", None)
    assert body["usage"]["output_tokens"] == 8 and body["usage"]["input_tokens"] > 0


def test_a_finished_turn_is_end_turn_and_structured_output_is_json(models) -> None:
    body = message(models, messages=[{"role": "user", "content": "yes or no"}], max_tokens=64,
                   temperature=0, output_config=AS_BOOL)
    assert body["stop_reason"] == "end_turn"
    assert body["usage"]["output_tokens"] < 64
    assert isinstance(json.loads(body["content"][0]["text"])["answer"], bool)


def test_system_as_string_or_text_blocks_reaches_the_prompt(models) -> None:
    hi = [{"role": "user", "content": "hi"}]
    tokens = lambda **kw: message(models, messages=hi, max_tokens=1, **kw)["usage"]["input_tokens"]  # noqa: E731
    plain = tokens()
    as_string = tokens(system="You are a pirate who answers in rhymes.")
    as_blocks = tokens(system=[{"type": "text", "text": "You are a pirate "},
                               {"type": "text", "text": "who answers in rhymes.",
                                "cache_control": {"type": "ephemeral"}}])
    assert as_string == as_blocks > plain + 5


def test_content_blocks_and_sampling_fields(models) -> None:
    args = dict(max_tokens=12, temperature=0.9, top_k=20, top_p=0.9, stop_sequences=["zzzz"],
                metadata={"user_id": "u1"}, tool_choice={"type": "auto"})
    as_string = message(models, messages=[{"role": "user", "content": "hi there"}],
                        **{**args, "temperature": 0})
    as_blocks = message(models, messages=[{"role": "user", "content": [
        {"type": "text", "text": "hi "}, {"type": "text", "text": "there"}]}],
        **{**args, "temperature": 0})
    assert as_string["content"] == as_blocks["content"]
    assert as_string["usage"] == as_blocks["usage"]
    assert message(models, messages=[{"role": "user", "content": "hi"}], **args)["content"]


def test_options_extension_sets_num_ctx(models) -> None:
    message(models, messages=[{"role": "user", "content": "hi"}], max_tokens=2,
            options={"num_ctx": 384})
    ps = httpx.get(models.url + "/api/ps").json()["models"]
    assert 384 in [m["context_length"] for m in ps if m["name"] == "tiny:latest"]


# -- streaming ---------------------------------------------------------------------------------

def test_stream_events_in_order_and_matching_the_whole_answer(models) -> None:
    hi = [{"role": "user", "content": "hi"}]
    whole = message(models, messages=hi, max_tokens=10, temperature=0)
    stream = events(models, messages=hi, max_tokens=10, temperature=0)
    names = [name for name, _ in stream]
    assert names[:2] == ["message_start", "content_block_start"]
    assert names[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    assert set(names[2:-3]) == {"content_block_delta"}
    start = stream[0][1]["message"]
    assert start["content"] == [] and start["stop_reason"] is None and start["id"].startswith("msg_")
    assert stream[1][1] == {"type": "content_block_start", "index": 0,
                            "content_block": {"type": "text", "text": ""}}
    deltas = [data["delta"] for name, data in stream if name == "content_block_delta"]
    assert {d["type"] for d in deltas} == {"text_delta"}
    assert [{"type": "text", "text": "".join(d["text"] for d in deltas)}] == whole["content"]
    final = stream[-2][1]
    assert final["delta"] == {"stop_reason": "max_tokens", "stop_sequence": None}
    assert final["usage"] == whole["usage"]


def test_stream_of_a_tool_call(models) -> None:
    stream = events(models, model="tiny-tools", messages=ASK, tools=[WEATHER], max_tokens=200,
                    temperature=0, output_config=AS_CALL)
    starts = [data["content_block"] for name, data in stream if name == "content_block_start"]
    (tool,) = [b for b in starts if b["type"] == "tool_use"]
    assert TOOL_USE_ID.match(tool["id"]) and tool["name"] == "get_weather" and tool["input"] == {}
    index = starts.index(tool)
    partial = [data["delta"]["partial_json"] for name, data in stream
               if name == "content_block_delta" and data["index"] == index]
    assert json.loads("".join(partial))["city"] in ("Paris", "Tokyo")
    assert ("content_block_stop", {"type": "content_block_stop", "index": index}) in stream
    assert stream[-2][1]["delta"]["stop_reason"] == "tool_use"


def test_stream_blocks_open_and_close_in_order() -> None:
    """Thinking, then text, then two calls, then text again: each a block with its own index."""
    framing = AnthropicFraming("m")
    calls = [ToolCall(ToolFunctionCall("a", {"x": 1}), id="call_abc"),
             ToolCall(ToolFunctionCall("b", {}), id="call_def")]
    raw = b"".join([framing.delta(Piece(thinking="hm")), framing.delta(Piece(thinking="m")),
                    framing.delta(Piece("Hi")), framing.delta(Piece(" there")),
                    framing.delta(Piece(calls=calls)), framing.delta(Piece("after")),
                    framing.end(RequestOutput(1, finish=FinishReason.STOP),
                                Metrics(prompt_eval_count=5, eval_count=7))])
    shown = [(n, d.get("index"), (d.get("content_block") or d.get("delta") or {}).get("type"))
             for n, d in parse_events(raw)]
    assert shown == [
        ("message_start", None, None),
        ("content_block_start", 0, "thinking"), ("content_block_delta", 0, "thinking_delta"),
        ("content_block_delta", 0, "thinking_delta"), ("content_block_stop", 0, None),
        ("content_block_start", 1, "text"), ("content_block_delta", 1, "text_delta"),
        ("content_block_delta", 1, "text_delta"), ("content_block_stop", 1, None),
        ("content_block_start", 2, "tool_use"), ("content_block_delta", 2, "input_json_delta"),
        ("content_block_stop", 2, None),
        ("content_block_start", 3, "tool_use"), ("content_block_delta", 3, "input_json_delta"),
        ("content_block_stop", 3, None),
        ("content_block_start", 4, "text"), ("content_block_delta", 4, "text_delta"),
        ("content_block_stop", 4, None),
        ("message_delta", None, None), ("message_stop", None, None)]
    events_ = parse_events(raw)
    assert events_[9][1]["content_block"] == {"type": "tool_use", "id": "toolu_abc", "name": "a",
                                              "input": {}}
    assert events_[10][1]["delta"]["partial_json"] == '{"x":1}'
    assert events_[-2][1] == {"type": "message_delta", "usage": {"input_tokens": 5, "output_tokens": 7},
                              "delta": {"stop_reason": "tool_use", "stop_sequence": None}}
    late = AnthropicFraming("m")
    raw = late.delta(Piece("x")) + late.error("model runner has unexpectedly stopped")
    assert [n for n, _ in parse_events(raw)][-2:] == ["content_block_stop", "error"]
    assert parse_events(raw)[-1][1]["error"]["type"] == "api_error"


# -- tools ---------------------------------------------------------------------------------------

def test_tool_use_non_streaming(models) -> None:
    body = message(models, model="tiny-tools", messages=ASK, tools=[WEATHER], max_tokens=200,
                   temperature=0, output_config=AS_CALL)
    assert body["stop_reason"] == "tool_use"
    (call,) = [b for b in body["content"] if b["type"] == "tool_use"]
    assert TOOL_USE_ID.match(call["id"]) and call["name"] == "get_weather"
    assert call["input"]["city"] in ("Paris", "Tokyo")
    assert not any(b["type"] == "text" and b["text"].strip() for b in body["content"])


def test_without_tools_the_same_json_is_text(models) -> None:
    body = message(models, model="tiny-tools", messages=ASK, max_tokens=200, temperature=0,
                   output_config=AS_CALL)
    assert body["stop_reason"] == "end_turn"
    (block,) = body["content"]
    assert json.loads(block["text"])["name"] == "get_weather"


def test_tool_definitions_and_history_reach_the_prompt(models) -> None:
    tokens = lambda messages, **kw: message(  # noqa: E731
        models, model="tiny-tools", messages=messages, max_tokens=1, **kw)["usage"]["input_tokens"]
    plain = tokens(ASK)
    with_tools = tokens(ASK, tools=[WEATHER])
    assert with_tools > plain + 20
    call = {"role": "assistant", "content": [
        {"type": "text", "text": "Let me look."},
        {"type": "tool_use", "id": "toolu_01A", "name": "get_weather", "input": {"city": "Paris"}}]}
    result = {"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": "toolu_01A",
         "content": [{"type": "text", "text": "18 degrees and sunny"}]}]}
    with_call = tokens([*ASK, call], tools=[WEATHER])
    with_result = tokens([*ASK, call, result], tools=[WEATHER])
    assert with_call > with_tools + 10
    assert with_result > with_call + 5


def test_anthropic_messages_translate_like_ollamas() -> None:
    req = msgspec.json.decode(json.dumps({"model": "m", "max_tokens": 1, "system": [
        {"type": "text", "text": "be "}, {"type": "text", "text": "brief"}], "messages": [
        {"role": "user", "content": "weather?"},
        {"role": "assistant", "content": [
            {"type": "thinking", "thinking": "use the tool", "signature": "sig"},
            {"type": "text", "text": "Checking."},
            {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}},
            {"type": "tool_use", "id": "toolu_2", "name": "get_time", "input": {}}]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "toolu_1", "content": "sunny"},
            {"type": "tool_result", "tool_use_id": "toolu_2",
             "content": [{"type": "text", "text": "noon"}], "is_error": False},
            {"type": "text", "text": "thanks"}]},
        {"role": "assistant", "content": [{"type": "redacted_thinking", "data": "x"}]},
    ]}), type=MessagesRequest)
    messages = native_messages(req)
    assert [(m.role, m.content) for m in messages] == [
        ("system", "be brief"), ("user", "weather?"), ("assistant", "Checking."),
        ("tool", "sunny"), ("tool", "noon"), ("user", "thanks")]
    assert messages[2].thinking == "use the tool"
    assert [(c.id, c.function.name, c.function.arguments) for c in messages[2].tool_calls] == [
        ("toolu_1", "get_weather", {"city": "Paris"}), ("toolu_2", "get_time", {})]
    assert [(m.tool_name, m.tool_call_id) for m in messages[3:5]] == [
        ("get_weather", "toolu_1"), ("get_time", "toolu_2")]
    tools = native_tools(msgspec.json.decode(json.dumps([
        WEATHER, {"type": "web_search_20250305", "name": "web_search", "max_uses": 5}]),
        type=list[ToolIn]))
    assert [t.function for t in tools] == [{"name": "get_weather", "description": WEATHER["description"],
                                            "parameters": WEATHER["input_schema"]}]


# -- thinking ------------------------------------------------------------------------------------

def test_thinking_blocks(models) -> None:
    ask = dict(model="tiny-think", messages=[{"role": "user", "content": "why"}], max_tokens=10,
               temperature=0)
    body = message(models, **ask, thinking={"type": "enabled", "budget_tokens": 1024})
    assert body["content"][0]["type"] == "thinking" and body["content"][0]["thinking"]
    assert body["usage"]["output_tokens"] == 10
    stream = events(models, **ask)
    (start,) = [d["content_block"] for n, d in stream if n == "content_block_start"]
    assert start == {"type": "thinking", "thinking": "", "signature": ""}
    thought = "".join(d["delta"]["thinking"] for n, d in stream if n == "content_block_delta")
    assert thought == body["content"][0]["thinking"]
    off = message(models, **ask, thinking={"type": "disabled"})
    assert [b["type"] for b in off["content"]] == ["text"]


def test_thinking_requested_of_a_model_that_cannot_is_relaxed(models) -> None:
    # Claude Code asks every model to think: like Ollama, one that cannot just answers.
    body = message(models, messages=[{"role": "user", "content": "hi"}],
                   thinking={"type": "enabled", "budget_tokens": 1024})
    assert [b["type"] for b in body["content"]] == ["text"]


# -- errors --------------------------------------------------------------------------------------

def test_errors_use_anthropics_envelope(models) -> None:
    hi = [{"role": "user", "content": "hi"}]
    assert error_of(post(models, model="ghost", messages=hi)) == (
        404, "not_found_error", "model 'ghost' not found")
    r = httpx.post(models.url + "/v1/messages", json={"model": "tiny", "messages": hi})
    assert error_of(r) == (400, "invalid_request_error", "max_tokens is required and must be positive")
    assert error_of(post(models, messages=[])) == (400, "invalid_request_error", "messages is required")
    assert error_of(post(models, model="", messages=hi))[2] == "model is required"
    r = httpx.post(models.url + "/v1/messages", content=b"{not json")
    assert error_of(r)[:2] == (400, "invalid_request_error")
    assert error_of(post(models, messages=hi, max_tokens="many"))[:2] == (400, "invalid_request_error")
    assert error_of(post(models, messages=[{"role": "system", "content": "x"}]))[2].startswith(
        "invalid role: 'system'")
    bad_format = post(models, messages=hi, output_config={"format": {"type": "text"}})
    assert error_of(bad_format)[2].startswith("output_config.format must be")
    assert error_of(post(models, messages=ASK, tools=[WEATHER])) == (
        400, "invalid_request_error", "registry.ollama.ai/library/tiny:latest does not support tools")
    # Other /v1 routes keep OpenAI's envelope.
    r = httpx.post(models.url + "/v1/chat/completions", json={"model": "ghost", "messages": hi})
    assert r.json()["error"]["type"] == "not_found_error" and "type" not in r.json()


def test_images_are_refused_clearly(models) -> None:
    png = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "aGVsbG8="}}
    r = post(models, messages=[{"role": "user", "content": [png, {"type": "text", "text": "what?"}]}])
    assert error_of(r) == (400, "invalid_request_error",
                           "this model is missing data required for image input")
    url = {"type": "image", "source": {"type": "url", "url": "https://example.com/a.png"}}
    r = post(models, messages=[{"role": "user", "content": [url]}])
    assert error_of(r)[2] == "invalid image source type: url. Only base64 images are supported."


# -- the official SDK ------------------------------------------------------------------------

def test_sdk_create(claude: anthropic.Anthropic) -> None:
    r = claude.messages.create(model="tiny", max_tokens=6, extra_body=GREEDY, system="be brief",
                               messages=[{"role": "user", "content": "hello"}])
    assert r.type == "message" and r.role == "assistant" and r.id.startswith("msg_")
    assert r.content[0].type == "text" and r.content[0].text
    assert r.stop_reason == "max_tokens" and r.usage.output_tokens == 6


def test_sdk_stream_matches_create(claude: anthropic.Anthropic) -> None:
    args = dict(model="tiny", max_tokens=10, extra_body=GREEDY,
                messages=[{"role": "user", "content": "hi"}])
    whole = claude.messages.create(**args)
    with claude.messages.stream(**args) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == whole.content[0].text == final.content[0].text
    assert final.stop_reason == "max_tokens"
    assert final.usage.input_tokens == whole.usage.input_tokens > 0
    assert final.usage.output_tokens == 10


def test_sdk_tool_use_and_its_result(claude: anthropic.Anthropic) -> None:
    ask = dict(model="tiny-tools", messages=ASK, tools=[WEATHER], max_tokens=200,
               extra_body=GREEDY, output_config=AS_CALL)
    r = claude.messages.create(**ask)
    assert r.stop_reason == "tool_use"
    (call,) = [b for b in r.content if b.type == "tool_use"]
    assert call.name == "get_weather" and call.input["city"] in ("Paris", "Tokyo")
    with claude.messages.stream(**ask) as stream:
        final = stream.get_final_message()
    (streamed,) = [b for b in final.content if b.type == "tool_use"]
    assert streamed.input == call.input and final.stop_reason == "tool_use"
    # The agent loop: the call and its result go back as history.
    follow = claude.messages.create(model="tiny-tools", tools=[WEATHER], max_tokens=3, messages=[
        *ASK, {"role": "assistant", "content": r.content},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.id,
                                      "content": "18 degrees and sunny"}]}])
    assert follow.usage.output_tokens == 3 and follow.usage.input_tokens > r.usage.input_tokens


def test_sdk_thinking_stream(claude: anthropic.Anthropic) -> None:
    with claude.messages.stream(model="tiny-think", max_tokens=8, extra_body=GREEDY,
                                thinking={"type": "enabled", "budget_tokens": 1024},
                                messages=[{"role": "user", "content": "why"}]) as stream:
        final = stream.get_final_message()
    assert final.content[0].type == "thinking" and final.content[0].thinking


def test_sdk_errors(claude: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.NotFoundError) as info:
        claude.messages.create(model="ghost", max_tokens=5, messages=[{"role": "user", "content": "hi"}])
    assert info.value.status_code == 404
    assert info.value.body["error"] == {"type": "not_found_error", "message": "model 'ghost' not found"}
    with pytest.raises(anthropic.BadRequestError):
        claude.messages.create(model="tiny", max_tokens=5, tools=[WEATHER], messages=ASK)
    with pytest.raises(anthropic.NotFoundError):
        with claude.messages.stream(model="ghost", max_tokens=5,
                                    messages=[{"role": "user", "content": "hi"}]) as stream:
            stream.get_final_message()


def test_a_stop_sequence_is_named(models) -> None:
    free = message(models, messages=ASK, max_tokens=40, **GREEDY)
    words = free["content"][0]["text"].split()
    stop = next(w for w in words[2:] if len(w) >= 2)
    body = message(models, messages=ASK, max_tokens=40, stop_sequences=[stop, "never-seen"],
                   **GREEDY)
    assert (body["stop_reason"], body["stop_sequence"]) == ("stop_sequence", stop)
    assert stop not in body["content"][0]["text"]
    last = events(models, messages=ASK, max_tokens=40, stop_sequences=[stop], **GREEDY)[-2]
    assert last[1]["delta"] == {"stop_reason": "stop_sequence", "stop_sequence": stop}
