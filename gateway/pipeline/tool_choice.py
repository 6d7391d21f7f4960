"""`tool_choice` (ollama#17921), in native terms: the dialect adapters map their spelling onto a
`ToolChoice`, and the chat pipeline applies it once. `none` drops the tools (the model never
sees them); `required` (Anthropic's `any`) and a named function force one call by a grammar
over the bare-JSON call form `{"name": ..., "arguments": {...}}`, which the answer's tool-call
parser takes as a call because it names an offered tool; `auto` changes nothing."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from herd.gateway.errors import BadRequest
from herd.protocol.api import Tool


@dataclass(frozen=True)
class ToolChoice:
    mode: Literal["auto", "none", "required", "function"] = "auto"
    name: str = ""  # mode "function": the one tool to call


AUTO = ToolChoice()
NONE = ToolChoice("none")
REQUIRED = ToolChoice("required")


def _name(tool: Tool) -> str:
    return str(tool.function.get("name", ""))


def _call_schema(tool: Tool) -> dict[str, Any]:
    parameters = tool.function.get("parameters")
    if not isinstance(parameters, dict) or not parameters:
        parameters = {"type": "object"}
    return {"type": "object", "additionalProperties": False, "required": ["name", "arguments"],
            "properties": {"name": {"const": _name(tool)}, "arguments": parameters}}


def apply_tool_choice(choice: ToolChoice, tools: list[Tool] | None,
                      format: str | dict[str, Any] | None
                      ) -> tuple[list[Tool] | None, str | dict[str, Any] | None]:
    """(tools, format) for the request under `choice`. A forced call's grammar replaces any
    response format: the answer is the call."""
    if choice.mode == "auto":
        return tools, format
    if choice.mode == "none":
        return None, format
    if not tools:
        raise BadRequest("Invalid value for 'tool_choice': 'tool_choice' is only allowed when "
                         "'tools' are specified.")
    if choice.mode == "function":
        chosen = [t for t in tools if _name(t) == choice.name]
        if not chosen:
            raise BadRequest(f"tool_choice names the tool {choice.name!r}, which is not among "
                             "the request's tools")
        return tools, _call_schema(chosen[0])
    schemas = [_call_schema(t) for t in tools]
    return tools, schemas[0] if len(schemas) == 1 else {"anyOf": schemas}


def invalid(value: Any) -> BadRequest:
    return BadRequest(f"invalid tool_choice: {value!r}")


def openai_choice(value: Any) -> ToolChoice:
    """Chat completions: "none" | "auto" | "required" | {"type": "function", "function":
    {"name"}}; the Responses API's flat {"type": "function", "name"} is accepted too."""
    if value is None or value == "auto":
        return AUTO
    if value == "none":
        return NONE
    if value == "required":
        return REQUIRED
    if isinstance(value, dict) and value.get("type") == "function":
        function = value.get("function")
        name = function.get("name") if isinstance(function, dict) else value.get("name")
        if isinstance(name, str) and name:
            return ToolChoice("function", name)
    if isinstance(value, dict) and value.get("type") in ("allowed_tools", "file_search",
                                                          "web_search_preview", "mcp"):
        return AUTO  # hosted or subset choices: not forced here, the model picks
    raise invalid(value)


def anthropic_choice(value: Any) -> ToolChoice:
    """Messages: {"type": "auto" | "any" | "none" | "tool", "name"?}."""
    if value is None:
        return AUTO
    kind = value.get("type") if isinstance(value, dict) else None
    if kind == "auto":
        return AUTO
    if kind == "none":
        return NONE
    if kind == "any":
        return REQUIRED
    if kind == "tool" and isinstance(value.get("name"), str) and value["name"]:
        return ToolChoice("function", value["name"])
    raise invalid(value)
