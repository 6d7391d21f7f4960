"""POST /v1/messages: Anthropic's Messages API translated onto the native chat machinery, as
newest Ollama serves it so that Anthropic SDK clients and Claude Code can use local models.

Requests become native messages, tools and options and run through the same `generate()` as
/api/chat and /v1/chat/completions; `AnthropicFraming` writes the answer as one message object
or as Anthropic's named server-sent events. Errors get Anthropic's envelope in the one error
middleware (`herd.gateway.errors.error_shape`)."""

from __future__ import annotations

import secrets
from typing import Any

import msgspec
from aiohttp import web

from herd.gateway.errors import BadRequest
from herd.gateway.http.io import SSE, decode_body
from herd.gateway.pipeline.chat import ChatCall, chat
from herd.gateway.pipeline.tool_choice import anthropic_choice
from herd.gateway.pipeline.relay import DONE_REASONS, Piece
from herd.gateway.state import STATE
from herd.protocol.anthropic import (ContentBlock, ContentBlockDelta, ContentBlockIn,
                                ContentBlockStart, ContentBlockStop, InputJsonDelta,
                                MessageDelta, MessageOut, MessagesRequest, MessageStart,
                                MessageStop, StopDelta, TextBlock, TextDelta, ThinkingBlock,
                                ThinkingDelta, ToolIn, ToolUseBlock, Usage, error_envelope)
from herd.protocol.api import Message, Metrics, Options, Tool, ToolCall, ToolFunctionCall
from herd.protocol.wire import RequestOutput

routes = web.RouteTableDef()
_json = msgspec.json.Encoder()

_EFFORTS = {"low": "low", "medium": "medium", "high": "high", "xhigh": "high", "max": "max"}


def event(value: msgspec.Struct) -> bytes:
    """One server-sent event; Anthropic names each one after its `type`, and its SDK reads
    the name."""
    name = type(value).__struct_config__.tag
    return b"event: " + str(name).encode() + b"\ndata: " + _json.encode(value) + b"\n\n"


# -- request → native --------------------------------------------------------------------------

def _text_of(blocks: list[ContentBlockIn], where: str) -> str:
    texts = []
    for block in blocks:
        if block.type != "text":
            raise BadRequest(f"{where}: only text blocks are supported, not {block.type!r}")
        texts.append(block.text or "")
    return "".join(texts)


def _image(source: Any) -> str:
    """An image block's data as a native image (base64); URLs cannot be fetched."""
    if not isinstance(source, dict) or source.get("type") != "base64":
        kind = source.get("type") if isinstance(source, dict) else None
        raise BadRequest(f"invalid image source type: {kind}. Only base64 images are supported.")
    return str(source.get("data", ""))


def _tool_result(content: Any) -> tuple[str, list[str]]:
    """A tool_result's content (a string or a list of text and image blocks) as text and
    images."""
    if content is None:
        return "", []
    if isinstance(content, str):
        return content, []
    if not isinstance(content, list):
        raise BadRequest("invalid tool_result content")
    texts, images = [], []
    for block in content:
        if not isinstance(block, dict):
            raise BadRequest("invalid tool_result content")
        if block.get("type") == "text":
            texts.append(str(block.get("text", "")))
        elif block.get("type") == "image":
            images.append(_image(block.get("source")))
    return "".join(texts), images


def native_messages(req: MessagesRequest) -> list[Message]:
    """Anthropic's system and messages as native messages, the way Ollama translates them: one
    message per turn with its text, thinking and tool calls, and one `tool` message per
    tool_result, placed before the user text that came with it."""
    messages: list[Message] = []
    if req.system:
        system = req.system if isinstance(req.system, str) else _text_of(req.system, "system")
        if system:
            messages.append(Message("system", system))
    names: dict[str, str] = {}  # tool_use id → tool name: templates may show the name of a result
    for message in req.messages:
        role = message.role.lower()
        if role not in ("user", "assistant"):
            raise BadRequest(f"invalid role: {message.role!r} (must be 'user' or 'assistant')")
        blocks = ([ContentBlockIn("text", text=message.content)]
                  if isinstance(message.content, str) else message.content)
        texts: list[str] = []
        thinking: list[str] = []
        images: list[str] = []
        calls: list[ToolCall] = []
        results: list[Message] = []
        for block in blocks:
            if block.type == "text":
                texts.append(block.text or "")
            elif block.type == "thinking":
                thinking.append(block.thinking or "")
            elif block.type == "image":
                images.append(_image(block.source))
            elif block.type == "tool_use":
                if not block.id or not block.name:
                    raise BadRequest("tool_use blocks need an 'id' and a 'name'")
                if block.input is not None and not isinstance(block.input, dict):
                    raise BadRequest("tool_use 'input' must be an object")
                calls.append(ToolCall(ToolFunctionCall(block.name, block.input or {}), id=block.id))
                names[block.id] = block.name
            elif block.type == "tool_result":
                text, result_images = _tool_result(block.content)
                results.append(Message("tool", text, images=result_images or None,
                                       tool_name=names.get(block.tool_use_id),
                                       tool_call_id=block.tool_use_id or None))
            elif block.type == "document":
                raise BadRequest("document blocks are not supported")
            # Other blocks (redacted_thinking, server tool results a client replays from an
            # Anthropic conversation) have nothing a local model can use: skipped, as Ollama does.
        messages.extend(results)  # the results answer the previous turn's calls
        text = "".join(texts)
        if text or thinking or images or calls:
            messages.append(Message(role, text, thinking="".join(thinking) or None,
                                    images=images or None, tool_calls=calls or None))
    return messages


def native_tools(tools: list[ToolIn] | None) -> list[Tool] | None:
    out = []
    for tool in tools or []:
        if tool.type not in (None, "custom"):
            # Anthropic's own tools (web search, code execution, ...) run on Anthropic's servers;
            # Herd has nothing to run them with, so the model is not offered them.
            continue
        schema = tool.input_schema or {"type": "object", "properties": {}}
        out.append(Tool({"name": tool.name, "description": tool.description,
                         "parameters": schema}))
    return out or None


def _think(req: MessagesRequest) -> bool | str | None:
    think: bool | str | None = None
    if req.thinking is not None:
        think = {"enabled": True, "disabled": False}.get(req.thinking.type)
    if think is None and req.output_config and req.output_config.effort:
        think = _EFFORTS.get(req.output_config.effort.lower())
    return think


def _format(req: MessagesRequest) -> dict[str, Any] | None:
    output_format = req.output_config.format if req.output_config else None
    if output_format is None:
        return None
    if output_format.type != "json_schema" or not isinstance(output_format.schema, dict):
        raise BadRequest('output_config.format must be {"type": "json_schema", "schema": {...}}')
    return output_format.schema


def _options(req: MessagesRequest) -> list[Options | None]:
    # Only what the request sets overrides the model's parameters (unlike /v1/chat/completions,
    # Ollama gives no defaults of its own here).
    mapped = Options(num_predict=req.max_tokens, temperature=req.temperature, top_p=req.top_p,
                     top_k=req.top_k, stop=req.stop_sequences or None)
    return [mapped, req.options]


# -- native → response ---------------------------------------------------------------------

def _tool_use_id(call: ToolCall) -> str:
    """Anthropic's ids read `toolu_…`; the parser's `call_…` suffix keeps them unique."""
    suffix = call.id.removeprefix("call_") if call.id else secrets.token_hex(8)
    return "toolu_" + suffix


def _stop_reason(final: RequestOutput, called: bool) -> str:
    if called:
        return "tool_use"
    if final.stop:
        return "stop_sequence"
    return "max_tokens" if DONE_REASONS.get(final.finish) == "length" else "end_turn"


def _usage(metrics: Metrics) -> Usage:
    return Usage(metrics.prompt_eval_count, metrics.eval_count)


class AnthropicFraming:
    """One answer as a Messages API message, or streamed as its events: message_start, then
    per content block a start, deltas and a stop, then message_delta and message_stop."""

    content_type = SSE

    def __init__(self, model: str) -> None:
        self.id = "msg_" + secrets.token_hex(12)
        self.model = model
        self.started = False
        self.open = ""  # the type of the block being streamed, "" when none is open
        self.index = -1  # of the latest block started
        self.called = False

    def _start(self) -> bytes:
        if self.started:
            return b""
        self.started = True
        # The runner counts the prompt's tokens and reports them at the end: message_delta
        # carries the real input_tokens (its usage is cumulative and replaces these).
        start = MessageOut(self.id, "assistant", self.model, [], None, None, Usage(0, 0))
        return event(MessageStart(start))

    def _close(self) -> bytes:
        if not self.open:
            return b""
        self.open = ""
        return event(ContentBlockStop(self.index))

    def _open(self, block: ContentBlock, kind: str) -> bytes:
        out = self._close()
        self.index += 1
        self.open = kind
        return out + event(ContentBlockStart(self.index, block))

    def delta(self, piece: Piece) -> bytes:
        out = self._start()
        if piece.thinking:
            if self.open != "thinking":
                out += self._open(ThinkingBlock(""), "thinking")
            out += event(ContentBlockDelta(self.index, ThinkingDelta(piece.thinking)))
        if piece.text:
            if self.open != "text":
                out += self._open(TextBlock(""), "text")
            out += event(ContentBlockDelta(self.index, TextDelta(piece.text)))
        for call in piece.calls or []:
            # A call is parsed whole, so its input goes out as one input_json_delta.
            self.called = True
            out += self._open(ToolUseBlock(_tool_use_id(call), call.function.name, {}), "tool_use")
            arguments = _json.encode(call.function.arguments).decode()
            out += event(ContentBlockDelta(self.index, InputJsonDelta(arguments)))
            out += self._close()
        return out

    def end(self, final: RequestOutput, metrics: Metrics) -> bytes:
        stop = StopDelta(_stop_reason(final, self.called), final.stop or None)
        return (self._start() + self._close() + event(MessageDelta(stop, _usage(metrics)))
                + event(MessageStop()))

    def error(self, message: str) -> bytes:
        # The status is already 200: Anthropic's stream reports a late failure as an error event.
        return self._close() + event(error_envelope(message, 500))

    def whole(self, piece: Piece, final: RequestOutput, metrics: Metrics) -> MessageOut:
        content: list[ContentBlock] = []
        if piece.thinking:
            content.append(ThinkingBlock(piece.thinking))
        if piece.text:
            content.append(TextBlock(piece.text))
        for call in piece.calls or []:
            content.append(ToolUseBlock(_tool_use_id(call), call.function.name,
                                        call.function.arguments))
        return MessageOut(self.id, "assistant", self.model, content,
                          _stop_reason(final, bool(piece.calls)), final.stop or None,
                          _usage(metrics))


@routes.post("/v1/messages")
async def messages(request: web.Request) -> web.StreamResponse:
    req = await decode_body(request, MessagesRequest)
    if not req.model:
        raise BadRequest("model is required")
    if req.max_tokens is None or req.max_tokens <= 0:
        raise BadRequest("max_tokens is required and must be positive")
    if not req.messages:
        raise BadRequest("messages is required")
    tools = native_tools(req.tools)
    call = ChatCall(model=req.model, messages=native_messages(req), stream=req.stream,
                    tools=tools, tool_choice=anthropic_choice(req.tool_choice), think=_think(req), format=_format(req), options=_options(req),
                    keep_alive=req.keep_alive, think_if_capable=True)
    return await chat(request, request.app[STATE], call, AnthropicFraming(req.model))
