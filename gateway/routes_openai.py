"""The OpenAI-compatible endpoints (/v1), translated onto the native machinery like Ollama's."""

from __future__ import annotations

import base64
import random
import time
from typing import Any

import msgspec
import numpy as np
from aiohttp import web

from gateway.errors import BadRequest
from gateway.http_io import decode_body, json_response
from gateway.inference import (DONE_REASONS, format_text, generate, request_keep_alive,
                               sampling_params)
from gateway.routes_embed import embed_texts, normalise
from gateway.routes_generate import jinja_template, require_completion
from gateway.state import STATE, GatewayState
from gateway.store import ModelEntry, model_name_or_400, run_blocking
from protocol.api import Metrics, Options, merge_options
from protocol.openai import (AssistantOut, ChatChoice, ChatCompletion, ChatCompletionChunk,
                             ChatCompletionRequest, ChunkChoice, Completion, CompletionChoice,
                             CompletionRequest, Delta, EmbeddingItem, EmbeddingList,
                             EmbeddingRequest, EmbeddingUsage, ModelCard, ModelList, Usage)
from protocol.wire import ChatTurn, RequestOutput, Submit

routes = web.RouteTableDef()
_json = msgspec.json.Encoder()
SSE = "text/event-stream"


def sse(value: object) -> bytes:
    return b"data: " + _json.encode(value) + b"\n\n"


def _usage(metrics: Metrics) -> Usage:
    return Usage(metrics.prompt_eval_count, metrics.eval_count,
                 metrics.prompt_eval_count + metrics.eval_count)


def _entry(state: GatewayState, model: str) -> ModelEntry:
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


class SseChatFraming:
    content_type = SSE

    def __init__(self, model: str, include_usage: bool) -> None:
        self.id = f"chatcmpl-{random.randint(0, 998)}"
        self.created = int(time.time())
        self.model = model
        self.include_usage = include_usage
        self.first = True

    def _chunk(self, delta: Delta, finish: str | None) -> ChatCompletionChunk:
        return ChatCompletionChunk(self.id, self.created, self.model, [ChunkChoice(0, delta, finish)])

    def delta(self, text: str) -> bytes:
        role, self.first = ("assistant" if self.first else None), False
        return sse(self._chunk(Delta(role=role, content=text), None))

    def end(self, final: RequestOutput, metrics: Metrics) -> bytes:
        out = sse(self._chunk(Delta(), DONE_REASONS.get(final.finish, "stop")))
        if self.include_usage:
            out += sse(ChatCompletionChunk(self.id, self.created, self.model, [], _usage(metrics)))
        return out + b"data: [DONE]\n\n"

    def error(self, message: str) -> bytes:
        return sse({"error": {"message": message, "type": "api_error", "param": None, "code": None}})

    def whole(self, text: str, final: RequestOutput, metrics: Metrics) -> ChatCompletion:
        choice = ChatChoice(0, AssistantOut(content=text), DONE_REASONS.get(final.finish, "stop"))
        return ChatCompletion(self.id, self.created, self.model, [choice], _usage(metrics))


class SseCompletionFraming(SseChatFraming):
    def __init__(self, model: str, include_usage: bool) -> None:
        super().__init__(model, include_usage)
        self.id = f"cmpl-{random.randint(0, 998)}"

    def delta(self, text: str) -> bytes:
        return sse(Completion(self.id, self.created, self.model, [CompletionChoice(text, 0, None)]))

    def end(self, final: RequestOutput, metrics: Metrics) -> bytes:
        choice = CompletionChoice("", 0, DONE_REASONS.get(final.finish, "stop"))
        out = sse(Completion(self.id, self.created, self.model, [choice]))
        if self.include_usage:
            out += sse(Completion(self.id, self.created, self.model, [], _usage(metrics)))
        return out + b"data: [DONE]\n\n"

    def whole(self, text: str, final: RequestOutput, metrics: Metrics) -> Completion:
        choice = CompletionChoice(text, 0, DONE_REASONS.get(final.finish, "stop"))
        return Completion(self.id, self.created, self.model, [choice], _usage(metrics))


def _turns(req: ChatCompletionRequest) -> list[ChatTurn]:
    if not req.messages:
        raise BadRequest("[] is too short - 'messages'")
    turns: list[ChatTurn] = []
    for message in req.messages:
        content = message.content
        if content is None:
            if not message.tool_calls:
                raise BadRequest("invalid message content type: <nil>")
            content = ""
        if isinstance(content, str):
            turns.append(ChatTurn(message.role.lower(), content))
            continue
        if not isinstance(content, list):
            raise BadRequest(f"invalid message content type: {type(content).__name__}")
        for part in content:
            if not isinstance(part, dict) or part.get("type") not in ("text", "image_url", "input_audio"):
                raise BadRequest("invalid message format")
            if part["type"] != "text":
                raise BadRequest("image and audio input are not supported by this model")
            turns.append(ChatTurn(message.role.lower(), str(part.get("text", ""))))
    return turns


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
    entry = _entry(state, req.model)
    require_completion(entry, req.model, "chat")
    turns = _turns(req)
    if entry.system and turns[0].role != "system":
        turns.insert(0, ChatTurn("system", entry.system))
    options = _options(entry, req, req.max_completion_tokens or req.max_tokens)
    submit = Submit(next(state.request_ids), sampling_params(options, _response_format(req.response_format)),
                    messages=turns, template=jinja_template(entry.template))
    framing = SseChatFraming(req.model, bool(req.stream_options and req.stream_options.include_usage))
    return await generate(request, state, entry, options,
                          request_keep_alive(req.keep_alive, state.settings), submit, req.stream,
                          framing)


@routes.post("/v1/completions")
async def completions(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    req = await decode_body(request, CompletionRequest)
    entry = _entry(state, req.model)
    require_completion(entry, req.model, "generate")
    options = _options(entry, req, req.max_tokens)
    turns = ([ChatTurn("system", entry.system)] if entry.system else []) + [ChatTurn("user", req.prompt)]
    submit = Submit(next(state.request_ids), sampling_params(options), messages=turns,
                    template=jinja_template(entry.template))
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
    entry = _entry(state, req.model)
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
