"""What the chat and completion pipelines share: the request fields every dialect fills in,
the settling of keep-alive, options, sampling and runner spec, and the answers a dialect gives
to a bare load or a render-only request."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import msgspec
from aiohttp import web

from herd.gateway.pipeline.validate import (check_options, format_text, request_keep_alive,
                                            sampling_params)
from herd.gateway.state import GatewayState
from herd.gateway.store.models import ModelEntry
from herd.protocol.api import KeepAlive, Options, merge_options
from herd.protocol.wire import RunnerSpec, SamplingParams

# What an empty request answers (load, or unload with keep_alive 0): a dialect's body.
LoadAnswer = Callable[[str], Awaitable[web.StreamResponse] | web.StreamResponse]
# The rendered prompt for `_debug_render_only`, as the dialect shows it.
RenderAnswer = Callable[[str], web.StreamResponse]


@dataclass(kw_only=True)
class NativeCall:
    """The fields a generation has whichever API it arrived through."""

    model: str
    stream: bool = True
    think: bool | str | None = None
    format: str | dict[str, Any] | None = None
    # Layered over the model's own parameters, later ones winning key by key.
    options: list[Options | None] = field(default_factory=list)
    keep_alive: KeepAlive = None
    truncate: bool = True
    shift: bool = True
    logprobs: bool = False
    top_logprobs: int = 0
    render_only: bool = False


DRAFT_DEFAULT = 4


@dataclass
class Settled:
    keep_alive: int
    sampling: SamplingParams
    spec: RunnerSpec


def settle(state: GatewayState, entry: ModelEntry, call: NativeCall,
           format: str | dict[str, Any] | None) -> Settled:
    """Keep-alive, options over the model's parameters (range-checked), sampling and the
    runner spec they select."""
    keep_alive = request_keep_alive(call.keep_alive, state.settings)
    options = merge_options(entry.params, *call.options)
    check_options(options)
    sampling = sampling_params(options, format_text(format))
    if options.draft_num_predict is None:
        sampling = default_drafting(sampling, entry)
    return Settled(keep_alive, sampling, state.scheduler.spec_for(entry, options))


def default_drafting(sampling: SamplingParams, entry: ModelEntry) -> SamplingParams:
    """Drafting where neither the request nor the model's parameters say. A model with a draft
    model: Ollama's four drafted tokens per step. Otherwise prompt lookup where it pays (-1)
    for an answer sampled without a seed, off for the rest. llama.cpp's logits are not
    bit-identical across batch shapes, and -1 decides by measured step times, so drafts could
    change a greedy or seeded answer from one run to the next; a random answer has nothing to
    reproduce, and exact-match verification draws it from the same distribution (through HTTP:
    gemma3 270M 0.99-1.84x, SmolLM2 0.92-1.11x, bench/RESULTS.md)."""
    if entry.draft:
        return msgspec.structs.replace(sampling, draft_num_predict=DRAFT_DEFAULT)
    if sampling.temperature > 0 and sampling.seed < 0:
        return msgspec.structs.replace(sampling, draft_num_predict=-1)
    return sampling


async def load_answer(on_load: LoadAnswer, reason: str) -> web.StreamResponse:
    answer = on_load(reason)
    return answer if isinstance(answer, web.StreamResponse) else await answer
