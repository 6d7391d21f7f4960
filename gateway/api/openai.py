"""The OpenAI-compatible endpoints (/v1), translated onto the native machinery like Ollama's."""

from __future__ import annotations

import base64
import random
import time
from typing import Any

import msgspec
import numpy as np
from aiohttp import web

from herd.gateway.errors import BadRequest
from herd.gateway.http.io import SSE, decode_body, json_response, sse
from herd.gateway.pipeline.chat import ChatCall, chat
from herd.gateway.pipeline.embed import embed_texts, normalise
from herd.gateway.pipeline.generate import GenerateCall, generate
from herd.gateway.pipeline.images import image_from_url
from herd.gateway.pipeline.relay import DONE_REASONS, Piece
from herd.gateway.pipeline.tool_calls import new_call_id
from herd.gateway.pipeline.tool_choice import openai_choice
from herd.gateway.pipeline.validate import effort_think, request_keep_alive, resolve_model
from herd.gateway.state import STATE
from herd.gateway.store.models import ModelEntry, model_name_or_400, run_blocking
from herd.protocol.api import Message, Metrics, Options, ToolCall, ToolFunctionCall, merge_options
from herd.protocol.openai import (AssistantOut, ChatChoice, ChatCompletion, ChatCompletionChunk,
                                  ChatCompletionRequest, ChatMessageIn, ChoiceLogprobs,
                                  ChunkChoice, Completion, CompletionChoice, CompletionRequest,
                                  Delta, EmbeddingItem, EmbeddingList, EmbeddingRequest,
                                  EmbeddingUsage, FunctionCallOut, ModelCard, ModelList,
                                  ToolCallIn, ToolCallOut, Usage)
from herd.protocol.wire import RequestOutput

routes = web.RouteTableDef()
_json = msgspec.json.Encoder()


def _usage(metrics: Metrics) -> Usage:
    return Usage(metrics.prompt_eval_count, metrics.eval_count,
                 metrics.prompt_eval_count + metrics.eval_count)


def _stops(value: Any) -> list[str] | None:
    if value is None:
        return None
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        for item in value:
            if not isinstance(item, str):
                raise BadRequest(f"invalid type for 'stop' field: {type(item).__name__}")
        return value
    raise BadRequest(f"invalid type for 'stop' field: {type(value).__name__}")


def _options(req: ChatCompletionRequest | CompletionRequest,
             max_tokens: int | None) -> list[Options | None]:
    """Ollama's translation: temperature and top_p default to 1.0 when absent, overriding the
    model's own defaults; an `options` object (a Herd extension) can set anything, num_ctx too."""
    mapped = Options(
        temperature=1.0 if req.temperature is None else req.temperature,
        top_p=1.0 if not req.top_p else req.top_p,
        seed=req.seed, frequency_penalty=req.frequency_penalty,
        presence_penalty=req.presence_penalty, num_predict=max_tokens, stop=_stops(req.stop))
    return [mapped, req.options]


def _calls_out(calls: list[ToolCall]) -> list[ToolCallOut]:
    """OpenAI's clients expect the arguments as a JSON string, not an object."""
    return [ToolCallOut(call.id or new_call_id(), call.function.index or 0,
                        FunctionCallOut(call.function.name,
                                        _json.encode(call.function.arguments).decode()))
            for call in calls]


def _finish_reason(final: RequestOutput, called: bool) -> str:
    reason = DONE_REASONS.get(final.finish, "stop")
    return "tool_calls" if called and reason == "stop" else reason


def _logprobs(piece: Piece) -> ChoiceLogprobs | None:
    return ChoiceLogprobs(piece.logprobs) if piece.logprobs else None


class SseChatFraming:
    content_type = SSE

    def __init__(self, model: str, include_usage: bool) -> None:
        self.id = f"chatcmpl-{random.randint(0, 998)}"
        self.created = int(time.time())
        self.model = model
        self.include_usage = include_usage
        self.first = True
        self.called = False

    def _chunk(self, delta: Delta, finish: str | None,
               logprobs: ChoiceLogprobs | None = None) -> ChatCompletionChunk:
        return ChatCompletionChunk(self.id, self.created, self.model,
                                   [ChunkChoice(0, delta, finish, logprobs)])

    def _role(self) -> str | None:
        role, self.first = ("assistant" if self.first else None), False
        return role

    def delta(self, piece: Piece) -> bytes:
        if piece.calls:
            self.called = True
            delta = Delta(role=self._role(), tool_calls=_calls_out(piece.calls))
        elif piece.thinking:
            delta = Delta(role=self._role(), reasoning=piece.thinking)
        else:
            delta = Delta(role=self._role(), content=piece.text)
        return sse(self._chunk(delta, None, _logprobs(piece)))

    def end(self, final: RequestOutput, metrics: Metrics) -> bytes:
        out = sse(self._chunk(Delta(), _finish_reason(final, self.called)))
        if self.include_usage:
            out += sse(ChatCompletionChunk(self.id, self.created, self.model, [], _usage(metrics)))
        return out + b"data: [DONE]\n\n"

    def error(self, message: str) -> bytes:
        return sse({"error": {"message": message, "type": "api_error", "param": None, "code": None}})

    def whole(self, piece: Piece, final: RequestOutput, metrics: Metrics) -> ChatCompletion:
        message = AssistantOut("assistant", piece.text,
                               _calls_out(piece.calls) if piece.calls else None, piece.thinking)
        choice = ChatChoice(0, message, _finish_reason(final, bool(piece.calls)), _logprobs(piece))
        return ChatCompletion(self.id, self.created, self.model, [choice], _usage(metrics))


class SseCompletionFraming(SseChatFraming):
    def __init__(self, model: str, include_usage: bool) -> None:
        super().__init__(model, include_usage)
        self.id = f"cmpl-{random.randint(0, 998)}"

    def delta(self, piece: Piece) -> bytes:
        choice = CompletionChoice(piece.text, 0, None, _logprobs(piece))
        return sse(Completion(self.id, self.created, self.model, [choice]))

    def end(self, final: RequestOutput, metrics: Metrics) -> bytes:
        choice = CompletionChoice("", 0, DONE_REASONS.get(final.finish, "stop"))
        out = sse(Completion(self.id, self.created, self.model, [choice]))
        if self.include_usage:
            out += sse(Completion(self.id, self.created, self.model, [], _usage(metrics)))
        return out + b"data: [DONE]\n\n"

    def whole(self, piece: Piece, final: RequestOutput, metrics: Metrics) -> Completion:
        choice = CompletionChoice(piece.text, 0, DONE_REASONS.get(final.finish, "stop"),
                                  _logprobs(piece))
        return Completion(self.id, self.created, self.model, [choice], _usage(metrics))


def _tool_call(call: ToolCallIn) -> ToolCall:
    arguments = call.function.arguments
    if isinstance(arguments, str):
        try:
            arguments = msgspec.json.decode(arguments) if arguments.strip() else {}
        except msgspec.DecodeError:
            raise BadRequest("invalid tool call arguments") from None
    if not isinstance(arguments, dict):
        raise BadRequest("invalid tool call arguments")
    return ToolCall(ToolFunctionCall(call.function.name, arguments), id=call.id or None)


def _parts(message: ChatMessageIn) -> list[tuple[str, list[str] | None]]:
    """One message's pieces, each a native message's text and images: its content string, or
    one per content part; an image part is a message of its own, as in Ollama's
    openai.FromChatRequest."""
    content = message.content
    if content is None:
        if not message.tool_calls:
            raise BadRequest("invalid message content type: <nil>")
        return [("", None)]
    if isinstance(content, str):
        return [(content, None)]
    if not isinstance(content, list):
        raise BadRequest(f"invalid message content type: {type(content).__name__}")
    parts: list[tuple[str, list[str] | None]] = []
    for part in content:
        if not isinstance(part, dict) or part.get("type") not in ("text", "image_url", "input_audio"):
            raise BadRequest("invalid message format")
        if part["type"] == "image_url":
            url = part.get("image_url")
            url = url.get("url") if isinstance(url, dict) else url
            if not isinstance(url, str):
                raise BadRequest("invalid message format")
            parts.append(("", [image_from_url(url)]))
        elif part["type"] == "input_audio":
            raise BadRequest("audio input is not supported by this model")
        else:
            parts.append((str(part.get("text", "")), None))
    return parts


def native_messages(req: ChatCompletionRequest) -> list[Message]:
    """OpenAI messages as native ones, the way Ollama translates them."""
    if not req.messages:
        raise BadRequest("[] is too short - 'messages'")
    messages: list[Message] = []
    names: dict[str, str] = {}  # tool call id → function name, for tool results without a name
    for message in req.messages:
        role = message.role.lower()
        calls = [_tool_call(c) for c in message.tool_calls] if message.tool_calls else None
        for call in calls or []:
            if call.id:
                names[call.id] = call.function.name
        tool_name = None
        if role == "tool":
            tool_name = message.name or names.get(message.tool_call_id or "")
        made = [Message(role, text, images=images, thinking=message.reasoning,
                        tool_name=tool_name, tool_call_id=message.tool_call_id)
                for text, images in _parts(message)]
        if calls:  # several content parts made several messages: the calls go on the last
            made = made or [Message(role, "")]
            made[-1].tool_calls = calls
        messages.extend(made)
    return messages


def _think(req: ChatCompletionRequest) -> bool | str | None:
    """OpenAI's reasoning effort as Ollama's `think`."""
    effort = req.reasoning_effort
    if effort is None and req.reasoning:
        effort = req.reasoning.get("effort")
    return effort_think(effort)


def _response_format(value: dict[str, Any] | None) -> str | dict[str, Any]:
    """As Ollama's openai.FromChatRequest: json_object and json_schema set a format; any other
    type (text, or one Ollama does not know) leaves the answer free."""
    kind = str((value or {}).get("type") or "").strip().lower()
    if kind == "json_object":
        return "json"
    if kind == "json_schema":
        schema = ((value or {}).get("json_schema") or {}).get("schema")
        if isinstance(schema, dict):
            return schema
    return ""


@routes.post("/v1/chat/completions")
async def chat_completions(request: web.Request) -> web.StreamResponse:
    req = await decode_body(request, ChatCompletionRequest)
    call = ChatCall(
        model=req.model, messages=native_messages(req), stream=req.stream, tools=req.tools,
        tool_choice=openai_choice(req.tool_choice),
        think=_think(req), format=_response_format(req.response_format),
        options=_options(req, req.max_completion_tokens or req.max_tokens),
        keep_alive=req.keep_alive, logprobs=req.logprobs,
        top_logprobs=req.top_logprobs)
    framing = SseChatFraming(req.model, bool(req.stream_options and req.stream_options.include_usage))
    return await chat(request, request.app[STATE], call, framing)


@routes.post("/v1/completions")
async def completions(request: web.Request) -> web.StreamResponse:
    req = await decode_body(request, CompletionRequest)
    top = max(req.logprobs or 0, 0)  # Ollama: logprobs N > 0 is top_logprobs N, checked 0-20
    call = GenerateCall(
        model=req.model, prompt=req.prompt, stream=req.stream, suffix=req.suffix or "",
        options=_options(req, req.max_tokens), keep_alive=req.keep_alive,
        logprobs=req.logprobs is not None and req.logprobs > 0, top_logprobs=top,
        split_thinking=False)
    framing = SseCompletionFraming(req.model, bool(req.stream_options and req.stream_options.include_usage))
    return await generate(request, request.app[STATE], call, framing)


@routes.post("/v1/embeddings")
async def embeddings(request: web.Request) -> web.Response:
    state = request.app[STATE]
    req = await decode_body(request, EmbeddingRequest)
    if req.encoding_format not in ("float", "base64"):
        raise BadRequest(f"Invalid value for 'encoding_format' = {req.encoding_format}. "
                         "Supported values: ['float', 'base64'].")
    texts = [req.input] if isinstance(req.input, str) else req.input
    if not texts or not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
        raise BadRequest("invalid input")
    entry = resolve_model(state, req.model)
    vectors, tokens, _ = await embed_texts(
        state, entry, merge_options(entry.params, req.options),
        request_keep_alive(req.keep_alive, state.settings), texts, True)
    vectors = normalise(vectors, req.dimensions)
    data = [EmbeddingItem(base64.b64encode(v.astype("<f4").tobytes()).decode()
                          if req.encoding_format == "base64" else v.tolist(), i)
            for i, v in enumerate(np.asarray(vectors))]
    return json_response(EmbeddingList(data, req.model, EmbeddingUsage(tokens, tokens)))


def _card(entry: ModelEntry, shown: str) -> ModelCard:
    return ModelCard(shown, int(entry.modified_at), entry.name.namespace,
                     context_length=entry.context_length or msgspec.UNSET)


@routes.get("/v1/models")
async def list_models(request: web.Request) -> web.Response:
    entries = await run_blocking(request.app[STATE].store.entries)
    return json_response(ModelList([_card(e, e.name.display) for e in entries]))


@routes.get("/v1/models/{model:.+}")
async def get_model(request: web.Request) -> web.Response:
    shown = request.match_info["model"]
    entry = request.app[STATE].store.resolve(model_name_or_400(shown), shown=shown)
    return json_response(_card(entry, shown))
