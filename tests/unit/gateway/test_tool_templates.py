"""Tools and tool-call history reach the runner's Jinja template the way Hugging Face chat
templates read them: from native messages, over the wire, into ChatTemplate.render."""

from __future__ import annotations

import json

import pytest
from support.tool_templates import LLAMA31_TEMPLATE, QWEN25_TEMPLATE

from herd.gateway.pipeline.chat_messages import chat_turns, tools_text
from herd.protocol.api import Message, Tool, ToolCall, ToolFunctionCall
from herd.protocol.wire import ChatTurn, Submit, SamplingParams, WireCodec
from herd.worker.templates.jinja import ChatTemplate, TemplateError

WEATHER_TOOL = Tool(function={
    "name": "get_weather", "description": "Current weather of a city",
    "parameters": {"type": "object", "required": ["city"],
                   "properties": {"city": {"type": "string", "description": "The city"}}}})

HISTORY = [
    Message("user", "Weather in Paris?"),
    Message("assistant", "", tool_calls=[ToolCall(
        ToolFunctionCall("get_weather", {"city": "Paris", "unit": "c"}), id="call_ab12cd34")]),
    Message("tool", "18 degrees", tool_name="get_weather", tool_call_id="call_ab12cd34"),
]


def over_the_wire(turns: list[ChatTurn], tools: list[Tool] | None) -> Submit:
    codec = WireCodec()
    return codec.decode(*codec.encode(Submit(1, SamplingParams(), messages=turns,
                                             tools=tools_text(tools))))


def render(source: str, turns: list[ChatTurn], tools: list[Tool] | None = None) -> str:
    submit = over_the_wire(turns, tools)
    return ChatTemplate(source, bos_token="<s>", eos_token="</s>").render(submit.messages,
                                                                          tools=submit.tools)


def test_qwen_template_gets_the_tools_the_calls_and_the_results() -> None:
    prompt = render(QWEN25_TEMPLATE, chat_turns(HISTORY, None), [WEATHER_TOOL])
    tools_json = json.dumps({"type": "function", "function": WEATHER_TOOL.function},
                            ensure_ascii=False)
    assert "# Tools" in prompt and f"<tools>\n{tools_json}\n</tools>" in prompt
    assert ('<|im_start|>assistant\n<tool_call>\n{"name": "get_weather", "arguments": '
            '{"city": "Paris", "unit": "c"}}\n</tool_call><|im_end|>') in prompt
    assert "<|im_start|>user\n<tool_response>\n18 degrees\n</tool_response><|im_end|>" in prompt
    assert prompt.endswith("<|im_start|>assistant\n")


def test_without_tools_the_template_takes_its_other_branch() -> None:
    prompt = render(QWEN25_TEMPLATE, chat_turns([Message("user", "hi")], None), None)
    assert "# Tools" not in prompt
    assert prompt.startswith("<|im_start|>system\nYou are Qwen")


def test_the_models_system_prompt_comes_first_and_tools_still_arrive() -> None:
    turns = chat_turns([Message("user", "hi")], "Be terse.")
    assert [t.role for t in turns] == ["system", "user"]
    prompt = render(QWEN25_TEMPLATE, turns, [WEATHER_TOOL])
    assert prompt.startswith("<|im_start|>system\nBe terse.\n\n# Tools")


def test_llama31_template_reads_call_arguments_as_an_object_and_tools_as_dicts() -> None:
    prompt = render(LLAMA31_TEMPLATE, chat_turns(HISTORY, None), [WEATHER_TOOL])
    assert '"name": "get_weather",\n    "description"' not in prompt  # tools are nested under function
    assert '"function": {\n        "name": "get_weather"' in prompt
    assert ('<|start_header_id|>assistant<|end_header_id|>\n\n{"name": "get_weather", '
            '"parameters": {"city": "Paris", "unit": "c"}}<|eot_id|>') in prompt
    assert '<|start_header_id|>ipython<|end_header_id|>\n\n"18 degrees"<|eot_id|>' in prompt


def test_llama31_tools_variable_is_undefined_without_tools() -> None:
    prompt = render(LLAMA31_TEMPLATE, chat_turns([Message("user", "hi")], None), None)
    assert "Given the following functions" not in prompt


def test_a_template_that_refuses_parallel_calls_is_a_template_error() -> None:
    two = [Message("user", "x"), Message("assistant", "", tool_calls=[
        ToolCall(ToolFunctionCall("a", {})), ToolCall(ToolFunctionCall("b", {}))])]
    with pytest.raises(TemplateError, match="single tool-calls"):
        render(LLAMA31_TEMPLATE, chat_turns(two, None), [WEATHER_TOOL])


def test_tool_messages_carry_name_and_call_id_keys() -> None:
    probe = ("{% for m in messages %}{{ m.role }}|{{ m.name }}|{{ m.tool_name }}|{{ m.tool_call_id }}"
             "|{{ 'tool_calls' in m }};{% endfor %}")
    prompt = render(probe, chat_turns(HISTORY, None), None)
    assert prompt == ("user||||False;assistant||||True;"
                      "tool|get_weather|get_weather|call_ab12cd34|False;")


def test_call_ids_go_to_the_template_and_missing_ones_are_left_out() -> None:
    probe = "{% for m in messages %}{{ m.tool_calls | tojson }};{% endfor %}"
    history = [Message("assistant", "", tool_calls=[ToolCall(ToolFunctionCall("f", {"x": 1}))]),
               HISTORY[1]]
    prompt = render(probe, chat_turns(history, None), None)
    first, second, _ = prompt.split(";")
    assert json.loads(first) == [{"type": "function", "function": {"name": "f", "arguments": {"x": 1}}}]
    assert json.loads(second)[0]["id"] == "call_ab12cd34"
