"""Speculative decoding by prompt lookup: a sequence whose last tokens occurred earlier in its
context (prompt + answer) drafts what followed them then; the drafts ride in the same
llama_decode as every other sequence's token, each with its own logits, and are kept while the
sequence's own sampler chain draws exactly the drafted token.

Exact-match verification changes nothing in what is generated: the chain samples every position
it would have sampled one step at a time, in the same order, so penalties see every kept token
(llama_sampler_sample accepts it) and a seeded RNG advances once per generated token. Greedy and
seeded answers are the same with and without speculation; only the number of decodes drops.

The drafting follows llama.cpp's `ngram-simple` (common/speculative.cpp): the longest n-gram
(here 4 down to 2 tokens) ending the context, its latest earlier occurrence, the tokens after it.
"""

from __future__ import annotations

import time
import weakref
from typing import TYPE_CHECKING

import llama_cpp as L

from herd.protocol.wire import SamplingParams
from herd.worker.engine.llama import LlamaModel

if TYPE_CHECKING:
    from herd.worker.engine.batch import BatchEngine, Sequence

# Drafted tokens per step when a request says -1 (options.draft_num_predict). Seven, so that
# one sequence's verification is 8 logits rows: on CPUs a row count that is not a multiple of 4
# is a slow shape for the output matmul (9 rows cost what 12 do), and 8 drafted tokens made
# forced drafts 0.53-0.72x where 7 give 0.88-1.27x (bench/RESULTS.md, SmolLM2 Q4_1).
DEFAULT_DRAFT = 7
DEFAULT_MODEL_DRAFT = 4  # Ollama's draft_num_predict for a model with a draft model
NGRAM_MAX = 4
NGRAM_MIN = 2
# After a draft of which nothing was kept, the sequence waits 2, 4, ... up to this many steps
# before it drafts again: text that does not repeat itself then pays almost nothing.
MAX_COOLDOWN = 16
MARGIN = 1.1  # a draft must promise this many times a plain step's tokens per second
# How much of a sequence's odds each checked draft leaves standing: a text's predictable
# stretches come and go, and the odds follow them (0.95 followed too slowly: bench/RESULTS.md).
ODDS_DECAY = 0.8
_EMA = 0.2


def draft_limit(params: SamplingParams, by_model: bool = False) -> int:
    """Drafted tokens per step a request allows: 0 = no speculation."""
    if params.format:
        return 0  # a grammar would have to be rolled back with the rejected drafts
    if params.draft_num_predict < 0:
        return DEFAULT_MODEL_DRAFT if by_model else DEFAULT_DRAFT
    return params.draft_num_predict


class NgramIndex:
    """The n-grams of a token history, each mapped to where its latest continuation starts."""

    def __init__(self) -> None:
        self.history: list[int] = []
        self._maps: list[dict[tuple[int, ...], int]] = [{} for _ in range(NGRAM_MAX + 1)]

    def sync(self, tokens: list[int]) -> None:
        """Indexes what `tokens` (which only grows at its end) gained since the last call."""
        history = self.history
        for i in range(len(history), len(tokens)):
            history.append(tokens[i])
            # The n-gram ending just before token i is continued by token i.
            for n in range(NGRAM_MIN, min(NGRAM_MAX, i) + 1):
                self._maps[n][tuple(history[i - n:i])] = i

    def propose(self, k: int) -> list[int]:
        """Up to k tokens that followed the latest earlier occurrence of the longest n-gram
        ending the history (the one ending it is not indexed yet: nothing follows it)."""
        history = self.history
        for n in range(min(NGRAM_MAX, len(history)), NGRAM_MIN - 1, -1):
            start = self._maps[n].get(tuple(history[len(history) - n:]))
            if start is not None:
                return history[start:start + k]
        return []


def _ema(old: float, new: float) -> float:
    return new if old <= 0 else old + _EMA * (new - old)


class DraftCost:
    """What drafted tokens cost on this runner, from its own decodes: the time of a step by its
    decoding sequences and drafted tokens. Measured rather than modelled: on a CPU the cost
    depends on the batch's shape far more than on its length (one sequence's 2 tokens cost what
    4 do, 9 what 12 do; bench/RESULTS.md); on a GPU drafted tokens add almost nothing."""

    def __init__(self) -> None:
        self.step_ns: dict[tuple[int, int], float] = {}  # (sequences, drafted tokens) -> ns
        self._t0 = 0
        self._key = (0, 0)

    def best(self, seqs: int, longest: int, odds: float) -> int:
        """The draft length, at most `longest` per sequence, that yields the most tokens per
        second when each drafted token is kept with probability `odds` (and only while the ones
        before it were): 0 where no draft beats a plain step. A plain step is measured first
        (0), then an unmeasured draft length is tried (`longest`)."""
        plain = self.step_ns.get((seqs, 0))
        if not plain:
            return 0
        if (seqs, seqs * longest) not in self.step_ns:
            return longest
        # A margin: the odds are an estimate, and a draft that only just pays on paper loses
        # whenever it is a little optimistic.
        best, rate = 0, MARGIN / plain
        tokens, chance = 1.0, 1.0  # expected tokens out of a step with a d-token draft
        for d in range(1, longest + 1):
            chance *= odds
            tokens += chance
            ns = self.step_ns.get((seqs, seqs * d))
            if ns and tokens / ns > rate:
                best, rate = d, tokens / ns
        return best

    def started(self, seqs: int, drafted: int, clean: bool, spent_ns: int = 0) -> None:
        """A step begins; `spent_ns` of it went before (a draft model's decodes)."""
        # Only decodes without prefill chunks measure anything: those cost what the chunk costs.
        self._t0 = time.perf_counter_ns() - spent_ns if clean and seqs else 0
        self._key = (seqs, drafted)

    def decoded(self, now: int) -> None:
        if self._t0:
            self.step_ns[self._key] = _ema(self.step_ns.get(self._key, 0.0), now - self._t0)
        self._t0 = 0


class Speculation:
    """One sequence's drafting state: its n-gram index (or its runner's draft model) and how
    well its drafts have fared."""

    def __init__(self, limit: int, forced: bool = False, by_model: bool = False) -> None:
        self.limit = limit
        self.forced = forced  # the request set draft_num_predict: no cost check
        self.by_model = by_model  # the runner's draft model proposes (draft_model.py)
        self.index = NgramIndex()
        self.draft: list[int] = []
        self.base = 0  # the KV position of the token the draft continues
        self.at = 0  # the batch index of the draft's first token
        self._misses = 0
        self._cooldown = 0
        # Drafted positions checked and kept, decayed: each drafted token is kept with
        # probability about kept/checked, and only while the ones before it were.
        self._checked = 2.0
        self._kept = 1.0
        # A draft the cost held back, checked against what the sequence then generated: the
        # odds stay measured for free while the sequence does not draft.
        self._shadow: list[int] = []
        self._shadow_base = 0
        self.drafted = 0  # counters for the benchmark and the tests
        self.accepted = 0

    def wants(self, tokens: list[int], room: int) -> int:
        """How many tokens to draft after tokens[-1] (the token decoded now): 0 for none."""
        self.draft = []
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
        self._check_shadow(tokens)
        self.index.sync(tokens)
        self.draft = self.index.propose(k)
        return self.draft

    @property
    def odds(self) -> float:
        """The chance that a drafted token is kept, given the ones before it were."""
        return self._kept / self._checked

    def worth(self, cost: DraftCost, seqs: int) -> bool:
        """Trims the draft to the length that pays on this runner, or holds it back (as a
        shadow, to be checked against what the sequence generates instead)."""
        d = cost.best(seqs, len(self.draft), self.odds)
        if d == 0 and not self._shadow:
            self._shadow, self._shadow_base = self.draft, self.base
        self.draft = self.draft[:d]
        return bool(self.draft)

    def _check_shadow(self, tokens: list[int]) -> None:
        if not self._shadow:
            return
        since = tokens[self._shadow_base + 1:]
        kept = 0
        while kept < min(len(since), len(self._shadow)) and since[kept] == self._shadow[kept]:
            kept += 1
        if kept == len(since) < len(self._shadow):
            return  # all right so far: not decided yet
        self._learn(len(self._shadow), kept)
        self._shadow = []

    def _learn(self, drafted: int, kept: int) -> None:
        # Positions after the first rejected one were never checked.
        checked = kept + (1 if kept < drafted else 0)
        self._checked = self._checked * ODDS_DECAY + checked
        self._kept = self._kept * ODDS_DECAY + kept

    def settle(self, kept: int) -> None:
        self.drafted += len(self.draft)
        self.accepted += kept
        self._learn(len(self.draft), kept)
        if kept:
            self._misses = 0
        else:
            self._misses += 1
            self._cooldown = min(2 ** self._misses, MAX_COOLDOWN)
        self.draft = []


class _Engine:
    """What one engine knows about drafting: whether its cache can take drafts back at all,
    and what they cost it."""

    def __init__(self, model: LlamaModel) -> None:
        self.able = can_speculate(model)
        self.cost = DraftCost()


_engines: weakref.WeakKeyDictionary[BatchEngine, _Engine] = weakref.WeakKeyDictionary()
OFF = Speculation(0)  # a sequence that never drafts (its draft stays empty)


def _engine(engine: BatchEngine) -> _Engine:
    state = _engines.get(engine)
    if state is None:
        state = _engines[engine] = _Engine(engine.model)
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
        # slot.tokens already ends with the token decoded now: the draft continues it.
        if spec.by_model:
            k = spec.wants(slot.tokens, fits)
            if k > 0 and not spec.forced:  # decided before the draft model spends anything
                k = state.cost.best(len(decoding), k, spec.odds)
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
        seq.batch_index = spec.at + j
    if len(slot.tokens) < spec.base + 1 + len(draft):
        # Only tail cells go, which every cache that speculates can drop (see can_speculate).
        del slot.tokens[engine.ctx.forget(slot.seq_id, len(slot.tokens)):]
    spec.settle(kept)


def can_speculate(model: LlamaModel) -> bool:
    """Whether the rejected drafts' cells can be dropped alone: a recurrent state cannot lose
    its last tokens, and a sliding-window cache may have pruned cells for the drafts that the
    kept tokens still attend to."""
    return not (L.llama_model_is_recurrent(model.ptr) or L.llama_model_is_hybrid(model.ptr)
                or L.llama_model_n_swa(model.ptr) > 0)
