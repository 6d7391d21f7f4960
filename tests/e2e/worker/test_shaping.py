"""Placeholder tokens in idle slots (worker/engine/shaping.py), on a real llama.cpp context:
a sequence that finished between busy ones leaves no gap in the batch's seq ids, the logits
row count is padded to a multiple of 4 where the CPU's sgemm wants it, nothing of it reaches an
answer, and the idle slot's cached prefix survives for the next request."""

from __future__ import annotations

import pathlib

import llama_cpp as L
import pytest

from herd.protocol.wire import RequestOutput, SamplingParams, Submit
from herd.worker.engine import shaping
from support.engines import engine_on

PROMPTS = ["hello world the sky", "tell me a story", "the sun the moon", "why is the sky blue",
           "yes no yes no", "a cat and a dog", "one two three", "red green blue"]


@pytest.fixture(scope="module")
def engine(tiny_gguf: pathlib.Path):
    with engine_on(tiny_gguf, num_ctx=256, num_parallel=8) as engine:
        yield engine


def _run(engine, shaped: bool) -> dict[int, str]:
    engine._shaper.fills_gaps = engine._shaper.pads = shaped
    outputs: dict[int, list[RequestOutput]] = {}
    engine._emit = lambda _, outs: [outputs.setdefault(o.req_id, []).append(o) for o in outs]
    for slot in engine._slots:  # every request starts cold, in slot i
        engine.ctx.forget(slot.seq_id, 0)
        slot.tokens.clear()
    for i, prompt in enumerate(PROMPTS):
        # Requests 2 and 5 end early: gaps in the middle of the busy seq ids.
        n = 6 if i in (2, 5) else 40
        engine.submit(b"c", Submit(i, SamplingParams(temperature=0.0, num_predict=n),
                                   raw_prompt=prompt))
    while engine.has_work:
        engine.step()
    return {i: "".join(o.text for o in outs) for i, outs in outputs.items()}


def test_placeholders_fill_gaps_and_change_no_answer(engine, record_batches) -> None:
    plain = _run(engine, shaped=False)
    record_batches.clear()
    shaped = _run(engine, shaped=True)
    layouts = record_batches
    assert shaped == plain and len(plain) == len(PROMPTS)
    decodes = [lay for lay in layouts if len(lay) > 1 and all(
        ids.count(s) == 1 for ids in [[s for s, _ in lay]] for s in ids)]  # one token per seq
    assert decodes
    for lay in decodes:
        ids = [s for s, _ in lay]
        assert ids == list(range(min(ids), max(ids) + 1))  # consecutive: one ubatch
        outputs = sum(1 for _, logits in lay if logits)
        assert outputs == shaping.padded_outputs(outputs)
    # After 2 and 5 finished, the steps still held 8 ids (6 streams + 2 placeholders).
    assert any(len(lay) == 8 for lay in decodes[-5:])
    # The idle slots kept their caches: every cell is a token of the mirror, no placeholder.
    memory = engine.ctx.memory
    for slot in engine._slots:
        assert L.llama_memory_seq_pos_max(memory, slot.seq_id) == len(slot.tokens) - 1


def test_padded_outputs() -> None:
    assert [shaping.padded_outputs(n) for n in (0, 1, 2, 3, 4, 5, 7, 8, 9, 15, 16, 17)] == \
        [0, 1, 2, 3, 4, 8, 8, 8, 12, 16, 16, 20]


def test_only_narrow_gaps_are_filled_on_a_cpu() -> None:
    from herd.worker.engine.sequence import Slot

    slots = [Slot(i, [1, 2]) for i in range(12)]
    busy = [0, 2, 8, 9]  # a gap of one (1), a gap of five (3..7)
    assert [s.seq_id for s in shaping.gap_fillers(slots, busy, 512, max_gap=4)] == [1]
    assert [s.seq_id for s in shaping.gap_fillers(slots, busy, 512)] == [1, 3, 4, 5, 6, 7]
    slots[1].tokens = [1] * 511  # a full slot cannot take a placeholder: its gap stays
    assert shaping.gap_fillers(slots, busy, 512, max_gap=4) == []
