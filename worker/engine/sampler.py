"""Per-sequence sampler chains that run in C (llama_sampler_sample), never over the vocab in Python."""

from __future__ import annotations

import llama_cpp as L
import msgspec

from herd.protocol.wire import SamplingParams
from herd.worker.engine.grammar import InvalidFormat, format_grammar

__all__ = ["InvalidFormat", "SamplerChain", "format_grammar"]

_RANDOM_SEED = 0xFFFFFFFF  # LLAMA_DEFAULT_SEED: llama.cpp picks a random seed


def after_thinking_chains(params: SamplingParams, **kwargs) -> tuple[SamplerChain, SamplerChain]:
    """A thinking answer with a `format`: a free chain for the reasoning, and the grammar's
    chain (built now, so a bad format is refused before anything runs) for the content."""
    grammar = SamplerChain(params, **kwargs)
    free = SamplerChain(msgspec.structs.replace(params, format=""), **kwargs)
    # The switch may resample a token from the logits, which a graph-sampled chain lacks.
    free.device_capable = False
    return free, grammar


class SamplerChain:
    def __init__(self, params: SamplingParams, *, n_vocab: int, n_ctx: int,
                 vocab: L.llama_vocab_p | None = None) -> None:
        self.ptr = L.llama_sampler_chain_init(L.llama_sampler_chain_default_params())
        # llama.cpp runs the longest prefix of backend-capable samplers inside the decode graph;
        # grammar and penalties are not capable, and as the first link they would leave nothing.
        self.device_capable = True
        add = lambda s: L.llama_sampler_chain_add(self.ptr, s)  # noqa: E731
        if params.format:
            self.device_capable = False
            grammar = L.llama_sampler_init_grammar(vocab, format_grammar(params.format).encode(),
                                                   b"root")
            if not grammar:  # the binding does not check: a bad grammar comes back as NULL
                self.close()
                raise InvalidFormat("invalid format: the grammar could not be compiled")
            add(grammar)
        # The penalty sampler allocates its window: never more than the context
        last_n = n_ctx if params.repeat_last_n < 0 else min(params.repeat_last_n, n_ctx)
        penalised = (params.repeat_penalty != 1.0 or params.presence_penalty != 0.0
                     or params.frequency_penalty != 0.0)
        if last_n > 0 and penalised:
            self.device_capable = False
            add(L.llama_sampler_init_penalties(n_vocab, last_n, params.repeat_penalty,
                                               params.frequency_penalty, params.presence_penalty))
        if params.temperature <= 0.0:
            add(L.llama_sampler_init_greedy())
            return
        if params.top_k > 0:
            add(L.llama_sampler_init_top_k(params.top_k))
        if 0.0 < params.typical_p < 1.0:
            add(L.llama_sampler_init_typical(params.typical_p, 1))
        if 0.0 < params.top_p < 1.0:
            add(L.llama_sampler_init_top_p(params.top_p, 1))
        if params.min_p > 0.0:
            add(L.llama_sampler_init_min_p(params.min_p, 1))
        add(L.llama_sampler_init_temp(params.temperature))
        seed = _RANDOM_SEED if params.seed < 0 else params.seed & 0xFFFFFFFF
        add(L.llama_sampler_init_dist(seed))

    def sample(self, ctx: L.llama_context_p, batch_index: int) -> int:
        # Applies the chain to the logits at batch_index and accepts the token (penalty history).
        # For a chain attached to the context it picks up what the graph already sampled.
        return L.llama_sampler_sample(self.ptr, ctx, batch_index)

    def sample_on_device(self, ctx: L.llama_context_p, batch_index: int) -> int:
        """For a chain attached with llama_set_sampler: the token the decode graph drew, without
        llama_sampler_sample's look at logits, probabilities and candidates."""
        token = L.llama_get_sampled_token_ith(ctx, batch_index)
        if token < 0:  # only a prefix of the chain ran in the graph: finish it on the CPU
            return self.sample(ctx, batch_index)
        L.llama_sampler_accept(self.ptr, token)
        return token

    def close(self) -> None:
        if self.ptr:
            L.llama_sampler_free(self.ptr)
            self.ptr = None
