"""Tool calling through HTTP on a real server: /api/chat and /v1/chat/completions.

The tiny model has random weights, so a real call is made deterministic with a `format` JSON
schema (a llama.cpp grammar) that only admits {"name": "get_weather", "arguments": {...}}."""

from __future__ import annotations

import json
import re

import httpx
import msgspec
import ollama
import openai
import pytest
from support.tool_templates import CALL_SCHEMA, QWEN25_TEMPLATE

from herd.gateway.api.openai import native_messages
from herd.protocol.openai import ChatCompletionRequest

CALL_ID = re.compile(r"^call_[a-z0-9]{8}$")
WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Current weather of a city",
    "parameters": {"type": "object", "required": ["city"],
                   "properties": {"city": {"type": "string", "enum": ["Paris", "Tokyo"]}}}}}
GREEDY = {"temperature": 0, "num_predict": 200}
AS_CALL = {"type": "json_schema", "json_schema": {"name": "call", "schema": CALL_SCHEMA}}
ASK = [{"role": "user", "content": "What is the weather in Paris?"}]


@pytest.fixture(scope="module")
def tools_server(server):
    """The shared server with `tiny-tools`: the tiny model under Qwen2.5's tool-aware template."""
    server.client().create(model="tiny-tools", from_="tiny", template=QWEN25_TEMPLATE)
    return server


@pytest.fixture
def oai(tools_server) -> openai.OpenAI:
    return openai.OpenAI(base_url=tools_server.url + "/v1", api_key="ignored", timeout=60)


def chat(server, **body) -> httpx.Response:
    return httpx.post(server.url + "/api/chat", json={"model": "tiny-tools", "stream": False, **body})


def ndjson(server, **body) -> list[dict]:
    with httpx.stream("POST", server.url + "/api/chat", json={"model": "tiny-tools", **body}) as r:
        assert r.status_code == 200
        return [json.loads(line) for line in r.iter_lines() if line]


def assert_weather_call(call: dict, index: int = 0) -> None:
    assert CALL_ID.match(call["id"])
    assert call["function"]["index"] == index
    assert call["function"]["name"] == "get_weather"
    assert call["function"]["arguments"]["city"] in ("Paris", "Tokyo")


# -- capability and errors -------------------------------------------------------------------

def test_a_tool_aware_template_gives_the_tools_capability(tools_server) -> None:
    show = lambda m: httpx.post(tools_server.url + "/api/show", json={"model": m}).json()  # noqa: E731
    assert "tools" in show("tiny-tools")["capabilities"]
    assert "tools" not in show("tiny")["capabilities"]


def test_tools_on_a_model_without_them_is_ollamas_400(tools_server) -> None:
    r = httpx.post(tools_server.url + "/api/chat", json={"model": "tiny", "messages": ASK, "tools": [WEATHER]})
    assert r.status_code == 400
    assert r.json() == {"error": "registry.ollama.ai/library/tiny:latest does not support tools"}
    r = httpx.post(tools_server.url + "/v1/chat/completions",
                   json={"model": "tiny", "messages": ASK, "tools": [WEATHER]})
    assert r.status_code == 400
    assert r.json()["error"]["message"] == "registry.ollama.ai/library/tiny:latest does not support tools"
    assert r.json()["error"]["type"] == "invalid_request_error"


def test_openai_message_errors(tools_server) -> None:
    url = tools_server.url + "/v1/chat/completions"
    bad_args = [*ASK, {"role": "assistant", "content": None, "tool_calls": [{
        "id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{oops"}}]}]
    r = httpx.post(url, json={"model": "tiny-tools", "messages": bad_args})
    assert (r.status_code, r.json()["error"]["message"]) == (400, "invalid tool call arguments")
    null_content = [{"role": "user", "content": None}]
    r = httpx.post(url, json={"model": "tiny-tools", "messages": null_content})
    assert (r.status_code, r.json()["error"]["message"]) == (400, "invalid message content type: <nil>")


# -- the tools reach the template ------------------------------------------------------------

def test_tool_definitions_are_part_of_the_prompt(tools_server) -> None:
    plain = chat(tools_server, messages=ASK, options={"num_predict": 1}).json()
    with_tools = chat(tools_server, messages=ASK, tools=[WEATHER], options={"num_predict": 1}).json()
    assert with_tools["prompt_eval_count"] > plain["prompt_eval_count"] + 20


def test_tool_call_history_is_part_of_the_prompt(tools_server) -> None:
    call = {"id": "call_ab12cd34", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}
    history = [*ASK, {"role": "assistant", "content": "", "tool_calls": [call]}]
    without_result = chat(tools_server, messages=history, tools=[WEATHER], options={"num_predict": 1})
    assert without_result.status_code == 200, without_result.text
    result = {"role": "tool", "content": "18 degrees and sunny", "tool_name": "get_weather",
              "tool_call_id": "call_ab12cd34"}
    with_result = chat(tools_server, messages=[*history, result], tools=[WEATHER],
                       options={"num_predict": 1}).json()
    assert with_result["prompt_eval_count"] > without_result.json()["prompt_eval_count"] + 5


def test_openai_tool_call_history_is_part_of_the_prompt(oai) -> None:
    history = [*ASK, {"role": "assistant", "content": None, "tool_calls": [{
        "id": "call_ab12cd34", "type": "function",
        "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]},
        {"role": "tool", "tool_call_id": "call_ab12cd34", "content": "18 degrees"}]
    shorter = oai.chat.completions.create(model="tiny-tools", messages=ASK, tools=[WEATHER], max_tokens=1)
    r = oai.chat.completions.create(model="tiny-tools", messages=history, tools=[WEATHER], max_tokens=1)
    assert r.usage.prompt_tokens > shorter.usage.prompt_tokens + 20


def test_openai_messages_translate_like_ollamas() -> None:
    req = msgspec.json.decode(json.dumps({"model": "m", "messages": [
        {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
        {"role": "assistant", "content": None, "reasoning": "hm", "tool_calls": [
            {"id": "call_1", "type": "function",
             "function": {"name": "get_weather", "arguments": '{"city": "Paris", "a": [1]}'}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
        {"role": "tool", "name": "named", "tool_call_id": "call_1", "content": "x"},
        {"role": "tool", "tool_call_id": "call_unknown", "content": "y"},
    ]}), type=ChatCompletionRequest)
    messages = native_messages(req)
    assert [(m.role, m.content) for m in messages] == [
        ("user", "a"), ("user", "b"), ("assistant", ""), ("tool", "sunny"), ("tool", "x"), ("tool", "y")]
    (call,) = messages[2].tool_calls
    assert (call.id, call.function.name, call.function.arguments) == (
        "call_1", "get_weather", {"city": "Paris", "a": [1]})
    assert messages[2].thinking == "hm"
    assert [(m.tool_name, m.tool_call_id) for m in messages[3:]] == [
        ("get_weather", "call_1"), ("named", "call_1"), (None, "call_unknown")]


# -- calls come back parsed --------------------------------------------------------------------

def test_native_call_non_streaming(tools_server) -> None:
    r = chat(tools_server, messages=ASK, tools=[WEATHER], format=CALL_SCHEMA, options=GREEDY)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["done"] and body["done_reason"] == "stop"
    assert body["message"]["content"] == ""
    (call,) = body["message"]["tool_calls"]
    assert_weather_call(call)


def test_native_call_streaming_arrives_whole_in_one_chunk(tools_server) -> None:
    lines = ndjson(tools_server, messages=ASK, tools=[WEATHER], format=CALL_SCHEMA, options=GREEDY)
    with_calls = [line for line in lines if line["message"].get("tool_calls")]
    assert len(with_calls) == 1 and not with_calls[0]["done"]
    (call,) = with_calls[0]["message"]["tool_calls"]
    assert_weather_call(call)
    assert "".join(line["message"]["content"] for line in lines) == ""
    assert lines[-1]["done"] and "tool_calls" not in lines[-1]["message"]


def test_without_tools_the_same_json_is_plain_content(tools_server) -> None:
    body = chat(tools_server, messages=ASK, format=CALL_SCHEMA, options=GREEDY).json()
    assert "tool_calls" not in body["message"]
    assert json.loads(body["message"]["content"])["name"] == "get_weather"


def test_ollama_client_with_a_python_function_as_tool(tools_server) -> None:
    def get_weather(city: str) -> str:
        """Current weather of a city.

        Args:
            city: The city
        """
        return "sunny"

    client = tools_server.client()
    r = client.chat(model="tiny-tools", messages=ASK, tools=[get_weather], format=CALL_SCHEMA,
                    options=GREEDY)
    (call,) = r.message.tool_calls
    assert call.function.name == "get_weather"
    assert call.function.arguments["city"] in ("Paris", "Tokyo")
    # The call goes back into the history with its result, as an agent loop does.
    follow = client.chat(model="tiny-tools", tools=[get_weather], options={"num_predict": 4},
                         messages=[*ASK, r.message, {"role": "tool", "tool_name": "get_weather",
                                                     "content": get_weather(**call.function.arguments)}])
    assert follow.done and follow.eval_count == 4
    stream = list(client.chat(model="tiny-tools", messages=ASK, tools=[get_weather],
                              format=CALL_SCHEMA, options=GREEDY, stream=True))
    assert [c.function.name for part in stream for c in part.message.tool_calls or []] == ["get_weather"]


def test_openai_call_non_streaming(oai) -> None:
    r = oai.chat.completions.create(model="tiny-tools", messages=ASK, tools=[WEATHER],
                                    temperature=0, max_tokens=200, response_format=AS_CALL)
    (choice,) = r.choices
    assert choice.finish_reason == "tool_calls"
    (call,) = choice.message.tool_calls
    assert CALL_ID.match(call.id) and call.type == "function"
    assert call.function.name == "get_weather"
    assert isinstance(call.function.arguments, str)
    assert json.loads(call.function.arguments)["city"] in ("Paris", "Tokyo")


def test_openai_call_streaming(oai) -> None:
    chunks = list(oai.chat.completions.create(
        model="tiny-tools", messages=ASK, tools=[WEATHER], temperature=0, max_tokens=200,
        stream=True, response_format=AS_CALL))
    assert chunks[0].choices[0].delta.role == "assistant"
    calls = [c for chunk in chunks for c in chunk.choices[0].delta.tool_calls or []]
    (call,) = calls
    assert call.index == 0 and call.type == "function" and CALL_ID.match(call.id)
    assert json.loads(call.function.arguments)["city"] in ("Paris", "Tokyo")
    assert [c.choices[0].finish_reason for c in chunks if c.choices[0].finish_reason] == ["tool_calls"]


def test_openai_without_a_call_finishes_normally(oai) -> None:
    r = oai.chat.completions.create(model="tiny-tools", messages=ASK, tools=[WEATHER], max_tokens=6,
                                    temperature=0)
    assert r.choices[0].finish_reason == "length"
    assert r.choices[0].message.tool_calls is None


def test_ollama_client_raises_for_tools_on_a_plain_model(tools_server) -> None:
    with pytest.raises(ollama.ResponseError) as info:
        tools_server.client().chat(model="tiny", messages=ASK, tools=[WEATHER])
    assert info.value.status_code == 400
    assert info.value.error == "registry.ollama.ai/library/tiny:latest does not support tools"
