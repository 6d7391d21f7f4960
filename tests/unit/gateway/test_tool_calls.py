"""gateway/tool_calls.py: tool calls recognised in a streamed answer, wherever the chunks split."""

from __future__ import annotations

import re

import pytest

from herd.gateway.pipeline.tool_calls import ToolCallParser, grouped, new_call_id, split

TOOLS = ("get_weather", "get_time")
WEATHER = '{"name": "get_weather", "arguments": {"city": "Paris"}}'


def parse(chunks: list[str], tools: tuple[str, ...] = TOOLS) -> tuple[str, list[tuple[str, dict, int]]]:
    parser = ToolCallParser(tools)
    events = []
    for chunk in chunks:
        events += parser.feed(chunk)
    events += parser.finish()
    text, calls = split(events)
    return text, [(c.function.name, c.function.arguments, c.function.index) for c in calls]


def every_split(text: str) -> tuple[str, list[tuple[str, dict, int]]]:
    """The result for the whole text, after checking every two-cut split and one char at a time
    give the same."""
    whole = parse([text])
    for i in range(len(text) + 1):
        for j in range(i, len(text) + 1):
            assert parse([text[:i], text[i:j], text[j:]]) == whole, (i, j)
    assert parse(list(text)) == whole
    return whole


CASES = [
    pytest.param(f"<tool_call>{WEATHER}</tool_call>", "",
                 [("get_weather", {"city": "Paris"}, 0)], id="hermes"),
    pytest.param(f"Let me check. <tool_call>\n{WEATHER}\n</tool_call> Done.", "Let me check. Done.",
                 [("get_weather", {"city": "Paris"}, 0)], id="hermes-text-around"),
    pytest.param('<tool_call>\n{"name": "get_time", "arguments": {}}\n</tool_call>\n'
                 '<tool_call>\n{"name": "get_weather", "arguments": {"city": "a </tool_call> b"}}\n'
                 '</tool_call>', "",
                 [("get_time", {}, 0), ("get_weather", {"city": "a </tool_call> b"}, 1)],
                 id="hermes-two-calls-tag-inside-a-string"),
    pytest.param('<tool_call>{"name": "anything", "arguments": {"x": [1, {"y": null}]}}', "",
                 [("anything", {"x": [1, {"y": None}]}, 0)], id="hermes-unclosed-at-the-end"),
    pytest.param('{"name": "get_weather", "parameters": {"city": "Tokyo"}}', "",
                 [("get_weather", {"city": "Tokyo"}, 0)], id="llama-bare-parameters"),
    pytest.param(f"\n  {WEATHER}\n", "", [("get_weather", {"city": "Paris"}, 0)],
                 id="bare-with-whitespace"),
    pytest.param('[{"name": "get_time", "arguments": {}}, '
                 '{"name": "get_weather", "arguments": "{\\"city\\": \\"Rome\\"}"}]', "",
                 [("get_time", {}, 0), ("get_weather", {"city": "Rome"}, 1)],
                 id="bare-list-string-arguments"),
    pytest.param('{"type": "function", "function": {"name": "get_time", "arguments": {}}}', "",
                 [("get_time", {}, 0)], id="bare-openai-shape"),
    pytest.param('<|python_tag|>{"name": "get_weather", "parameters": {"city": "Oslo"}}', "",
                 [("get_weather", {"city": "Oslo"}, 0)], id="llama-python-tag"),
    pytest.param('[TOOL_CALLS][{"name": "get_weather", "arguments": {"city": "Lima"}}]', "",
                 [("get_weather", {"city": "Lima"}, 0)], id="mistral-list"),
    pytest.param('[TOOL_CALLS]get_weather[ARGS]{"city": "Lima"}[TOOL_CALLS]get_time[ARGS]{}', "",
                 [("get_weather", {"city": "Lima"}, 0), ("get_time", {}, 1)],
                 id="mistral-name-args"),
]


@pytest.mark.parametrize("text, content, calls", CASES)
def test_calls_are_recognised_at_any_chunk_boundary(text: str, content: str, calls: list) -> None:
    assert every_split(text) == (content, calls)


NOT_CALLS = [
    pytest.param('<tool_call>{"name": broken}</tool_call> after', id="hermes-malformed-json"),
    pytest.param("<tool_call>not json at all", id="hermes-unclosed-not-json"),
    pytest.param('{"name": "unknown_tool", "arguments": {}}', id="bare-unknown-name"),
    pytest.param('{"name": "get_weather"}', id="bare-without-arguments"),
    pytest.param('{"answer": true, "name": "get_weather"}', id="plain-json-answer"),
    pytest.param('{"name": "get_weather", "arguments": {"city": ', id="bare-cut-off"),
    pytest.param("[1] the first point", id="bracketed-text"),
    pytest.param("a < b and c > [d]", id="tag-like-characters"),
    pytest.param("[TOOL_CALLS]get_weather[ARGS]not json", id="mistral-malformed"),
    pytest.param("[TOOL_CALLS] no call here", id="mistral-tag-then-text"),
    pytest.param("\n\nHello there", id="leading-newlines"),
    pytest.param("   ", id="only-whitespace"),
]


@pytest.mark.parametrize("text", NOT_CALLS)
def test_text_that_is_not_a_call_stays_content_unchanged(text: str) -> None:
    assert every_split(text) == (text, [])


def test_text_before_a_call_may_hold_brackets() -> None:
    assert every_split(f"Sure [1]: <tool_call>{WEATHER}</tool_call>") == (
        "Sure [1]: ", [("get_weather", {"city": "Paris"}, 0)])


def test_plain_text_streams_at_once_and_only_a_possible_tag_is_held() -> None:
    parser = ToolCallParser(TOOLS)
    assert parser.feed("Hello") == ["Hello"]
    assert parser.feed(" world <tool") == [" world "]
    assert parser.feed("box>") == ["<toolbox>"]
    assert parser.feed("[TOOL") == []
    assert parser.feed("S]") == ["[TOOLS]"]
    assert parser.finish() == []


def test_a_bare_answer_is_held_until_it_is_known_not_to_be_a_call() -> None:
    parser = ToolCallParser(TOOLS)
    assert parser.feed('{"name": "get_weather", ') == []
    assert parser.feed('"arguments": {"city": "Paris"}}') != []
    parser = ToolCallParser(TOOLS)
    assert parser.feed('{"answer": 1') == []
    assert parser.feed("}") == ['{"answer": 1}']
    assert parser.feed(" more") == [" more"]


def test_each_call_arrives_whole_in_its_own_group_in_order() -> None:
    parser = ToolCallParser(TOOLS)
    events = parser.feed(f"Hi <tool_call>{WEATHER}</tool_call><tool_call>{WEATHER}</tool_call> bye")
    groups = grouped(events + parser.finish())
    assert [type(g).__name__ for g in groups] == ["str", "list", "str"]
    assert groups[0] == "Hi " and groups[2] == "bye"
    assert [c.function.index for c in groups[1]] == [0, 1]
    assert groups[1][0].function.arguments == {"city": "Paris"}


def test_call_ids_look_like_ollamas() -> None:
    ids = {new_call_id() for _ in range(50)}
    assert len(ids) == 50
    assert all(re.fullmatch(r"call_[a-z0-9]{8}", i) for i in ids)
    parser = ToolCallParser(TOOLS)
    (call,) = parser.feed(f"<tool_call>{WEATHER}</tool_call>")
    assert re.fullmatch(r"call_[a-z0-9]{8}", call.id)


def test_argument_key_order_is_kept() -> None:
    text, calls = parse(['<tool_call>{"name": "f", "arguments": {"z": 1, "a": 2, "m": 3}}</tool_call>'])
    assert list(calls[0][1]) == ["z", "a", "m"]
