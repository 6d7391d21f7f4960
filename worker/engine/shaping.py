"""Batch shapes llama.cpp decodes fast, made from placeholder tokens in idle slots.

Two effects, both measured on this repository's CPU (bench/RESULTS.md, "Batch shapes"):

* With one KV stream per sequence llama.cpp cuts a batch into ubatches of consecutive seq ids:
  a sequence that finished between busy ones splits every later step into two passes over all
  the weights (16 streams with one gap: 98 ms a step instead of 52 for gemma3 270M). A
  placeholder token in the idle slot, removed again after the decode, keeps the ids
  consecutive for the cost of one row.
* On the CPU, the logits matmul (llamafile's sgemm over a vocabulary of up to 262,144 rows) is
  several times slower for row counts that are not a multiple of 4 above 4 (15 rows 72 ms, 16
  rows 51 ms): the placeholders ask for logits too, or a prefill chunk's tokens do, until the
  count is one.

A placeholder goes at the idle slot's next position and its cell is dropped after the decode,
so the slot's cached prefix stays; nothing is sampled from it. Caches that cannot drop a last
cell (recurrent, hybrid) get no placeholders."""

from __future__ import annotations

import llama_cpp as L

from herd.worker.engine.llama import LlamaModel
from herd.worker.engine.sequence import Slot


MAX_CPU_GAP = 4


def padded_outputs(n: int) -> int:
    """The logits row count at least n that the CPU's sgemm does fast: n itself up to 4, else
    the next multiple of 4 (measured over 1..33 rows, bench/RESULTS.md)."""
    return n if n <= 4 else -(-n // 4) * 4


def gap_fillers(slots: list[Slot], ids: list[int], n_ctx_seq: int,
                max_gap: int | None = None) -> list[Slot]:
    """Idle slots between the lowest and highest seq id the batch has tokens for, a gap (a run
    of idle slots) at a time and only gaps of at most `max_gap` slots: on a CPU a placeholder
    costs a row of compute, and a wide gap's rows would cost more than the pass they save."""
    if not ids:
        return []
    inside = set(ids)
    chosen: list[Slot] = []
    gap: list[Slot] = []
    for s in slots[min(ids):max(ids) + 1]:
        if s.seq_id in inside:
            if gap and (max_gap is None or len(gap) <= max_gap) and all(
                    not g.busy and len(g.tokens) + 1 < n_ctx_seq for g in gap):
                chosen += gap
            gap = []
        else:
            gap.append(s)
    return chosen


def slots_above(slots: list[Slot], top: int, count: int, n_ctx_seq: int) -> list[Slot]:
    """`count` idle slots just above seq id `top`, consecutive (a gap after them would cost a
    ubatch again), or none."""
    chosen = []
    for s in slots[top + 1:top + 1 + count]:
        if s.busy or len(s.tokens) + 1 >= n_ctx_seq:
            break
        chosen.append(s)
    return chosen if len(chosen) == count else []


def placeholder_token(slot: Slot, model: LlamaModel) -> int:
    """Any valid id will do: its cell is dropped after the decode, nothing reads its logits."""
    last = slot.tokens[-1] if slot.tokens else None
    return last if isinstance(last, int) else max(model.bos, 0)


def can_shape(model: LlamaModel) -> bool:
    """Whether a placeholder's cell can be dropped alone after the decode."""
    return not (L.llama_model_is_recurrent(model.ptr) or L.llama_model_is_hybrid(model.ptr))


def pads_outputs(num_gpu_layers: int) -> bool:
    """The logits row count matters to the CPU's sgemm; on a GPU a row is a row."""
    return not L.llama_supports_gpu_offload() or num_gpu_layers == 0


class Shaper:
    """One engine's placeholders: where this step's went, so they can be taken out again."""

    def __init__(self, model: LlamaModel, slots: list[Slot], n_ctx_seq: int,
                 num_gpu_layers: int) -> None:
        self.model = model
        self.slots = slots
        self.n_ctx_seq = n_ctx_seq
        self.fills_gaps = can_shape(model)
        self.pads = self.fills_gaps and pads_outputs(num_gpu_layers)
        # A placeholder row is almost free on a GPU; on a CPU (SmolLM2: a row ~3 ms, the extra
        # pass of a gap ~14 ms) wide gaps are left alone.
        self.max_gap = MAX_CPU_GAP if self.pads else None
        self.placed: list[tuple[Slot, int]] = []  # (slot, batch index) of this step's
        self.quiet: list[int] = []  # batch indices of prefill tokens (no logits asked)

    def fillers(self, ids: list[int]) -> list[Slot]:
        return gap_fillers(self.slots, ids, self.n_ctx_seq, self.max_gap) if self.fills_gaps else []

    def pad(self, put, batch, n: int, outputs: int, n_batch: int) -> int:
        """Asks for logits from placeholders and prefill tokens, or adds placeholders above the
        batch's top seq id, until the `outputs` logits rows are a count the sgemm does fast;
        all or nothing. Returns the batch's new length."""
        need = padded_outputs(outputs) - outputs
        if not self.pads or need <= 0:
            return n
        flexible = [i for _, i in self.placed] + self.quiet
        above: list[Slot] = []
        if len(flexible) < need:
            top = max((int(batch.seq_id[i][0]) for i in range(n)), default=-1)
            above = slots_above(self.slots, top, need - len(flexible), self.n_ctx_seq)
            if not above or n + len(above) > n_batch:
                return n
        for i in flexible[:need]:
            batch.logits[i] = True
        for slot in above:
            put(n, placeholder_token(slot, self.model), len(slot.tokens), slot.seq_id, True)
            self.placed.append((slot, n))
            n += 1
        return n

    def take_out(self, forget) -> None:
        """Drops the placeholders' cells (a cache that cannot cut loses the idle slot's)."""
        for slot, _ in self.placed:
            del slot.tokens[forget(slot.seq_id, len(slot.tokens)):]
        self.placed.clear()
        self.quiet.clear()
