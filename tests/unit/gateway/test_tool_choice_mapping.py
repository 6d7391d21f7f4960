"""tool_choice spellings → ToolChoice, and what each does to the tools and the format."""

from __future__ import annotations

import pytest

from herd.gateway.errors import BadRequest
from herd.gateway.pipeline.tool_choice import (AUTO, NONE, REQUIRED, ToolChoice,
                                               anthropic_choice, apply_tool_choice,
                                               openai_choice)
from herd.protocol.api import Tool

A = Tool({"name": "a", "parameters": {"type": "object", "properties": {"x": {"type": "integer"}}}})
B = Tool({"name": "b"})


def test_openai_and_responses_spellings() -> None:
    assert openai_choice(None) == AUTO and openai_choice("auto") == AUTO
    assert openai_choice("none") == NONE and openai_choice("required") == REQUIRED
    assert openai_choice({"type": "function", "function": {"name": "a"}}) == ToolChoice("function", "a")
    assert openai_choice({"type": "function", "name": "a"}) == ToolChoice("function", "a")
    assert openai_choice({"type": "allowed_tools", "mode": "auto", "tools": []}) == AUTO
    for bad in ("any", {"type": "function"}, 3, {"type": "function", "function": {}}):
        with pytest.raises(BadRequest):
            openai_choice(bad)


def test_anthropic_spellings() -> None:
    assert anthropic_choice(None) == AUTO and anthropic_choice({"type": "auto"}) == AUTO
    assert anthropic_choice({"type": "any", "disable_parallel_tool_use": True}) == REQUIRED
    assert anthropic_choice({"type": "none"}) == NONE
    assert anthropic_choice({"type": "tool", "name": "b"}) == ToolChoice("function", "b")
    for bad in ("auto", {"type": "tool"}, {"type": "required"}):
        with pytest.raises(BadRequest):
            anthropic_choice(bad)


def test_what_each_choice_does() -> None:
    assert apply_tool_choice(AUTO, [A], "json") == ([A], "json")
    assert apply_tool_choice(NONE, [A], "json") == (None, "json")
    tools, schema = apply_tool_choice(ToolChoice("function", "a"), [A, B], "json")
    assert tools == [A, B]
    assert schema["properties"]["name"] == {"const": "a"}
    assert schema["properties"]["arguments"] == A.function["parameters"]
    _, schema = apply_tool_choice(REQUIRED, [A, B], None)
    assert [s["properties"]["name"]["const"] for s in schema["anyOf"]] == ["a", "b"]
    assert schema["anyOf"][1]["properties"]["arguments"] == {"type": "object"}
    with pytest.raises(BadRequest):
        apply_tool_choice(REQUIRED, None, None)
    with pytest.raises(BadRequest):
        apply_tool_choice(ToolChoice("function", "c"), [A], None)
