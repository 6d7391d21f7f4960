"""POST /v1/responses: OpenAI's Responses API translated onto the native chat machinery,
stateless as newest Ollama serves it (nothing is stored, so `previous_response_id` is ignored).

Input items become native messages, flat function tools become native tools, and the request
runs through the same `generate()` as /api/chat, /v1/chat/completions and /v1/messages;
`ResponsesFraming` writes the answer as one response object or as the API's named, numbered
server-sent events. Errors get OpenAI's envelope from the one error middleware."""

from __future__ import annotations

import secrets
import time
from typing import Any

import msgspec
from aiohttp import web

from herd.gateway.errors import BadRequest
from herd.gateway.http.io import SSE, decode_body
from herd.gateway.pipeline.chat import ChatCall, chat
from herd.gateway.pipeline.images import image_from_url
from herd.gateway.pipeline.tool_choice import openai_choice
from herd.gateway.pipeline.relay import DONE_REASONS, Piece
from herd.gateway.pipeline.tool_calls import new_call_id
from herd.gateway.pipeline.validate import effort_think
from herd.gateway.state import STATE
from herd.protocol.api import Message, Metrics, Options, Tool, ToolCall, ToolFunctionCall
from herd.protocol.responses import (ArgumentsDelta, ArgumentsDone, ContentPartAdded, ContentPartDone,
                                ContentPartIn, ErrorEvent, FunctionCallItem, FunctionToolIn,
                                IncompleteDetails, MessageItem, OutputItem,
                                OutputItemAdded, OutputItemDone, OutputText, OutputTextDelta,
                                OutputTextDone, ReasoningItem, Response, ResponseCompleted,
                                ResponseCreated, ResponseInProgress,
                                ResponsesRequest, SummaryPartAdded, SummaryPartDone, SummaryText,
                                SummaryTextDelta, SummaryTextDone, Usage)
from herd.protocol.wire import RequestOutput

routes = web.RouteTableDef()
_json = msgspec.json.Encoder()


def event(value: msgspec.Struct) -> bytes:
    """One server-sent event named after its `type`: the SDKs dispatch on either."""
    name = type(value).__struct_config__.tag
    return b"event: " + str(name).encode() + b"\ndata: " + _json.encode(value) + b"\n\n"


def _item_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(12)}"


# -- request → native --------------------------------------------------------------------------

def _content_of(content: str | list[ContentPartIn] | None) -> tuple[str, list[str]]:
    """A message's text and its images (Ollama's responses.go: an input_image's data: URI;
    one without a URL is skipped); files and audio are refused."""
    if content is None:
        return "", []
    if isinstance(content, str):
        return content, []
    texts, images = [], []
    for part in content:
        if part.type in ("input_text", "output_text", "text", "summary_text", "reasoning_text"):
            texts.append(part.text)
        elif part.type == "input_image":
            if part.image_url:
                images.append(image_from_url(part.image_url))
        elif part.type in ("input_file", "input_audio"):
            raise BadRequest(f"{part.type} is not supported: Herd's models take text and images")
        else:
            raise BadRequest(f"unknown content type: {part.type!r}")
    return "".join(texts), images


def _text_of(content: str | list[ContentPartIn] | None) -> str:
    return _content_of(content)[0]


def _arguments(text: str) -> dict:
    try:
        arguments = msgspec.json.decode(text) if text.strip() else {}
    except msgspec.DecodeError:
        raise BadRequest("invalid function_call arguments: not JSON") from None
    if not isinstance(arguments, dict):
        raise BadRequest("invalid function_call arguments: not a JSON object")
    return arguments


def native_messages(req: ResponsesRequest) -> list[Message]:
    """The instructions and input as native messages, the way Ollama translates them: function
    calls join the assistant turn before them, each output becomes a `tool` message, and a
    reasoning item handed back becomes the next assistant turn's thinking."""
    messages: list[Message] = []
    if req.instructions:
        messages.append(Message("system", req.instructions))
    if isinstance(req.input, str):
        return messages + [Message("user", req.input)]
    names: dict[str, str] = {}  # call_id → function name: templates may show a result's name
    thinking = ""  # from a reasoning item, waiting for the assistant turn it belongs to
    for item in req.input:
        kind = item.type or ("message" if item.role else "")
        if kind == "message":
            role = item.role.lower()
            if role == "developer":  # OpenAI's newer name for system instructions
                role = "system"
            text, images = _content_of(item.content)
            message = Message(role, text, images=images or None)
            if role == "assistant" and thinking:
                message.thinking, thinking = thinking, ""
            messages.append(message)
        elif kind == "function_call":
            if not item.name:
                raise BadRequest("function_call items need a 'name'")
            call = ToolCall(ToolFunctionCall(item.name, _arguments(item.arguments)),
                            id=item.call_id or None)
            names[item.call_id] = item.name
            last = messages[-1] if messages else None
            if last is None or last.role != "assistant":
                last = Message("assistant", "")
                messages.append(last)
            last.tool_calls = [*(last.tool_calls or []), call]
            if thinking:
                last.thinking, thinking = thinking, ""
        elif kind == "function_call_output":
            messages.append(Message("tool", _text_of(item.output),
                                    tool_name=names.get(item.call_id),
                                    tool_call_id=item.call_id or None))
        elif kind == "reasoning":
            thinking = _text_of(item.summary) or item.encrypted_content or ""
        elif not kind:
            raise BadRequest("input item missing required 'type' field")
        else:
            raise BadRequest(f"unknown input item type: {kind!r}")
    if thinking:
        messages.append(Message("assistant", "", thinking=thinking))
    return messages


def native_tools(tools: list[FunctionToolIn] | None) -> list[Tool] | None:
    out = []
    for tool in tools or []:
        if tool.type != "function":
            # OpenAI's hosted tools (web_search, file_search, ...) run on OpenAI's servers;
            # Herd has nothing to run them with, so the model is not offered them.
            continue
        if not tool.name:
            raise BadRequest("function tools need a 'name'")
        out.append(Tool({"name": tool.name, "description": tool.description or "",
                         "parameters": tool.parameters or {"type": "object", "properties": {}}}))
    return out or None


def _format(req: ResponsesRequest) -> str | dict[str, Any]:
    fmt = req.text.format if req.text else None
    if fmt is None or fmt.type == "text":
        return ""
    if fmt.type == "json_object":
        return "json"
    if fmt.type == "json_schema" and isinstance(fmt.schema, dict):
        return fmt.schema
    raise BadRequest('text.format must be {"type": "text"}, {"type": "json_object"} or '
                     '{"type": "json_schema", "schema": {...}}')


def _options(req: ResponsesRequest) -> list[Options | None]:
    # Ollama's translation: temperature defaults to 1.0 (OpenAI's default, overriding the
    # model's), top_p only when sent; `options` (a Herd extension) can set anything, num_ctx too.
    mapped = Options(temperature=1.0 if req.temperature is None else req.temperature,
                     top_p=req.top_p, num_predict=req.max_output_tokens)
    return [mapped, req.options]


# -- native → response ---------------------------------------------------------------------

def _usage(metrics: Metrics) -> Usage:
    return Usage(metrics.prompt_eval_count, metrics.eval_count,
                 metrics.prompt_eval_count + metrics.eval_count)


def _call_item(call: ToolCall, status: str) -> FunctionCallItem:
    """OpenAI's clients expect the arguments as a JSON string, not an object."""
    return FunctionCallItem(_item_id("fc"), call.id or new_call_id(), call.function.name,
                            _json.encode(call.function.arguments).decode(), status)


def _status(final: RequestOutput) -> str:
    """A response cut by max_output_tokens is "incomplete", as OpenAI reports it."""
    return "incomplete" if DONE_REASONS.get(final.finish) == "length" else "completed"


class ResponsesFraming:
    """One answer as a response object, or streamed as its events: response.created and
    .in_progress, then per output item (reasoning, message, function call) its added, deltas
    and done events, then response.completed carrying the whole response.

    A response cut by max_output_tokens has status "incomplete" (and incomplete_details), as
    OpenAI gives it, but its stream still ends with response.completed, as Ollama's always does:
    the openai SDK's `stream.get_final_response()` (2.x) knows no other terminal event and
    raises after a response.incomplete, so a program written for Ollama would break here."""

    content_type = SSE

    def __init__(self, req: ResponsesRequest) -> None:
        self.req = req
        self.id = _item_id("resp")
        self.created_at = int(time.time())
        self.seq = 0
        self.started = False
        self.output: list[OutputItem] = []  # items finished so far, for the final response
        self.open: ReasoningItem | MessageItem | None = None  # the item being streamed
        self.open_text = ""  # its text so far

    def response(self, status: str, output: list[OutputItem], usage: Usage | None = None,
                 incomplete: IncompleteDetails | None = None) -> Response:
        req = self.req
        return Response(self.id, self.created_at, status, req.model, output, usage, incomplete,
                        instructions=req.instructions, max_output_tokens=req.max_output_tokens,
                        temperature=1.0 if req.temperature is None else req.temperature,
                        top_p=req.top_p, tools=req.tools or [], text=req.text,
                        reasoning=req.reasoning,
                        tool_choice="auto" if req.tool_choice is None else req.tool_choice)

    def _n(self) -> int:
        self.seq += 1
        return self.seq - 1

    def _start(self) -> bytes:
        if self.started:
            return b""
        self.started = True
        return (event(ResponseCreated(self._n(), self.response("in_progress", [])))
                + event(ResponseInProgress(self._n(), self.response("in_progress", []))))

    def _close(self, status: str = "completed") -> bytes:
        item, text = self.open, self.open_text
        if item is None:
            return b""
        self.open, self.open_text = None, ""
        index = len(self.output)
        item.status = status
        if isinstance(item, ReasoningItem):
            part = SummaryText(text)
            item.summary = [part]
            out = (event(SummaryTextDone(self._n(), item.id, index, 0, text))
                   + event(SummaryPartDone(self._n(), item.id, index, 0, part)))
        else:
            part = OutputText(text)
            item.content = [part]
            out = (event(OutputTextDone(self._n(), item.id, index, 0, text))
                   + event(ContentPartDone(self._n(), item.id, index, 0, part)))
        self.output.append(item)
        return out + event(OutputItemDone(self._n(), index, item))

    def _open(self, item: ReasoningItem | MessageItem) -> bytes:
        out = self._close()
        self.open = item
        index = len(self.output)
        out += event(OutputItemAdded(self._n(), index, item))
        if isinstance(item, ReasoningItem):
            return out + event(SummaryPartAdded(self._n(), item.id, index, 0, SummaryText("")))
        return out + event(ContentPartAdded(self._n(), item.id, index, 0, OutputText("")))

    def delta(self, piece: Piece) -> bytes:
        out = self._start()
        if piece.thinking:
            if not isinstance(self.open, ReasoningItem):
                out += self._open(ReasoningItem(_item_id("rs"), [], "in_progress"))
            index = len(self.output)  # of the open item: finished ones come before it
            self.open_text += piece.thinking
            out += event(SummaryTextDelta(self._n(), self.open.id, index, 0, piece.thinking))
        if piece.text:
            if not isinstance(self.open, MessageItem):
                out += self._open(MessageItem(_item_id("msg"), "in_progress", "assistant", []))
            index = len(self.output)
            self.open_text += piece.text
            out += event(OutputTextDelta(self._n(), self.open.id, index, 0, piece.text))
        for call in piece.calls or []:
            # A call is parsed whole, so its arguments go out as one delta.
            out += self._close()
            index = len(self.output)
            item = _call_item(call, "in_progress")
            out += event(OutputItemAdded(self._n(), index,
                                         FunctionCallItem(item.id, item.call_id, item.name, "",
                                                          "in_progress")))
            out += event(ArgumentsDelta(self._n(), item.id, index, item.arguments))
            out += event(ArgumentsDone(self._n(), item.id, index, item.name, item.arguments))
            item.status = "completed"
            self.output.append(item)
            out += event(OutputItemDone(self._n(), index, item))
        return out

    def end(self, final: RequestOutput, metrics: Metrics) -> bytes:
        status = _status(final)
        out = self._start() + self._close(status)
        return out + event(ResponseCompleted(self._n(),
                                             self._finished(status, self.output, metrics)))

    def _finished(self, status: str, output: list[OutputItem], metrics: Metrics) -> Response:
        """The whole response at its end: an incomplete one says max_output_tokens cut it."""
        return self.response(status, output, _usage(metrics),
                             IncompleteDetails("max_output_tokens") if status == "incomplete"
                             else None)

    def error(self, message: str) -> bytes:
        # The status is already 200: the stream reports a late failure as an error event.
        return self._close("incomplete") + event(ErrorEvent(self._n(), message))

    def whole(self, piece: Piece, final: RequestOutput, metrics: Metrics) -> Response:
        status = _status(final)
        output: list[OutputItem] = []
        if piece.thinking:
            output.append(ReasoningItem(_item_id("rs"), [SummaryText(piece.thinking)], status))
        if piece.text or not piece.calls:  # an empty answer is still one (empty) message
            output.append(MessageItem(_item_id("msg"), status, "assistant",
                                      [OutputText(piece.text)]))
        output.extend(_call_item(call, "completed") for call in piece.calls or [])
        return self._finished(status, output, metrics)


@routes.post("/v1/responses")
async def responses(request: web.Request) -> web.StreamResponse:
    req = await decode_body(request, ResponsesRequest)
    # previous_response_id and conversation are ignored, as Ollama's openai/responses.go
    # does: nothing is stored, so the client's `input` is the whole conversation.
    messages = native_messages(req)
    if req.model and not any(m.role != "system" for m in messages):
        raise BadRequest("input is required")
    call = ChatCall(model=req.model, messages=messages, stream=req.stream,
                    tools=native_tools(req.tools), tool_choice=openai_choice(req.tool_choice),
                    think=effort_think(req.reasoning.effort if req.reasoning else None),
                    format=_format(req), options=_options(req), keep_alive=req.keep_alive)
    return await chat(request, request.app[STATE], call, ResponsesFraming(req))
