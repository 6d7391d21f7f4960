"""The one native chat pipeline. /api/chat, /v1/chat/completions, /v1/messages and
/v1/responses each translate their request into a `ChatCall` and supply their framing; this
module validates it once, in /api/chat's order, builds the runner's Submit and relays the
answer (as Ollama registers its OpenAI and Anthropic routes in front of the native handler)."""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web

from herd.gateway.pipeline.call import LoadAnswer, NativeCall, RenderAnswer, load_answer, settle
from herd.gateway.pipeline.chat_messages import check_roles, chat_submit, require_tools, tool_parser
from herd.gateway.pipeline.images import check_images
from herd.gateway.pipeline.relay import Framing, load_only, relay, render_only
from herd.gateway.pipeline.tool_choice import AUTO, ToolChoice, apply_tool_choice
from herd.gateway.pipeline.validate import (check_image_limits, check_top_logprobs,
                                            require_completion, resolve_model, think_setting,
                                            unload_requested)
from herd.gateway.state import GatewayState
from herd.gateway.store.models import ModelEntry, model_name_or_400
from herd.protocol.api import Message, Tool


@dataclass(kw_only=True)
class ChatCall(NativeCall):
    """A chat request in native terms, whichever API it arrived through."""

    messages: list[Message]
    tools: list[Tool] | None = None
    tool_choice: ToolChoice = AUTO
    # Dialect rules: the native API refuses unknown roles, /v1 lets them reach the template;
    # Anthropic's clients ask every model to think, and one that cannot just answers.
    strict_roles: bool = False
    think_if_capable: bool = False


def _think(call: ChatCall, entry: ModelEntry) -> str:
    think = call.think
    if call.think_if_capable and think and "thinking" not in entry.capabilities:
        think = None
    return think_setting(think, call.model, entry)


async def chat(request: web.Request, state: GatewayState, call: ChatCall, framing: Framing,
               on_load: LoadAnswer | None = None,
               on_render: RenderAnswer | None = None) -> web.StreamResponse:
    check_top_logprobs(call.top_logprobs)
    entry = resolve_model(state, call.model)
    if not call.messages and on_load is not None and unload_requested(call.keep_alive,
                                                                       state.settings):
        await state.scheduler.unload_model(entry)
        return await load_answer(on_load, "unload")
    require_completion(entry, call.model, "chat")
    tools, format = apply_tool_choice(call.tool_choice, call.tools, call.format)
    require_tools(entry, model_name_or_400(call.model), tools)
    think = _think(call, entry)
    settled = settle(state, entry, call, format)
    keep_alive, spec = settled.keep_alive, settled.spec
    if not call.messages and on_load is not None:
        await load_only(state, entry, spec, keep_alive)
        return await load_answer(on_load, "unload" if keep_alive == 0 else "load")
    if call.strict_roles:
        check_roles(call.messages)
    check_image_limits([image for m in call.messages for image in m.images or []])
    numbered, images = 1, []
    for message in call.messages:
        images.append(await check_images(message.images, entry, numbered))
        numbered += len(images[-1])
    submit = chat_submit(next(state.request_ids), entry, settled.sampling, call.messages, tools,
                         think, images=images, truncate=call.truncate, shift=call.shift,
                         logprobs=call.logprobs or call.top_logprobs > 0,
                         top_logprobs=call.top_logprobs)
    if call.render_only and on_render is not None:
        return on_render(await render_only(state, entry, spec, keep_alive, submit))
    return await relay(request, state, entry, spec, keep_alive, submit, call.stream, framing,
                       tool_parser(tools))
