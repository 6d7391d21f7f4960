"""POST /api/generate and POST /api/chat: Ollama's own dialect of the native pipelines."""

from __future__ import annotations

from aiohttp import web

from herd.gateway.http.io import decode_body, json_response, utc_now
from herd.gateway.pipeline.chat import ChatCall, chat
from herd.gateway.pipeline.generate import GenerateCall, generate
from herd.gateway.pipeline.relay import DONE_REASONS, NdjsonFraming, Piece
from herd.gateway.state import STATE
from herd.protocol.api import (AssistantMessage, ChatChunk, ChatRequest, DebugChunk, DebugInfo,
                               GenerateChunk, GenerateRequest, Metrics)
from herd.protocol.wire import RequestOutput

routes = web.RouteTableDef()


def _metric_fields(metrics: Metrics | None) -> dict[str, int]:
    if metrics is None:
        return {}
    return {name: getattr(metrics, name) for name in Metrics.__struct_fields__}


def _debug(model: str, images: int = 0):
    """`_debug_render_only`'s answer; Ollama counts the request's images beside the prompt."""
    return lambda prompt: json_response(DebugChunk(model, utc_now(), False,
                                                   DebugInfo(prompt, image_count=images)))


@routes.post("/api/generate")
async def generate_route(request: web.Request) -> web.StreamResponse:
    req = await decode_body(request, GenerateRequest)
    model = req.model
    call = GenerateCall(
        model=model, prompt=req.prompt, stream=req.stream, suffix=req.suffix, images=req.images,
        system=req.system, template=req.template, context=req.context, raw=req.raw,
        think=req.think, format=req.format, options=[req.options], keep_alive=req.keep_alive,
        truncate=req.truncate, shift=req.shift, logprobs=req.logprobs,
        top_logprobs=req.top_logprobs, render_only=req.debug_render_only, return_context=True,
        missing_model="")

    def loaded(reason: str) -> web.Response:
        return json_response(GenerateChunk(model=model, created_at=utc_now(), response="",
                                           done=True, done_reason=reason))

    def make_chunk(piece: Piece, final: RequestOutput | None,
                   metrics: Metrics | None) -> GenerateChunk:
        if final is None:
            return GenerateChunk(model=model, created_at=utc_now(), response=piece.text,
                                 done=False, thinking=piece.thinking, logprobs=piece.logprobs)
        return GenerateChunk(model=model, created_at=utc_now(), response=piece.text, done=True,
                             thinking=piece.thinking,
                             done_reason=DONE_REASONS.get(final.finish, "stop"),
                             context=final.context, logprobs=piece.logprobs,
                             **_metric_fields(metrics))

    return await generate(request, request.app[STATE], call, NdjsonFraming(make_chunk),
                          on_load=loaded, on_render=_debug(model, len(req.images or ())))


@routes.post("/api/chat")
async def chat_route(request: web.Request) -> web.StreamResponse:
    req = await decode_body(request, ChatRequest)
    model = req.model
    call = ChatCall(
        model=model, messages=req.messages, stream=req.stream, tools=req.tools, think=req.think,
        format=req.format, options=[req.options], keep_alive=req.keep_alive,
        truncate=req.truncate, shift=req.shift, logprobs=req.logprobs,
        top_logprobs=req.top_logprobs, render_only=req.debug_render_only, strict_roles=True)

    def loaded(reason: str) -> web.Response:
        return json_response(ChatChunk(model=model, created_at=utc_now(),
                                       message=AssistantMessage("assistant", ""), done=True,
                                       done_reason=reason))

    def make_chunk(piece: Piece, final: RequestOutput | None, metrics: Metrics | None) -> ChatChunk:
        message = AssistantMessage("assistant", piece.text, thinking=piece.thinking or None,
                                   tool_calls=piece.calls)
        if final is None:
            return ChatChunk(model=model, created_at=utc_now(), message=message, done=False,
                             logprobs=piece.logprobs)
        return ChatChunk(model=model, created_at=utc_now(), message=message, done=True,
                         done_reason=DONE_REASONS.get(final.finish, "stop"),
                         logprobs=piece.logprobs, **_metric_fields(metrics))

    return await chat(request, request.app[STATE], call, NdjsonFraming(make_chunk),
                      on_load=loaded,
                      on_render=_debug(model, sum(len(m.images or ()) for m in req.messages)))
