"""Anthropic's Messages API (POST /v1/messages) as msgspec Structs, as newest Ollama serves it
so that Anthropic SDK clients and Claude Code can use local models."""

from __future__ import annotations

from typing import Any

from msgspec import Struct

from herd.protocol.api import Options


class ContentBlockIn(Struct, omit_defaults=True):
    """One block of a message, flat like Ollama's: which fields matter depends on `type`
    (text, image, tool_use, tool_result, thinking, ...). Unknown fields such as
    `cache_control` or `citations` are ignored, so clients that send them still work."""

    type: str
    text: str | None = None
    source: dict[str, Any] | None = None  # image / document
    id: str = ""  # tool_use
    name: str = ""
    input: Any = None
    tool_use_id: str = ""  # tool_result
    content: Any = None  # tool_result: a string or a list of blocks
    is_error: bool = False
    thinking: str | None = None  # thinking
    signature: str = ""


class MessageIn(Struct):
    role: str
    content: str | list[ContentBlockIn]


class ToolIn(Struct, omit_defaults=True):
    name: str
    description: str = ""
    input_schema: dict[str, Any] | None = None
    type: str | None = None  # absent or "custom" for client tools; others are Anthropic's own


class ThinkingConfig(Struct, omit_defaults=True):
    type: str  # "enabled" or "disabled" (or "adaptive")
    budget_tokens: int | None = None


class OutputFormat(Struct, omit_defaults=True):
    type: str  # "json_schema"
    schema: dict[str, Any] | None = None


class OutputConfig(Struct, omit_defaults=True):
    effort: str | None = None  # low/medium/high/xhigh/max → think level
    format: OutputFormat | None = None  # structured output → Ollama's `format` (a grammar)


class MessagesRequest(Struct, omit_defaults=True):
    model: str = ""
    max_tokens: int | None = None  # required by the API: checked by the route
    messages: list[MessageIn] = []
    system: str | list[ContentBlockIn] | None = None
    stream: bool = False
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    stop_sequences: list[str] | None = None
    tools: list[ToolIn] | None = None
    tool_choice: Any = None  # {"type": "auto" | "any" | "none" | "tool", "name"?}
    thinking: ThinkingConfig | None = None
    output_config: OutputConfig | None = None
    metadata: Any = None  # ignored
    options: Options | None = None  # Herd extension: any Ollama option, num_ctx included
    keep_alive: float | str | None = None


# -- responses -------------------------------------------------------------------------------
# Each block type is its own Struct so that every block carries exactly Anthropic's fields: the
# SDK's stream accumulator appends to `text`/`thinking` and needs them present, even empty.

class TextBlock(Struct, tag_field="type", tag="text"):
    text: str


class ThinkingBlock(Struct, tag_field="type", tag="thinking"):
    thinking: str
    signature: str = ""  # Anthropic signs thinking for replay; a local model has nothing to sign


class ToolUseBlock(Struct, tag_field="type", tag="tool_use"):
    id: str
    name: str
    input: dict[str, Any]


ContentBlock = TextBlock | ThinkingBlock | ToolUseBlock


class Usage(Struct):
    input_tokens: int
    output_tokens: int


class MessageOut(Struct, tag_field="type", tag="message"):
    id: str
    role: str  # "assistant"
    model: str
    content: list[ContentBlock]
    stop_reason: str | None  # end_turn, max_tokens, stop_sequence, tool_use; null in message_start
    stop_sequence: str | None
    usage: Usage


# -- stream events: `event: <type>` then `data: <one of these>` ------------------------------

class MessageStart(Struct, tag_field="type", tag="message_start"):
    message: MessageOut


class ContentBlockStart(Struct, tag_field="type", tag="content_block_start"):
    index: int
    content_block: ContentBlock


class TextDelta(Struct, tag_field="type", tag="text_delta"):
    text: str


class ThinkingDelta(Struct, tag_field="type", tag="thinking_delta"):
    thinking: str


class InputJsonDelta(Struct, tag_field="type", tag="input_json_delta"):
    partial_json: str


class ContentBlockDelta(Struct, tag_field="type", tag="content_block_delta"):
    index: int
    delta: TextDelta | ThinkingDelta | InputJsonDelta


class ContentBlockStop(Struct, tag_field="type", tag="content_block_stop"):
    index: int


class StopDelta(Struct):
    stop_reason: str | None
    stop_sequence: str | None = None


class MessageDelta(Struct, tag_field="type", tag="message_delta"):
    delta: StopDelta
    usage: Usage  # cumulative: input_tokens here corrects message_start's, unknown until then


class MessageStop(Struct, tag_field="type", tag="message_stop"):
    pass


class ErrorDetail(Struct):
    type: str
    message: str


class ErrorEnvelope(Struct, tag_field="type", tag="error"):
    error: ErrorDetail


_ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error",
                403: "permission_error", 404: "not_found_error", 429: "rate_limit_error",
                503: "overloaded_error", 529: "overloaded_error"}


def error_envelope(message: str, status: int) -> ErrorEnvelope:
    """Anthropic's error body; its SDK picks the exception class from the status code."""
    return ErrorEnvelope(ErrorDetail(_ERROR_TYPES.get(status, "api_error"), message))
