"""OpenAI's Responses API on /v1/responses, over raw HTTP and with the official openai SDK.

The tiny models have random weights: answers are checked by structure, token counts and
statuses; a real function call is forced with a JSON-schema `text.format`, which becomes a
llama.cpp grammar as Ollama's `format` does, on a model with Qwen2.5's tool-aware template."""

from __future__ import annotations

import json
import re

import httpx
import msgspec
import openai
import pytest
from support.tool_templates import CALL_SCHEMA

from herd.gateway.pipeline.relay import Piece
from herd.gateway.api.responses import ResponsesFraming, native_messages, native_tools
from herd.protocol.api import Metrics, ToolCall, ToolFunctionCall
from herd.protocol.responses import FunctionToolIn, ResponsesRequest
from herd.protocol.wire import FinishReason, RequestOutput

ASK = "What is the weather in Paris?"
WEATHER = {"type": "function", "name": "get_weather", "description": "Current weather of a city",
           "parameters": {"type": "object", "required": ["city"],
                          "properties": {"city": {"type": "string", "enum": ["Paris", "Tokyo"]}}}}
AS_CALL = {"format": {"type": "json_schema", "name": "call", "schema": CALL_SCHEMA}}
AS_BOOL = {"format": {"type": "json_schema", "name": "yes_no", "schema": {
    "type": "object", "properties": {"answer": {"type": "boolean"}}, "required": ["answer"]}}}


@pytest.fixture
def oai(models) -> openai.OpenAI:
    return openai.OpenAI(base_url=models.url + "/v1", api_key="ignored", timeout=60, max_retries=0)


def post(server, **body) -> httpx.Response:
    return httpx.post(server.url + "/v1/responses", json={"model": "tiny", **body})


def response(server, **body) -> dict:
    r = post(server, **body)
    assert r.status_code == 200, r.text
    return r.json()


def parse_events(raw: bytes) -> list[tuple[str, dict]]:
    """(event name, data) pairs; each name is its data's type, and sequence numbers count up."""
    out = []
    for chunk in raw.decode().strip().split("\n\n"):
        name_line, data_line = chunk.split("\n")
        name, data = name_line.removeprefix("event: "), json.loads(data_line.removeprefix("data: "))
        assert name == data["type"]
        out.append((name, data))
    assert [d["sequence_number"] for _, d in out] == list(range(len(out)))
    return out


def events(server, **body) -> list[tuple[str, dict]]:
    with httpx.stream("POST", server.url + "/v1/responses",
                      json={"model": "tiny", "stream": True, **body}) as r:
        assert r.status_code == 200
        assert r.headers["content-type"] == "text/event-stream"
        return parse_events(r.read())


def error_of(r: httpx.Response) -> tuple[int, str, str]:
    error = r.json()["error"]
    return r.status_code, error["type"], error["message"]


# -- one response ------------------------------------------------------------------------------

def test_response_shape_usage_and_incomplete(models) -> None:
    body = response(models, input="hello", max_output_tokens=8, temperature=0)
    assert re.match(r"^resp_[0-9a-f]{24}$", body["id"])
    assert (body["object"], body["model"], body["status"]) == ("response", "tiny", "incomplete")
    assert body["incomplete_details"] == {"reason": "max_output_tokens"}
    assert isinstance(body["created_at"], int)
    (item,) = body["output"]
    assert item["type"] == "message" and item["role"] == "assistant"
    assert item["id"].startswith("msg_") and item["status"] == "incomplete"
    (part,) = item["content"]
    assert part["type"] == "output_text" and part["text"] and part["annotations"] == []
    usage = body["usage"]
    assert usage["output_tokens"] == 8 and usage["input_tokens"] > 0
    assert usage["total_tokens"] == usage["input_tokens"] + 8


def test_a_finished_answer_is_completed_and_json_schema_is_json(models) -> None:
    body = response(models, input="yes or no", max_output_tokens=64, temperature=0, text=AS_BOOL)
    assert body["status"] == "completed" and body["incomplete_details"] is None
    assert body["usage"]["output_tokens"] < 64
    assert isinstance(json.loads(body["output"][0]["content"][0]["text"])["answer"], bool)
    as_object = response(models, input="json please", max_output_tokens=64, temperature=0,
                         text={"format": {"type": "json_object"}})
    json.loads(as_object["output"][0]["content"][0]["text"])  # a grammar keeps it JSON


def test_input_forms_and_instructions_reach_the_prompt(models) -> None:
    tokens = lambda **kw: response(models, max_output_tokens=1, **kw)["usage"]["input_tokens"]  # noqa: E731
    as_string = tokens(input="hi there")
    as_message = tokens(input=[{"role": "user", "content": "hi there"}])
    as_parts = tokens(input=[{"type": "message", "role": "user", "content": [
        {"type": "input_text", "text": "hi "}, {"type": "input_text", "text": "there"}]}])
    assert as_string == as_message == as_parts
    with_instructions = tokens(input="hi there", instructions="You are a pirate who rhymes.")
    assert with_instructions > as_string + 5
    history = tokens(input=[{"role": "user", "content": "hi"},
                            {"role": "assistant", "content": [{"type": "output_text",
                                                               "text": "Hello, sailor."}]},
                            {"role": "user", "content": "hi there"}])
    assert history > as_string + 5


def test_ignored_fields_and_options_extension(models) -> None:
    body = response(models, input="hi", max_output_tokens=2, store=False, metadata={"a": "b"},
                    tool_choice="auto", top_p=0.9, options={"num_ctx": 320})
    assert body["usage"]["output_tokens"] == 2
    ps = httpx.get(models.url + "/api/ps").json()["models"]
    assert 320 in [m["context_length"] for m in ps if m["name"] == "tiny:latest"]


# -- streaming ---------------------------------------------------------------------------------

def test_stream_events_in_order_and_matching_the_whole_answer(models) -> None:
    ask = dict(input="hi", max_output_tokens=10, temperature=0)
    whole = response(models, **ask)
    stream = events(models, **ask)
    names = [name for name, _ in stream]
    assert names[:4] == ["response.created", "response.in_progress",
                         "response.output_item.added", "response.content_part.added"]
    assert names[-4:] == ["response.output_text.done", "response.content_part.done",
                          "response.output_item.done", "response.completed"]
    assert set(names[4:-4]) == {"response.output_text.delta"}
    created = stream[0][1]["response"]
    assert created["status"] == "in_progress" and created["output"] == []
    text = "".join(d["delta"] for n, d in stream if n == "response.output_text.delta")
    assert text == whole["output"][0]["content"][0]["text"] == stream[-4][1]["text"]
    final = stream[-1][1]["response"]
    # Cut by max_output_tokens: OpenAI's status, in the event Ollama always ends with.
    assert final["id"] == created["id"] and final["status"] == "incomplete"
    assert final["incomplete_details"] == {"reason": "max_output_tokens"}
    assert final["usage"] == whole["usage"]
    assert final["output"][0]["content"][0]["text"] == text
    done = events(models, input="yes or no", max_output_tokens=64, temperature=0, text=AS_BOOL)
    assert done[-1][0] == "response.completed"
    assert done[-1][1]["response"]["status"] == "completed"
    assert done[-1][1]["response"]["output"][0]["status"] == "completed"


def test_stream_items_open_and_close_in_order() -> None:
    """Thinking, then text, then two calls, then text again: each an output item."""
    framing = ResponsesFraming(ResponsesRequest(model="m"))
    calls = [ToolCall(ToolFunctionCall("a", {"x": 1}), id="call_abc"),
             ToolCall(ToolFunctionCall("b", {}), id="call_def")]
    raw = b"".join([framing.delta(Piece(thinking="hm")), framing.delta(Piece(thinking="m")),
                    framing.delta(Piece("Hi")), framing.delta(Piece(" there")),
                    framing.delta(Piece(calls=calls)), framing.delta(Piece("after")),
                    framing.end(RequestOutput(1, finish=FinishReason.STOP),
                                Metrics(prompt_eval_count=5, eval_count=7))])
    shown = [(n.removeprefix("response."), d.get("output_index")) for n, d in parse_events(raw)]
    assert shown == [
        ("created", None), ("in_progress", None),
        ("output_item.added", 0), ("reasoning_summary_part.added", 0),
        ("reasoning_summary_text.delta", 0), ("reasoning_summary_text.delta", 0),
        ("reasoning_summary_text.done", 0), ("reasoning_summary_part.done", 0),
        ("output_item.done", 0),
        ("output_item.added", 1), ("content_part.added", 1), ("output_text.delta", 1),
        ("output_text.delta", 1), ("output_text.done", 1), ("content_part.done", 1),
        ("output_item.done", 1),
        ("output_item.added", 2), ("function_call_arguments.delta", 2),
        ("function_call_arguments.done", 2), ("output_item.done", 2),
        ("output_item.added", 3), ("function_call_arguments.delta", 3),
        ("function_call_arguments.done", 3), ("output_item.done", 3),
        ("output_item.added", 4), ("content_part.added", 4), ("output_text.delta", 4),
        ("output_text.done", 4), ("content_part.done", 4), ("output_item.done", 4),
        ("completed", None)]
    parsed = parse_events(raw)
    assert parsed[16][1]["item"]["arguments"] == "" and parsed[16][1]["item"]["call_id"] == "call_abc"
    assert parsed[17][1]["delta"] == parsed[18][1]["arguments"] == '{"x":1}'
    final = parsed[-1][1]["response"]
    assert [i["type"] for i in final["output"]] == ["reasoning", "message", "function_call",
                                                     "function_call", "message"]
    assert final["output"][0]["summary"] == [{"type": "summary_text", "text": "hmm"}]
    assert final["output"][1]["content"][0]["text"] == "Hi there"
    assert final["usage"]["total_tokens"] == 12 and final["status"] == "completed"
    late = ResponsesFraming(ResponsesRequest(model="m"))
    raw = late.delta(Piece("x")) + late.error("model runner has unexpectedly stopped")
    last = parse_events(raw)[-1][1]
    assert last["type"] == "error" and last["message"].startswith("model runner")
    assert parse_events(raw)[-2][0] == "response.output_item.done"


# -- function calls ----------------------------------------------------------------------------

def test_function_call_non_streaming(models) -> None:
    body = response(models, model="tiny-tools", input=ASK, tools=[WEATHER], temperature=0,
                    max_output_tokens=200, text=AS_CALL)
    assert body["status"] == "completed"
    (call,) = [i for i in body["output"] if i["type"] == "function_call"]
    assert call["id"].startswith("fc_") and call["call_id"].startswith("call_")
    assert call["name"] == "get_weather" and call["status"] == "completed"
    assert json.loads(call["arguments"])["city"] in ("Paris", "Tokyo")
    assert not [i for i in body["output"] if i["type"] == "message"]


def test_function_call_streaming(models) -> None:
    stream = events(models, model="tiny-tools", input=ASK, tools=[WEATHER], temperature=0,
                    max_output_tokens=200, text=AS_CALL)
    added = [d["item"] for n, d in stream if n == "response.output_item.added"]
    (call,) = [i for i in added if i["type"] == "function_call"]
    assert call["name"] == "get_weather" and call["arguments"] == ""
    delta = [d["delta"] for n, d in stream if n == "response.function_call_arguments.delta"]
    assert json.loads("".join(delta))["city"] in ("Paris", "Tokyo")
    assert stream[-1][0] == "response.completed"
    (final,) = [i for i in stream[-1][1]["response"]["output"] if i["type"] == "function_call"]
    assert final["arguments"] == "".join(delta) and final["call_id"] == call["call_id"]


def test_function_call_history_reaches_the_prompt(models) -> None:
    tokens = lambda input, **kw: response(  # noqa: E731
        models, model="tiny-tools", input=input, max_output_tokens=1, **kw)["usage"]["input_tokens"]
    plain = tokens(ASK)
    with_tools = tokens(ASK, tools=[WEATHER])
    assert with_tools > plain + 20
    call = {"type": "function_call", "call_id": "call_1", "name": "get_weather",
            "arguments": '{"city": "Paris"}'}
    result = {"type": "function_call_output", "call_id": "call_1", "output": "18 degrees, sunny"}
    ask = {"role": "user", "content": ASK}
    with_call = tokens([ask, call], tools=[WEATHER])
    with_result = tokens([ask, call, result], tools=[WEATHER])
    assert with_call > with_tools + 10
    assert with_result > with_call + 5


def test_input_items_translate_like_ollamas() -> None:
    req = msgspec.json.decode(json.dumps({"model": "m", "instructions": "be brief", "input": [
        {"role": "developer", "content": "no jokes"},
        {"role": "user", "content": [{"type": "input_text", "text": "weather?"}]},
        {"type": "reasoning", "id": "rs_1", "summary": [{"type": "summary_text", "text": "use it"}]},
        {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Checking."}]},
        {"type": "function_call", "call_id": "call_1", "name": "get_weather", "arguments": '{"city":"Paris"}'},
        {"type": "function_call", "call_id": "call_2", "name": "get_time", "arguments": ""},
        {"type": "function_call_output", "call_id": "call_1", "output": "sunny"},
        {"type": "function_call_output", "call_id": "call_2",
         "output": [{"type": "input_text", "text": "noon"}]},
    ]}), type=ResponsesRequest)
    messages = native_messages(req)
    assert [(m.role, m.content) for m in messages] == [
        ("system", "be brief"), ("system", "no jokes"), ("user", "weather?"),
        ("assistant", "Checking."), ("tool", "sunny"), ("tool", "noon")]
    assert messages[3].thinking == "use it"
    assert [(c.id, c.function.name, c.function.arguments) for c in messages[3].tool_calls] == [
        ("call_1", "get_weather", {"city": "Paris"}), ("call_2", "get_time", {})]
    assert [(m.tool_name, m.tool_call_id) for m in messages[4:]] == [
        ("get_weather", "call_1"), ("get_time", "call_2")]
    tools = native_tools(msgspec.json.decode(json.dumps([WEATHER, {"type": "web_search"}]),
                                             type=list[FunctionToolIn]))
    assert [t.function for t in tools] == [{"name": "get_weather",
                                            "description": WEATHER["description"],
                                            "parameters": WEATHER["parameters"]}]


# -- thinking ----------------------------------------------------------------------------------

def test_reasoning_items(models) -> None:
    ask = dict(model="tiny-think", input="why", max_output_tokens=10, temperature=0)
    body = response(models, **ask, reasoning={"effort": "high"})
    reasoning = body["output"][0]
    assert reasoning["type"] == "reasoning" and reasoning["id"].startswith("rs_")
    assert reasoning["summary"][0]["type"] == "summary_text" and reasoning["summary"][0]["text"]
    stream = events(models, **ask)
    thought = "".join(d["delta"] for n, d in stream if n == "response.reasoning_summary_text.delta")
    assert thought == reasoning["summary"][0]["text"]
    off = response(models, **ask, reasoning={"effort": "none"})
    assert [i["type"] for i in off["output"]] == ["message"]


# -- errors ------------------------------------------------------------------------------------

def test_errors_use_openais_envelope(models) -> None:
    assert error_of(post(models, model="ghost", input="hi")) == (
        404, "not_found_error", "model 'ghost' not found")
    image = {"type": "input_image", "image_url": "data:image/png;base64,aGVsbG8="}
    status, _, message = error_of(post(models, input=[{"role": "user", "content": [image]}]))
    assert status == 400 and message == "this model is missing data required for image input"
    assert error_of(post(models, input="hi", tools=[WEATHER]))[2] == (
        "registry.ollama.ai/library/tiny:latest does not support tools")
    assert error_of(post(models, input="hi", reasoning={"effort": "huge"}))[2] == (
        "invalid reasoning value: 'huge'")
    assert error_of(post(models, input="hi", reasoning={"effort": "high"}))[2] == (
        '"tiny" does not support thinking')
    assert error_of(post(models, input="hi", text={"format": {"type": "json_schema"}}))[0] == 400
    assert error_of(post(models, input=[]))[2] == "input is required"
    assert error_of(post(models, input=[{"type": "function_call", "call_id": "c", "name": "f",
                                         "arguments": "[1"}]))[0] == 400
    assert error_of(post(models, input=[{"content": "no role"}]))[0] == 400
    r = httpx.post(models.url + "/v1/responses", content=b"{not json")
    assert error_of(r)[:2] == (400, "invalid_request_error")


# -- the official SDK --------------------------------------------------------------------------

def test_sdk_create_and_output_text(oai: openai.OpenAI) -> None:
    r = oai.responses.create(model="tiny", input="hello", instructions="be brief",
                             max_output_tokens=6, temperature=0)
    assert r.object == "response" and r.id.startswith("resp_")
    assert r.status == "incomplete" and r.incomplete_details.reason == "max_output_tokens"
    assert r.output_text and r.output_text == r.output[0].content[0].text
    assert r.usage.output_tokens == 6 and r.usage.input_tokens > 0


def test_sdk_stream_matches_create(oai: openai.OpenAI) -> None:
    args = dict(model="tiny", input="hi", max_output_tokens=10, temperature=0)
    whole = oai.responses.create(**args)
    deltas = [e.delta for e in oai.responses.create(**args, stream=True)
              if e.type == "response.output_text.delta"]
    assert "".join(deltas) == whole.output_text
    with oai.responses.stream(**args) as stream:
        text = "".join(e.delta for e in stream if e.type == "response.output_text.delta")
        cut = stream.get_final_response()  # raises unless the stream ends in .completed
    assert text == whole.output_text == cut.output_text
    assert cut.status == "incomplete" and cut.incomplete_details.reason == "max_output_tokens"
    with oai.responses.stream(model="tiny", input="yes or no", max_output_tokens=64,
                              temperature=0, text=AS_BOOL) as stream:
        final = stream.get_final_response()
    assert final.status == "completed" and isinstance(json.loads(final.output_text)["answer"], bool)


def test_sdk_function_call_round_trip(oai: openai.OpenAI) -> None:
    ask = dict(model="tiny-tools", tools=[WEATHER], max_output_tokens=200, temperature=0,
               text=AS_CALL)
    r = oai.responses.create(input=ASK, **ask)
    (call,) = [i for i in r.output if i.type == "function_call"]
    assert call.name == "get_weather" and json.loads(call.arguments)["city"] in ("Paris", "Tokyo")
    with oai.responses.stream(input=ASK, **ask) as stream:
        final = stream.get_final_response()
    (streamed,) = [i for i in final.output if i.type == "function_call"]
    assert streamed.arguments == call.arguments
    # The agent loop: the call and its output go back as input.
    follow = oai.responses.create(model="tiny-tools", tools=[WEATHER], max_output_tokens=3, input=[
        {"role": "user", "content": ASK}, call.model_dump(exclude_none=True),
        {"type": "function_call_output", "call_id": call.call_id, "output": "18 degrees, sunny"}])
    assert follow.usage.output_tokens == 3 and follow.usage.input_tokens > r.usage.input_tokens
    assert follow.output_text


def test_sdk_errors(oai: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as info:
        oai.responses.create(model="ghost", input="hi")
    assert info.value.status_code == 404
    with pytest.raises(openai.BadRequestError):
        oai.responses.create(model="tiny", input="hi", tools=[WEATHER])
    with pytest.raises(openai.NotFoundError):
        with oai.responses.stream(model="ghost", input="hi") as stream:
            stream.get_final_response()
