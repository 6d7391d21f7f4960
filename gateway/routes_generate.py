"""POST /api/generate and POST /api/chat."""

from __future__ import annotations

from aiohttp import web

from gateway.chat_messages import check_roles, chat_submit, require_tools, tool_parser
from gateway.errors import BadRequest, ModelNotFound
from gateway.http_io import decode_body, json_response, utc_now
from gateway.images import check_images
from gateway.inference import (DONE_REASONS, NdjsonFraming, Piece, generate, load_only,
                               format_text, render_only, request_keep_alive, sampling_params,
                               think_setting)
from gateway.state import STATE
from gateway.store import ModelEntry, model_name_or_400
from protocol.api import (AssistantMessage, ChatChunk, ChatRequest, DebugChunk, DebugInfo,
                          GenerateChunk, GenerateRequest, Metrics, merge_options)
from protocol.wire import ChatTurn, RequestOutput, Submit

routes = web.RouteTableDef()


def require_completion(entry: ModelEntry, shown: str, endpoint: str) -> None:
    if "completion" not in entry.capabilities:
        raise BadRequest(f'"{shown}" does not support {endpoint}')


def _metric_fields(metrics: Metrics | None) -> dict[str, int]:
    if metrics is None:
        return {}
    return {name: getattr(metrics, name) for name in Metrics.__struct_fields__}


@routes.post("/api/generate")
async def generate_route(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    req = await decode_body(request, GenerateRequest)
    if not req.model:
        raise ModelNotFound("")
    name = model_name_or_400(req.model)
    entry = state.store.resolve(name, shown=req.model)
    require_completion(entry, req.model, "generate")
    if req.raw and (req.template or req.system or req.context):
        raise BadRequest("raw mode does not support template, system, or context")
    if not 0 <= req.top_logprobs <= 20:
        raise BadRequest("top_logprobs must be between 0 and 20")
    if req.suffix and "insert" not in entry.capabilities:
        raise BadRequest(f"{name.full} does not support insert")
    check_images(req.images, entry)
    think = think_setting(req.think, req.model, entry)
    keep_alive = request_keep_alive(req.keep_alive, state.settings)
    options = merge_options(entry.params, req.options)
    sampling = sampling_params(options, format_text(req.format))
    model = req.model

    if not req.prompt and not req.images:
        await load_only(state, entry, options, keep_alive)
        reason = "unload" if keep_alive == 0 else "load"
        return json_response(GenerateChunk(model=model, created_at=utc_now(), response="",
                                           done=True, done_reason=reason))

    submit = Submit(next(state.request_ids), sampling, context=req.context or [],
                    truncate=req.truncate, shift=req.shift,
                    logprobs=req.logprobs or req.top_logprobs > 0, top_logprobs=req.top_logprobs)
    if req.raw:
        submit.raw_prompt = req.prompt
    else:
        system = req.system if req.system is not None else entry.system
        submit.messages = ([ChatTurn("system", system)] if system else []) + [ChatTurn("user", req.prompt)]
        submit.return_context = True
        # Go or Jinja; "" leaves the runner the GGUF's own or the family's built-in one
        submit.template = req.template or entry.template or ""
        submit.suffix = req.suffix
        submit.think, submit.split_thinking = think, "thinking" in entry.capabilities
    if req.debug_render_only:
        prompt = await render_only(state, entry, options, keep_alive, submit)
        return json_response(DebugChunk(model, utc_now(), False, DebugInfo(prompt)))

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

    return await generate(request, state, entry, options, keep_alive, submit, req.stream,
                          NdjsonFraming(make_chunk))


@routes.post("/api/chat")
async def chat_route(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    req = await decode_body(request, ChatRequest)
    if not req.model:
        raise BadRequest("model is required")
    name = model_name_or_400(req.model)
    entry = state.store.resolve(name, shown=req.model)
    if not 0 <= req.top_logprobs <= 20:
        raise BadRequest("top_logprobs must be between 0 and 20")
    require_completion(entry, req.model, "chat")
    require_tools(entry, name, req.tools)
    think = think_setting(req.think, req.model, entry)
    keep_alive = request_keep_alive(req.keep_alive, state.settings)
    options = merge_options(entry.params, req.options)
    sampling = sampling_params(options, format_text(req.format))
    model = req.model

    if not req.messages:
        await load_only(state, entry, options, keep_alive)
        reason = "unload" if keep_alive == 0 else "load"
        return json_response(ChatChunk(model=model, created_at=utc_now(),
                                       message=AssistantMessage("assistant", ""), done=True,
                                       done_reason=reason))

    check_roles(req.messages)
    for message in req.messages:
        check_images(message.images, entry)
    submit = chat_submit(next(state.request_ids), entry, sampling, req.messages, req.tools, think,
                         truncate=req.truncate, shift=req.shift,
                         logprobs=req.logprobs or req.top_logprobs > 0,
                         top_logprobs=req.top_logprobs)
    if req.debug_render_only:
        prompt = await render_only(state, entry, options, keep_alive, submit)
        return json_response(DebugChunk(model, utc_now(), False, DebugInfo(prompt)))

    def make_chunk(piece: Piece, final: RequestOutput | None, metrics: Metrics | None) -> ChatChunk:
        message = AssistantMessage("assistant", piece.text, thinking=piece.thinking or None,
                                   tool_calls=piece.calls)
        if final is None:
            return ChatChunk(model=model, created_at=utc_now(), message=message, done=False,
                             logprobs=piece.logprobs)
        return ChatChunk(model=model, created_at=utc_now(), message=message, done=True,
                         done_reason=DONE_REASONS.get(final.finish, "stop"),
                         logprobs=piece.logprobs, **_metric_fields(metrics))

    return await generate(request, state, entry, options, keep_alive, submit, req.stream,
                          NdjsonFraming(make_chunk), tool_parser(req.tools))

