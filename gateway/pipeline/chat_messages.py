"""A chat request's messages and tools → the runner's wire turns, shared by /api/chat and
/v1/chat/completions."""

from __future__ import annotations

from typing import Any

import msgspec

from herd.gateway.errors import BadRequest
from herd.protocol.names import ModelName
from herd.gateway.store.models import ModelEntry
from herd.gateway.pipeline.tool_calls import ToolCallParser
from herd.protocol.api import Message, Tool, ToolCall
from herd.protocol.wire import ChatTurn, SamplingParams, Submit

ROLES = frozenset({"system", "user", "assistant", "tool"})
_json = msgspec.json.Encoder()


def require_tools(entry: ModelEntry, name: ModelName, tools: list[Tool] | None) -> None:
    """`name` as the request spelled it: Ollama's message shows the full form of that."""
    if tools and "tools" not in entry.capabilities:
        raise BadRequest(f"{name.full} does not support tools")


def check_roles(messages: list[Message]) -> None:
    """The native API's check; /v1 lets other roles (OpenAI's `developer`) reach the template."""
    for message in messages:
        if message.role.lower() not in ROLES:
            raise BadRequest(f"invalid role: {message.role!r}")


def tool_parser(tools: list[Tool] | None) -> ToolCallParser | None:
    """Answers are searched for calls only when the request offered tools."""
    if not tools:
        return None
    return ToolCallParser(str(t.function.get("name", "")) for t in tools)


def _template_calls(calls: list[ToolCall]) -> str:
    # Hugging Face's shape, which chat templates read: type, function.name, object arguments.
    out: list[dict[str, Any]] = []
    for call in calls:
        item: dict[str, Any] = {"type": "function", "function": {
            "name": call.function.name, "arguments": call.function.arguments}}
        if call.id:
            item["id"] = call.id
        out.append(item)
    return _json.encode(out).decode()


def tools_text(tools: list[Tool] | None) -> str:
    """The tool definitions for the template, as Hugging Face templates read them."""
    if not tools:
        return ""
    return _json.encode([{"type": t.type, "function": t.function} for t in tools]).decode()


def chat_submit(req_id: int, entry: ModelEntry, sampling: SamplingParams,
                messages: list[Message], tools: list[Tool] | None, think: str,
                images: list[list[bytes]] | None = None, **fields: Any) -> Submit:
    """A chat request for the runner, the same for every API that speaks chat: the turns under
    the model's template, its tools, and the thinking split when the model thinks. `images`:
    each message's, decoded (herd.gateway.pipeline.images.check_images)."""
    return Submit(req_id, sampling,
                  messages=chat_turns(messages, entry.system, entry.messages, images),
                  template=entry.template or "", think=think,
                  split_thinking="thinking" in entry.capabilities, tools=tools_text(tools),
                  **fields)


def chat_turns(messages: list[Message], system: str | None,
               layered: list[Message] | None = None,
               images: list[list[bytes]] | None = None) -> list[ChatTurn]:
    """The turns to template, as Ollama's ChatHandler builds them (server/routes.go): the
    model's MESSAGE layers before the request's, and the model's SYSTEM first unless the
    request's own first message is a system one. Assistant `thinking` travels too, for
    templates that replay it."""
    turns: list[ChatTurn] = []
    pictures = [[] for _ in layered or ()] + list(images or [[] for _ in messages])
    for message, attached in zip((*(layered or ()), *messages), pictures):
        turns.append(ChatTurn(message.role.lower(), message.content,
                              tool_calls=_template_calls(message.tool_calls)
                              if message.tool_calls else "",
                              tool_name=message.tool_name or "",
                              tool_call_id=message.tool_call_id or "",
                              thinking=message.thinking or "",
                              images=attached))
    if system and (not messages or messages[0].role.lower() != "system"):
        turns.insert(0, ChatTurn("system", system))
    return turns
