"""Whether a draft pays on this runner: what a step costs by its shape (DraftCost, measured on
the runner's own decodes) against how much of a sequence's drafts gets kept (KeptDepth)."""

from __future__ import annotations

import time

MARGIN = 1.1  # a draft must promise this many times a plain step's tokens per second
# How much of a sequence's record each checked draft leaves standing: a text's predictable
# stretches come and go, and the estimate follows them (0.95 followed too slowly).
ODDS_DECAY = 0.8
_EMA = 0.2


def _ema(old: float, new: float) -> float:
    return new if old <= 0 else old + _EMA * (new - old)


class DraftCost:
    """What drafted tokens cost on this runner, from its own decodes: a plain step's time by its
    decoding sequences, and a drafted step's in plain steps of the same moment. Measured rather
    than modelled: on a CPU the cost depends on the batch's shape far more than on its length
    (one sequence's 2 tokens cost what 4 do, 9 what 12 do; bench/RESULTS.md); on a GPU drafted
    tokens add almost nothing. Relative, because a shape is measured only while it is chosen:
    an absolute time taken while the machine was busy would condemn it for good."""

    def __init__(self) -> None:
        # (sequences, 0) -> ns of a plain step; (sequences, drafted tokens) -> plain steps
        self.step_cost: dict[tuple[int, int], float] = {}
        self._t0 = 0
        self._key = (0, 0)

    def best(self, seqs: int, longest: int, reach: list[float]) -> int:
        """The draft length, at most `longest` per sequence, that yields the most tokens per
        step when a draft's first j tokens are all kept with probability reach[j - 1]
        (KeptDepth.reach): 0 where no draft beats a plain step. A plain step is measured first
        (0), then the longest draft (`longest`)."""
        if (seqs, 0) not in self.step_cost:
            return 0
        top = self.step_cost.get((seqs, seqs * longest))
        if top is None:
            return longest
        # A margin: the reach is an estimate, and a draft that only just pays on paper loses
        # whenever it is a little optimistic.
        best, rate = 0, MARGIN
        tokens = 1.0  # expected tokens out of a step with a d-token draft
        for d in range(1, min(longest, len(reach)) + 1):
            tokens += reach[d - 1]
            # A length not measured yet is costed on the line from a plain step to the longest
            # draft: where that says it pays best it is tried, and measured from then on (on a
            # CPU the shape matters: 4 rows can cost less than 3).
            cost = self.step_cost.get((seqs, seqs * d)) or 1.0 + (top - 1.0) * d / longest
            if tokens / cost > rate:
                best, rate = d, tokens / cost
        return best

    def started(self, seqs: int, drafted: int, clean: bool, spent_ns: int = 0) -> None:
        """A step begins; `spent_ns` of it went before (a draft model's decodes)."""
        # Only decodes without prefill chunks measure anything: those cost what the chunk costs.
        self._t0 = time.perf_counter_ns() - spent_ns if clean and seqs else 0
        self._key = (seqs, drafted)

    def decoded(self, now: int) -> None:
        if self._t0:
            ns, key = now - self._t0, self._key
            plain = self.step_cost.get((key[0], 0))
            if key[1] == 0:
                self.step_cost[key] = _ema(plain or 0.0, ns)
            elif plain:
                self.step_cost[key] = _ema(self.step_cost.get(key, 0.0), ns / plain)
        self._t0 = 0


class KeptDepth:
    """How deep a sequence's drafts get kept: for each depth j, the decayed share of the drafts
    that had a j-th token whose first j tokens were all kept. Counted per depth, not as one
    chance per token: drafts are mostly kept whole (a copied stretch) or hardly at all (the
    answer changed a word; 7 and 5 of the rewrite's 17 in bench/RESULTS.md), a mix no single
    per-token chance describes: it over-rates short drafts and under-rates long ones."""

    def __init__(self) -> None:
        # Before anything is checked: each token kept with odds 1/2, worth one draft.
        self._had: list[float] = []
        self._kept: list[float] = []

    def _grow(self, depth: int) -> None:
        while len(self._had) < depth:
            self._had.append(1.0)
            self._kept.append(0.5 ** len(self._had))

    def learn(self, drafted: int, kept: int) -> None:
        """Counts a checked draft: `kept` of its `drafted` tokens, in order, were kept."""
        self._grow(drafted)
        for j in range(drafted):
            self._had[j] = self._had[j] * ODDS_DECAY + 1.0
            self._kept[j] = self._kept[j] * ODDS_DECAY + (1.0 if j < kept else 0.0)

    def reach(self, longest: int) -> list[float]:
        """reach[j - 1]: the chance that a draft's first j tokens are all kept, j <= longest."""
        self._grow(longest)
        out: list[float] = []
        last = 1.0
        for j in range(longest):
            # Never more likely than a shallower depth: the counts behind each differ.
            last = min(last, self._kept[j] / self._had[j])
            out.append(last)
        return out
