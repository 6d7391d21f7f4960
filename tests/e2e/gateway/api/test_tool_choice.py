"""`tool_choice` on /v1/chat/completions, /v1/messages and /v1/responses (ollama#17921; Ollama
ignores it: openai/openai.go and anthropic/anthropic.go never read the field). `none` drops
the tools, `required` / Anthropic's `any` and a named function force a call by a grammar, so
even the tiny random model calls the tool; `auto` leaves the model free."""

from __future__ import annotations

import json

import httpx

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Current weather of a city",
    "parameters": {"type": "object", "required": ["city"],
                   "properties": {"city": {"type": "string", "enum": ["Paris", "Tokyo"]}}}}}
TIME = {"type": "function", "function": {
    "name": "get_time", "description": "The time in a zone",
    "parameters": {"type": "object", "required": ["zone"],
                   "properties": {"zone": {"type": "string", "enum": ["UTC", "CET"]}}}}}
ASK = [{"role": "user", "content": "What is the weather in Paris?"}]
ARGS = {"get_weather": ("city", {"Paris", "Tokyo"}), "get_time": ("zone", {"UTC", "CET"})}


def _anthropic_tool(tool: dict) -> dict:
    f = tool["function"]
    return {"name": f["name"], "description": f["description"], "input_schema": f["parameters"]}


def _responses_tool(tool: dict) -> dict:
    return {"type": "function", **tool["function"]}


def post(server, path: str, **body) -> httpx.Response:
    return httpx.post(server.url + path, json={"model": "tiny-tools", "stream": False, **body})


def assert_args(name: str, arguments: dict) -> None:
    key, allowed = ARGS[name]
    assert arguments[key] in allowed


def chat(server, **body) -> dict:
    r = post(server, "/v1/chat/completions", messages=ASK, tools=[WEATHER, TIME],
             temperature=0, max_tokens=120, **body)
    assert r.status_code == 200, r.text
    return r.json()["choices"][0]


def test_openai_required_and_named(models) -> None:
    choice = chat(models, tool_choice="required")
    assert choice["finish_reason"] == "tool_calls"
    (call,) = choice["message"]["tool_calls"]
    assert call["function"]["name"] in ARGS
    assert_args(call["function"]["name"], json.loads(call["function"]["arguments"]))
    for name in ARGS:
        choice = chat(models, tool_choice={"type": "function", "function": {"name": name}})
        (call,) = choice["message"]["tool_calls"]
        assert call["function"]["name"] == name and choice["finish_reason"] == "tool_calls"
        assert_args(name, json.loads(call["function"]["arguments"]))


def test_openai_required_streams_the_call(models) -> None:
    calls, finish = [], None
    with httpx.stream("POST", models.url + "/v1/chat/completions", json={
            "model": "tiny-tools", "stream": True, "messages": ASK, "tools": [WEATHER],
            "tool_choice": "required", "temperature": 0, "max_tokens": 120}) as r:
        for line in r.iter_lines():
            if line.startswith("data: {"):
                choice = json.loads(line[6:])["choices"][0]
                calls += choice["delta"].get("tool_calls") or []
                finish = choice["finish_reason"] or finish
    assert [c["function"]["name"] for c in calls] == ["get_weather"] and finish == "tool_calls"


def test_openai_none_drops_the_tools(models) -> None:
    plain = post(models, "/v1/chat/completions", messages=ASK, max_tokens=4).json()
    none = post(models, "/v1/chat/completions", messages=ASK, max_tokens=4, tools=[WEATHER],
                tool_choice="none").json()
    assert none["usage"]["prompt_tokens"] == plain["usage"]["prompt_tokens"]  # not in the prompt
    offered = post(models, "/v1/chat/completions", messages=ASK, max_tokens=4, tools=[WEATHER],
                   tool_choice="auto").json()
    assert offered["usage"]["prompt_tokens"] > plain["usage"]["prompt_tokens"]
    # A model without the tools capability is fine with tools it will never see.
    r = post(models, "/v1/chat/completions", model="tiny", messages=ASK, max_tokens=2,
             tools=[WEATHER], tool_choice="none")
    assert r.status_code == 200, r.text


def test_openai_refusals(models) -> None:
    r = post(models, "/v1/chat/completions", messages=ASK, tool_choice="required")
    assert r.status_code == 400
    assert "only allowed when 'tools' are specified" in r.json()["error"]["message"]
    r = post(models, "/v1/chat/completions", messages=ASK, tools=[WEATHER],
             tool_choice={"type": "function", "function": {"name": "get_time"}})
    assert r.status_code == 400 and "'get_time'" in r.json()["error"]["message"]
    r = post(models, "/v1/chat/completions", messages=ASK, tools=[WEATHER], tool_choice="maybe")
    assert r.status_code == 400 and r.json()["error"]["message"] == "invalid tool_choice: 'maybe'"


def messages(server, tool_choice: dict, tools=(WEATHER, TIME), max_tokens=120) -> dict:
    r = post(server, "/v1/messages", messages=ASK, max_tokens=max_tokens, temperature=0,
             tools=[_anthropic_tool(t) for t in tools], tool_choice=tool_choice)
    assert r.status_code == 200, r.text
    return r.json()


def test_anthropic_any_tool_and_none(models) -> None:
    reply = messages(models, {"type": "any"})
    assert reply["stop_reason"] == "tool_use"
    (use,) = [b for b in reply["content"] if b["type"] == "tool_use"]
    assert_args(use["name"], use["input"])
    reply = messages(models, {"type": "tool", "name": "get_time"})
    (use,) = [b for b in reply["content"] if b["type"] == "tool_use"]
    assert use["name"] == "get_time" and reply["stop_reason"] == "tool_use"
    none = messages(models, {"type": "none"}, max_tokens=3)
    plain = post(models, "/v1/messages", messages=ASK, max_tokens=3).json()
    assert none["usage"]["input_tokens"] == plain["usage"]["input_tokens"]
    assert not [b for b in none["content"] if b["type"] == "tool_use"]
    r = post(models, "/v1/messages", messages=ASK, max_tokens=3, tool_choice={"type": "what"},
             tools=[_anthropic_tool(WEATHER)])
    assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error"


def test_responses_required_named_and_none(models) -> None:
    def respond(tool_choice, max_output_tokens=120) -> dict:
        r = post(models, "/v1/responses", input="What is the weather in Paris?",
                 tools=[_responses_tool(WEATHER), _responses_tool(TIME)],
                 tool_choice=tool_choice, temperature=0, max_output_tokens=max_output_tokens)
        assert r.status_code == 200, r.text
        return r.json()

    body = respond("required")
    (call,) = [o for o in body["output"] if o["type"] == "function_call"]
    assert_args(call["name"], json.loads(call["arguments"]))
    assert body["tool_choice"] == "required"
    body = respond({"type": "function", "name": "get_time"})
    (call,) = [o for o in body["output"] if o["type"] == "function_call"]
    assert call["name"] == "get_time"
    body = respond("none", max_output_tokens=3)
    assert not [o for o in body["output"] if o["type"] == "function_call"]


def test_auto_is_todays_behaviour(models) -> None:
    """Left to choose, the tiny model writes words (it can only emit words and .,!?), so no
    call: the same answer as without tool_choice."""
    body = {"messages": ASK, "tools": [WEATHER], "max_tokens": 6, "temperature": 0}
    auto = post(models, "/v1/chat/completions", tool_choice="auto", **body).json()["choices"][0]
    default = post(models, "/v1/chat/completions", **body).json()["choices"][0]
    assert auto == default
    assert auto["finish_reason"] == "length" and not auto["message"].get("tool_calls")
