"""The OpenAI-compatible endpoints (/v1), translated onto the native machinery like Ollama's."""

from __future__ import annotations

import base64
import random
import time
from typing import Any

import msgspec
import numpy as np
from aiohttp import web

from gateway.chat_messages import chat_submit, require_tools, tool_parser
from gateway.errors import BadRequest
from gateway.http_io import decode_body, json_response
from gateway.inference import (DONE_REASONS, Piece, format_text, generate, request_keep_alive,
                               sampling_params, think_setting)
from gateway.routes_embed import embed_texts, normalise
from gateway.routes_generate import require_completion
from gateway.state import STATE, GatewayState
from gateway.store import ModelEntry, model_name_or_400, run_blocking
from gateway.tool_calls import new_call_id
from protocol.api import Message, Metrics, Options, ToolCall, ToolFunctionCall, merge_options
from protocol.openai import (AssistantOut, ChatChoice, ChatCompletion, ChatCompletionChunk,
                             ChatCompletionRequest, ChatMessageIn, ChoiceLogprobs, ChunkChoice,
                             Completion,
                             CompletionChoice, CompletionRequest, Delta, EmbeddingItem,
                             EmbeddingList, EmbeddingRequest, EmbeddingUsage, FunctionCallOut,
                             ModelCard, ModelList, ToolCallIn, ToolCallOut, Usage)
from protocol.wire import ChatTurn, RequestOutput, Submit

routes = web.RouteTableDef()
_json = msgspec.json.Encoder()
SSE = "text/event-stream"


def sse(value: object) -> bytes:
    return b"data: " + _json.encode(value) + b"\n\n"


def _usage(metrics: Metrics) -> Usage:
    return Usage(metrics.prompt_eval_count, metrics.eval_count,
                 metrics.prompt_eval_count + metrics.eval_count)


def model_entry(state: GatewayState, model: str) -> ModelEntry:
    if not model:
        raise BadRequest("model is required")
    return state.store.resolve(model_name_or_400(model), shown=model)


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


def _options(entry: ModelEntry, req: ChatCompletionRequest | CompletionRequest,
             max_tokens: int | None) -> Options:
    # Ollama's translation: temperature and top_p default to 1.0 when absent, overriding the
    # model's own defaults; an `options` object (a Herd extension) can set anything, num_ctx too.
    mapped = Options(
        temperature=1.0 if req.temperature is None else req.temperature,
        top_p=1.0 if not req.top_p else req.top_p,
        seed=req.seed, frequency_penalty=req.frequency_penalty,
        presence_penalty=req.presence_penalty, num_predict=max_tokens, stop=_stops(req.stop))
    return merge_options(entry.params, mapped, req.options)


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


def _parts(message: ChatMessageIn) -> list[str]:
    """The texts of one message: its content string, or one per content part."""
    content = message.content
    if content is None:
        if not message.tool_calls:
            raise BadRequest("invalid message content type: <nil>")
        return [""]
    if isinstance(content, str):
        return [content]
    if not isinstance(content, list):
        raise BadRequest(f"invalid message content type: {type(content).__name__}")
    texts = []
    for part in content:
        if not isinstance(part, dict) or part.get("type") not in ("text", "image_url", "input_audio"):
            raise BadRequest("invalid message format")
        if part["type"] != "text":
            raise BadRequest("image and audio input are not supported by this model")
        texts.append(str(part.get("text", "")))
    return texts


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
        made = [Message(role, text, thinking=message.reasoning, tool_name=tool_name,
                        tool_call_id=message.tool_call_id) for text in _parts(message)]
        if calls:  # several content parts made several messages: the calls go on the last
            made = made or [Message(role, "")]
            made[-1].tool_calls = calls
        messages.extend(made)
    return messages


_EFFORTS = {"none": False, "minimal": "low", "low": "low", "medium": "medium", "high": "high",
            "max": "max", "xhigh": "max", "ultra": "max"}


def _think(req: ChatCompletionRequest) -> bool | str | None:
    """OpenAI's reasoning effort as Ollama's `think`."""
    effort = req.reasoning_effort
    if effort is None and req.reasoning:
        effort = req.reasoning.get("effort")
    return effort_think(effort)


def effort_think(effort: Any) -> bool | str | None:
    """A reasoning effort as Ollama's `think`; shared with /v1/responses."""
    if effort is None:
        return None
    if not isinstance(effort, str) or effort not in _EFFORTS:
        raise BadRequest(f"invalid reasoning value: {effort!r}")
    return _EFFORTS[effort]


def _response_format(value: dict[str, Any] | None) -> str:
    if not value or value.get("type") == "text":
        return ""
    if value.get("type") == "json_object":
        return "json"
    if value.get("type") == "json_schema":
        schema = (value.get("json_schema") or {}).get("schema")
        if isinstance(schema, dict):
            return format_text(schema)
    raise BadRequest("invalid response_format")


@routes.post("/v1/chat/completions")
async def chat_completions(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    req = await decode_body(request, ChatCompletionRequest)
    entry = model_entry(state, req.model)
    require_completion(entry, req.model, "chat")
    require_tools(entry, model_name_or_400(req.model), req.tools)
    think = think_setting(_think(req), req.model, entry)
    options = _options(entry, req, req.max_completion_tokens or req.max_tokens)
    submit = chat_submit(next(state.request_ids), entry,
                         sampling_params(options, _response_format(req.response_format)),
                         native_messages(req), req.tools, think,
                         logprobs=req.logprobs or req.top_logprobs > 0,
                         top_logprobs=min(max(req.top_logprobs, 0), 20))
    framing = SseChatFraming(req.model, bool(req.stream_options and req.stream_options.include_usage))
    return await generate(request, state, entry, options,
                          request_keep_alive(req.keep_alive, state.settings), submit, req.stream,
                          framing, tool_parser(req.tools))


@routes.post("/v1/completions")
async def completions(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    req = await decode_body(request, CompletionRequest)
    entry = model_entry(state, req.model)
    require_completion(entry, req.model, "generate")
    options = _options(entry, req, req.max_tokens)
    if req.suffix and "insert" not in entry.capabilities:
        raise BadRequest(f"{model_name_or_400(req.model).full} does not support insert")
    turns = ([ChatTurn("system", entry.system)] if entry.system else []) + [ChatTurn("user", req.prompt)]
    top = min(max(req.logprobs or 0, 0), 20)
    submit = Submit(next(state.request_ids), sampling_params(options), messages=turns,
                    template=entry.template or "", suffix=req.suffix or "",
                    logprobs=req.logprobs is not None and req.logprobs > 0, top_logprobs=top)
    framing = SseCompletionFraming(req.model, bool(req.stream_options and req.stream_options.include_usage))
    return await generate(request, state, entry, options,
                          request_keep_alive(req.keep_alive, state.settings), submit, req.stream,
                          framing)


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
    entry = model_entry(state, req.model)
    vectors, tokens, _ = await embed_texts(
        state, entry, merge_options(entry.params, req.options),
        request_keep_alive(req.keep_alive, state.settings), texts, True)
    vectors = normalise(vectors, req.dimensions)
    data = [EmbeddingItem(base64.b64encode(v.astype("<f4").tobytes()).decode()
                          if req.encoding_format == "base64" else v.tolist(), i)
            for i, v in enumerate(np.asarray(vectors))]
    return json_response(EmbeddingList(data, req.model, EmbeddingUsage(tokens, tokens)))


def _card(entry: ModelEntry, shown: str) -> ModelCard:
    return ModelCard(shown, int(entry.modified_at), entry.name.namespace)


@routes.get("/v1/models")
async def list_models(request: web.Request) -> web.Response:
    entries = await run_blocking(request.app[STATE].store.entries)
    return json_response(ModelList([_card(e, e.name.display) for e in entries]))


@routes.get("/v1/models/{model:.+}")
async def get_model(request: web.Request) -> web.Response:
    shown = request.match_info["model"]
    entry = request.app[STATE].store.resolve(model_name_or_400(shown), shown=shown)
    return json_response(_card(entry, shown))
