"""A request's state in the engine (Sequence) and the llama.cpp sequence id it holds (Slot)."""

from __future__ import annotations

from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from herd.protocol.wire import Submit, TokenLogprob
from herd.worker.engine.sampler import SamplerChain
from herd.worker.engine.textstream import TextStream
from herd.worker.engine.thinking import ThinkingSplitter
from herd.worker.engine.vision.prompt import ImageSpan, VisionPrompt

if TYPE_CHECKING:
    from herd.worker.engine.llama import LlamaContext, LlamaModel
    from herd.worker.engine.drafting.speculative import Speculation


@dataclass(eq=False)
class Slot:
    """One llama.cpp sequence id; `tokens` mirrors its KV cells so a later prompt can reuse them
    (a token id, or ("img", image hash, i) for an image's cells)."""

    seq_id: int
    tokens: list = field(default_factory=list)
    busy: bool = False


@dataclass(eq=False)
class Sequence:
    client: bytes
    req: Submit
    prompt: list  # KV cell keys: token ids, and ("img", hash, i) where images sit
    stream: TextStream
    chain: SamplerChain
    t_submit: int
    slot: Slot | None = None
    next_token: int = -1  # sampled, not yet decoded into the KV cache
    generated: int = 0
    generated_tokens: list[int] = field(default_factory=list)
    t_admit: int = 0
    t_first: int = 0
    batch_index: int = -1
    on_device: bool = False  # its chain runs inside llama_decode (llama_set_sampler)
    logprobs: list[TokenLogprob] = field(default_factory=list)  # sampled, not yet sent
    thinker: ThinkingSplitter | None = None
    # A `format` on a thinking answer: the grammar's chain, waiting for the block to close.
    grammar: SamplerChain | None = None
    lead: bytes = b""  # the answer's first bytes, while it may still open a thinking block
    shifted_after: int = -1  # ≥ 0 once the context shifted: cells past this were moved
    spans: list[ImageSpan] = field(default_factory=list)  # its prompt's images
    encoding: Future[VisionPrompt] | None = None  # the projector's thread is preparing it
    encode_ns: int = 0  # reading and encoding its images: part of the prompt's time
    spec: Speculation | None = None  # its prompt-lookup drafting, from its first decode on
    drafted: int = 0  # speculative tokens decoded for it
    accepted: int = 0  # of which kept

    @property
    def prefilling(self) -> bool:
        # The last prompt token is not prefilled: it is decoded like a generated token (see
        # BatchEngine._admit), so its logits never depend on how the prefix was batched.
        return self.slot is not None and len(self.slot.tokens) < len(self.prompt) - 1


def common_prefix(a: list[int], b: list[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


# A shared prefix shorter than this, and than half the prompt, saves less prefill than a gap in
# the busy seq ids costs (every later step, a second ubatch): slot choice counts it as none.
MIN_REUSE = 32


def pick_slot(slots: list[Slot], free: list[Slot], prompt: list) -> tuple[int, Slot]:
    """The free slot whose cached tokens share the longest prefix with the prompt, and that
    prefix's length; of those that tie (a short share counts as none: a new prompt often
    shares only its template's first tokens with any), the one that keeps the
    busy seq ids in the fewest runs of consecutive ids, since llama.cpp decodes each run as a
    ubatch of its own."""
    busy = {s.seq_id for s in slots if s.busy}

    def runs_with(seq_id: int) -> int:
        ids = busy | {seq_id}
        return sum(1 for i in ids if i - 1 not in ids)

    def worth(shared: int) -> int:
        return shared if shared >= MIN_REUSE or 2 * shared >= len(prompt) else 0

    _, _, _, shared, slot = min(
        (-worth(n), runs_with(s.seq_id), s.seq_id, n, s)
        for s in free for n in (common_prefix(s.tokens, prompt),))
    return shared, slot


def shift_context(ctx: LlamaContext, model: LlamaModel, seq: Sequence) -> bool:
    """Ollama's context shift: keep the first num_keep tokens (BOS at least), drop half of
    the rest and go on generating."""
    slot = seq.slot
    assert slot is not None
    n = len(slot.tokens)
    keep = min(max(seq.req.sampling.num_keep, 1 if slot.tokens[0] == model.bos else 0), n // 2)
    discard = (n - keep) // 2
    if discard <= 0 or not ctx.shift(slot.seq_id, keep, discard):
        return False
    del slot.tokens[keep:keep + discard]
    seq.shifted_after = keep if seq.shifted_after < 0 else min(seq.shifted_after, keep)
    return True
