"""Speculative decoding by prompt lookup: a sequence whose last tokens occurred earlier in its
context (prompt + answer) drafts what followed them then; the drafts ride in the same
llama_decode as every other sequence's token, each with its own logits, and are kept while the
sequence's own sampler chain draws exactly the drafted token.

Exact-match verification changes nothing in what is generated: the chain samples every position
it would have sampled one step at a time, in the same order, so penalties see every kept token
(llama_sampler_sample accepts it) and a seeded RNG advances once per generated token. Greedy and
seeded answers are the same with and without speculation; only the number of decodes drops.

Where drafts come from: ngrams.py (or the runner's draft model, draft_model.py); whether they
pay on this runner: odds.py.
"""

from __future__ import annotations

import time
import weakref
from typing import TYPE_CHECKING, NamedTuple

import llama_cpp as L

from herd.protocol.wire import SamplingParams
from herd.worker.engine.drafting.ngrams import NgramIndex
from herd.worker.engine.drafting.odds import DraftCost, KeptDepth
from herd.worker.engine.llama import LlamaContext, LlamaModel

if TYPE_CHECKING:
    from herd.worker.engine.batch import BatchEngine, Sequence

# Drafted tokens per step when a request says -1 (options.draft_num_predict). Seven, so that
# one sequence's verification is 8 logits rows: on CPUs a row count that is not a multiple of 4
# is a slow shape for the output matmul (9 rows cost what 12 do), and 8 drafted tokens made
# forced drafts 0.53-0.72x where 7 give 0.88-1.27x (bench/RESULTS.md, SmolLM2 Q4_1).
DEFAULT_DRAFT = 7
DEFAULT_MODEL_DRAFT = 4  # Ollama's draft_num_predict for a model with a draft model
# After a draft of which nothing was kept, the sequence waits 2, 4, ... up to this many steps
# before it drafts again: text that does not repeat itself then pays almost nothing.
MAX_COOLDOWN = 16
MAX_SHADOWS = 8  # held-back drafts a sequence checks at once


def draft_limit(params: SamplingParams, by_model: bool = False) -> int:
    """Drafted tokens per step a request allows: 0 = no speculation."""
    if params.format:
        return 0  # a grammar would have to be rolled back with the rejected drafts
    if params.draft_num_predict < 0:
        return DEFAULT_MODEL_DRAFT if by_model else DEFAULT_DRAFT
    return params.draft_num_predict


class _Shadow(NamedTuple):
    """A draft held back, to be checked against what the sequence generates instead."""

    draft: list[int]
    base: int  # the KV position of the token it continued
    place: tuple[int, int]  # where it was copied from (Speculation._place)
    whole: int  # the state it was drafted in (Speculation._whole)
    # A proposal cut short whose decoded part was kept whole: the rest is checked as the text
    # goes on (else the record never learns that longer drafts would have paid too).
    tail: bool = False


class Speculation:
    """One sequence's drafting state: its n-gram index (or its runner's draft model) and how
    well its drafts have fared."""

    def __init__(self, limit: int, forced: bool = False, by_model: bool = False) -> None:
        self.limit = limit
        self.forced = forced  # the request set draft_num_predict: no cost check
        self.by_model = by_model  # the runner's draft model proposes (draft_model.py)
        self.index = NgramIndex()
        self.draft: list[int] = []
        self._proposal: list[int] = []  # the draft before worth() cut it
        self.base = 0  # the KV position of the token the draft continues
        # Where the sequence is in the text it copies: the history position that a token
        # generated at position `_place[0]` was expected to repeat. A draft's place counts once
        # some of the draft was kept: a wholly rejected one was copied from the wrong place.
        self._place: tuple[int, int] | None = None
        self._draft_place = (0, 0)
        self.at = 0  # the batch index of the draft's first token
        self._misses = 0
        self._cooldown = 0
        # How deep its drafts get kept, apart by whether the last checked draft was kept whole:
        # a copied stretch runs on for a while, and a draft right after a change fares worse.
        self._depths = (KeptDepth(), KeptDepth())  # after a draft not kept whole / kept whole
        self._whole = 0  # whether the last checked draft was kept whole
        # Drafts the cost held back, checked against what the sequence then generated: the
        # record stays measured for free while the sequence does not draft. Up to MAX_SHADOWS
        # at once: with one at a time, a copied stretch was learnt only once it was over.
        self._shadows: list[_Shadow] = []

    def wants(self, tokens: list[int], room: int) -> int:
        """How many tokens to draft after tokens[-1] (the token decoded now): 0 for none."""
        self.draft = []
        self._proposal = []
        self.base = len(tokens) - 1
        if self._cooldown > 0:
            self._cooldown -= 1
            return 0
        return max(min(self.limit, room), 0)

    def propose(self, tokens: list[int], room: int) -> list[int]:
        """The prompt-lookup draft to decode after tokens[-1]; [] for none."""
        k = self.wants(tokens, room)
        if k <= 0:
            return self.draft
        if len(tokens) < len(self.index.history):
            self.limit = 0  # the context shifted: cells moved under the index, stop drafting
            return self.draft
        self._check_shadows(tokens)
        index = self.index
        index.sync(tokens)
        at = len(tokens)  # the position of the first drafted token
        near = None if self._place is None else self._place[1] + at - self._place[0]
        start = index.find(near)
        if start is not None:
            self.draft = index.history[start:start + k]
            self._draft_place = (at, start)
        return self.draft

    def reach(self, longest: int) -> list[float]:
        """The chances that a draft's first 1, 2, ... `longest` tokens are all kept."""
        return self._depths[self._whole].reach(longest)

    def worth(self, cost: DraftCost, seqs: int) -> bool:
        """Trims the draft to the length that pays on this runner, or holds it back (as a
        shadow, to be checked against what the sequence generates instead)."""
        d = cost.best(seqs, len(self.draft), self.reach(len(self.draft)))
        if d == 0 and len(self._shadows) < MAX_SHADOWS:
            self._shadows.append(_Shadow(self.draft, self.base, self._draft_place, self._whole))
        self._proposal, self.draft = self.draft, self.draft[:d]
        return bool(self.draft)

    def _check_shadows(self, tokens: list[int]) -> None:
        pending = []
        for shadow in self._shadows:
            draft = shadow.draft
            since = tokens[shadow.base + 1:]
            kept = 0
            while kept < min(len(since), len(draft)) and since[kept] == draft[kept]:
                kept += 1
            if kept == len(since) < len(draft):
                pending.append(shadow)  # all right so far: not decided yet
                continue
            if shadow.tail:  # the state stays the decoded draft's
                self._depths[shadow.whole].learn(len(draft), kept)
            else:  # a held-back draft: the last one checked now
                self._learn(len(draft), kept, shadow.whole)
                if kept:
                    self._place = shadow.place
        self._shadows = pending

    def _learn(self, drafted: int, kept: int, whole: int) -> None:
        """Counts a checked draft in the record of the state (`whole`) it was made in."""
        self._depths[whole].learn(drafted, kept)
        self._whole = int(kept == drafted)

    def settle(self, kept: int) -> None:
        proposal = self._proposal if len(self._proposal) > len(self.draft) else self.draft
        if kept == len(self.draft) < len(proposal) and len(self._shadows) < MAX_SHADOWS:
            # Kept whole, but cut short: the record counts the whole proposal once the text
            # shows how far it went; the state is this draft's.
            self._shadows.append(_Shadow(proposal, self.base, self._draft_place, self._whole,
                                         tail=True))
            self._whole = 1
        else:
            # A rejected token ends the proposal's run too: what the cut left out was not kept.
            self._learn(len(proposal), kept, self._whole)
        if kept:
            self._place = self._draft_place
            self._misses = 0
        else:
            self._misses += 1
            self._cooldown = min(2 ** self._misses, MAX_COOLDOWN)
        self.draft = []


class _Engine:
    """What one engine knows about drafting: whether its cache can take drafts back at all,
    and what they cost it."""

    def __init__(self, model: LlamaModel, ctx: LlamaContext) -> None:
        self.able = can_speculate(model, ctx)
        self.cost = DraftCost()


_engines: weakref.WeakKeyDictionary[BatchEngine, _Engine] = weakref.WeakKeyDictionary()
OFF = Speculation(0)  # a sequence that never drafts (its draft stays empty)


def _engine(engine: BatchEngine) -> _Engine:
    state = _engines.get(engine)
    if state is None:
        state = _engines[engine] = _Engine(engine.model, engine.ctx)
    return state


def _decide(engine: BatchEngine, seq: Sequence) -> Speculation:
    """A sequence's drafting, decided at its first decode. Graph-sampled chains, grammars (they
    would have to be rolled back with the rejected drafts) and images' cells do not draft."""
    by_model = engine.drafter is not None
    limit = draft_limit(seq.req.sampling, by_model)
    if (limit <= 0 or seq.on_device or seq.grammar is not None or seq.spans
            or not _engine(engine).able):
        return OFF
    return Speculation(limit, forced=seq.req.sampling.draft_num_predict > 0, by_model=by_model)


def add_drafts(engine: BatchEngine, decoding: list[Sequence], n: int) -> int:
    """Puts the decoding sequences' drafts after the batch's n tokens, in the seats left (a
    draft's tokens need not sit next to its sequence's token: positions order them); returns
    the batch's new length. With one KV stream per sequence llama.cpp cuts a batch into ubatches
    that take as many tokens from each sequence (split_equal): a draft longer than another
    sequence's would be decoded in ubatches of its own, each a pass over all the weights. So
    several sequences draft equally or not at all."""
    state = _engine(engine)
    room = engine.ctx.n_batch - n
    drafted: list[Sequence] = []
    by_model: list[tuple[Sequence, int]] = []
    for seq in decoding:
        if seq.spec is None:
            seq.spec = _decide(engine, seq)
        spec, slot = seq.spec, seq.slot
        assert slot is not None
        spec.draft = []
        if spec is OFF:
            continue
        # A token to spare in the context, so that no kept draft reaches the context shift.
        fits = min(room, engine.ctx.n_ctx_seq - len(slot.tokens) - 2)
        limit = seq.req.sampling.num_predict
        if limit > 0:  # this step samples one token besides the kept drafts: the rest is waste
            fits = min(fits, limit - seq.generated - 1)
        # slot.tokens already ends with the token decoded now: the draft continues it.
        if spec.by_model:
            k = spec.wants(slot.tokens, fits)
            if k > 0 and not spec.forced:  # decided before the draft model spends anything
                k = state.cost.best(len(decoding), k, spec.reach(k))
            if k > 0:
                by_model.append((seq, k))
        elif spec.propose(slot.tokens, fits) and (
                spec.forced or spec.worth(state.cost, len(decoding))):
            drafted.append(seq)
    spent = 0
    if by_model:
        assert engine.drafter is not None
        t0 = time.perf_counter_ns()
        proposals = engine.drafter.propose(
            [(seq.slot.seq_id, seq.slot.tokens, k) for seq, k in by_model],  # type: ignore[union-attr]
            stop_unsure=len(decoding) == 1)
        spent = time.perf_counter_ns() - t0
        for seq, _ in by_model:
            seq.spec.draft = proposals[seq.slot.seq_id]  # type: ignore[union-attr]
            if seq.spec.draft:  # type: ignore[union-attr]
                drafted.append(seq)
    if len(decoding) > 1 and drafted:
        equal = 0 if len(drafted) < len(decoding) else min(
            room // len(decoding), min(len(seq.spec.draft) for seq in drafted))  # type: ignore[union-attr]
        for seq in drafted:
            del seq.spec.draft[equal:]  # type: ignore[union-attr]
    total = 0
    for seq in drafted:
        spec, slot = seq.spec, seq.slot
        assert spec is not None and slot is not None
        spec.at = n + total
        seq.drafted += len(spec.draft)
        for j, token in enumerate(spec.draft):
            engine._put(n + total + j, token, spec.base + 1 + j, slot.seq_id, True)
        total += len(spec.draft)
    # A draft model's decodes are part of what its drafts cost.
    state.cost.started(len(decoding), total, clean=len(decoding) == len(engine._running),
                       spent_ns=spent if total else 0)
    return n + total


def sample_all(engine: BatchEngine, decoded: list[Sequence], now: int) -> None:
    """Samples every decoded sequence: the engine's own way, or by verifying its draft."""
    _engine(engine).cost.decoded(now)
    for seq in decoded:
        if seq.spec is not None and seq.spec.draft:
            verify(engine, seq, now)
        else:
            engine._sample(seq, now)


def verify(engine: BatchEngine, seq: Sequence, now: int) -> None:
    """Samples the decoded token and then each drafted position, in order, with the engine's
    own _sample (which streams each token, or finishes), while the token sampled equals the
    draft; the first that differs is the next token. Cells of rejected drafts go."""
    spec = seq.spec
    slot = seq.slot
    assert spec is not None and slot is not None
    draft = spec.draft
    kept = 0
    for j in range(len(draft) + 1):
        engine._sample(seq, now)
        if seq.slot is None or j == len(draft) or seq.next_token != draft[j]:
            break
        slot.tokens.append(draft[j])  # its cell, decoded after the right tokens, stays
        kept += 1
        seq.accepted += 1  # before the next _sample, which may finish the request
        seq.batch_index = spec.at + j
    if len(slot.tokens) < spec.base + 1 + len(draft):
        # Only tail cells go, which every cache that speculates can drop (see can_speculate).
        del slot.tokens[engine.ctx.forget(slot.seq_id, len(slot.tokens)):]
    spec.settle(kept)


def can_speculate(model: LlamaModel, ctx: LlamaContext) -> bool:
    """Whether the rejected drafts' cells can be dropped alone: a recurrent state cannot lose
    its last tokens, and a sliding-window cache smaller than the context prunes cells that left
    the window, which a draft's rollback would need back. A full-size one (ctx.swa_full)
    prunes none, so gemma3 and its kind can speculate."""
    if L.llama_model_is_recurrent(model.ptr) or L.llama_model_is_hybrid(model.ptr):
        return False
    return L.llama_model_n_swa(model.ptr) == 0 or ctx.swa_full
