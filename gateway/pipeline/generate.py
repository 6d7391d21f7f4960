"""The one native completion pipeline behind /api/generate and /v1/completions: a prompt (raw,
or under the model's template with its system message), validated once in /api/generate's
order, then relayed through the dialect's framing."""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web

from herd.gateway.errors import BadRequest
from herd.gateway.pipeline.call import LoadAnswer, NativeCall, RenderAnswer, load_answer, settle
from herd.gateway.pipeline.chat_messages import chat_turns
from herd.gateway.pipeline.images import check_images
from herd.gateway.pipeline.relay import Framing, load_only, relay, render_only
from herd.gateway.pipeline.validate import (check_image_limits, check_top_logprobs,
                                            require_completion, resolve_model, think_setting,
                                            unload_requested)
from herd.gateway.state import GatewayState
from herd.gateway.store.models import model_name_or_400
from herd.protocol.wire import ChatTurn, Submit


@dataclass(kw_only=True)
class GenerateCall(NativeCall):
    """A completion request in native terms, whichever API it arrived through."""

    prompt: str
    suffix: str = ""
    images: list[str] | None = None
    system: str | None = None  # None: the model's own SYSTEM
    template: str | None = None  # None: the model's own TEMPLATE
    context: list[int] | None = None
    raw: bool = False
    return_context: bool = False  # the native API hands the tokens back as `context`
    split_thinking: bool = True  # /v1/completions has no field for reasoning: it stays text
    missing_model: str = "model is required"  # "" → Ollama's 404 for /api/generate


async def generate(request: web.Request, state: GatewayState, call: GenerateCall,
                   framing: Framing, on_load: LoadAnswer | None = None,
                   on_render: RenderAnswer | None = None) -> web.StreamResponse:
    check_top_logprobs(call.top_logprobs)
    entry = resolve_model(state, call.model, call.missing_model)
    if not call.prompt and on_load is not None and unload_requested(call.keep_alive,
                                                                     state.settings):
        await state.scheduler.unload_model(entry)
        return await load_answer(on_load, "unload")
    require_completion(entry, call.model, "generate")
    if call.raw and (call.template or call.system or call.context):
        raise BadRequest("raw mode does not support template, system, or context")
    if call.suffix and "insert" not in entry.capabilities:
        raise BadRequest(f"{model_name_or_400(call.model).full} does not support insert")
    check_image_limits(call.images or [])
    images = await check_images(call.images, entry)
    think = think_setting(call.think, call.model, entry)
    settled = settle(state, entry, call, call.format)
    keep_alive, spec = settled.keep_alive, settled.spec
    if not call.prompt and not call.images and on_load is not None:
        await load_only(state, entry, spec, keep_alive)
        return await load_answer(on_load, "unload" if keep_alive == 0 else "load")

    submit = Submit(next(state.request_ids), settled.sampling, context=call.context or [],
                    truncate=call.truncate, shift=call.shift,
                    logprobs=call.logprobs or call.top_logprobs > 0,
                    top_logprobs=call.top_logprobs)
    if call.raw:
        submit.raw_prompt = call.prompt
        submit.images = images
    else:
        # As Ollama's GenerateHandler: an empty system is no system, so the model's SYSTEM
        # applies; the model's MESSAGE layers follow it unless the prompt continues a context.
        system = call.system or entry.system
        submit.messages = ([ChatTurn("system", system)] if system else []) + (
            chat_turns(entry.messages, None) if call.context is None else []) + [
            ChatTurn("user", call.prompt, images=images)]
        submit.return_context = call.return_context
        # Go or Jinja; "" leaves the runner the GGUF's own or the family's built-in one
        submit.template = call.template or entry.template or ""
        submit.suffix = call.suffix
        submit.think = think
        submit.split_thinking = call.split_thinking and "thinking" in entry.capabilities
    if call.render_only and on_render is not None:
        return on_render(await render_only(state, entry, spec, keep_alive, submit))
    return await relay(request, state, entry, spec, keep_alive, submit, call.stream, framing)
