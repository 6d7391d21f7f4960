"""The image half of an engine step: the embeddings of images whose turn has come, decoded in
their own llama_decode (llama.cpp refuses a batch that mixes embeddings and tokens) right after
the token batch, so text sequences go on decoding every step around an image.

Causal images (llava-style mlp projectors) of several sequences share one call, and a large one
is decoded in slices of up to n_batch rows. A non-causal image (gemma3) attends to itself both
ways: it is decoded alone and whole, with causal attention off (the worker refused at submit
any that does not fit n_ubatch).
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from herd.worker.engine.llama import LlamaContext
from herd.worker.engine.vision.projector import EmbeddingBatch
from herd.worker.engine.vision.prompt import ImageSpan


class _Seq(Protocol):
    prompt: list
    spans: list[ImageSpan]
    slot: object


def span_at(seq: _Seq, pos: int) -> ImageSpan | None:
    for span in seq.spans:
        if span.start <= pos < span.end:
            return span
    return None


def text_end(seq: _Seq, start: int, end: int) -> int:
    """Where a prefill chunk from `start` must stop: before the next image."""
    for span in seq.spans:
        if span.end > start:
            return min(end, max(span.start, start))
    return end


def reuse_boundary(prompt: list, reuse: int) -> int:
    """A reused KV prefix never ends inside an image: cut back to the image's first cell."""
    if reuse < len(prompt):
        cell = prompt[reuse]
        if isinstance(cell, tuple):
            return reuse - cell[2]
    return reuse


class ImageStep:
    def __init__(self, ctx: LlamaContext, n_embd: int, non_causal: bool) -> None:
        self.ctx = ctx
        self.non_causal = non_causal
        self.batch = EmbeddingBatch(ctx, n_embd)
        self.decodes = 0  # llama_decode calls made (tests check KV reuse skips them)

    def close(self) -> None:
        self.batch.close()

    def run(self, running: list) -> tuple[list, int]:
        """Decodes the images that are next for their sequences. Returns the sequences whose
        decode failed (their KV state is unknown) and llama_decode's status."""
        rows: list[tuple[int, int, np.ndarray]] = []
        taken: list[tuple[object, int, int]] = []  # (seq, first position, rows)
        room = self.batch.capacity
        for seq in running:
            slot = seq.slot
            if slot is None or not seq.spans or not seq.prefilling:
                continue
            pos = len(slot.tokens)
            span = span_at(seq, pos)
            if span is None:
                continue
            assert span.embd is not None
            if self.non_causal:
                if pos != span.start:
                    continue  # never happens: non-causal images go whole
                rows.append((slot.seq_id, pos, span.embd))
                taken.append((seq, pos, span.chunk.n_pos))
                break
            k = min(span.end - pos, room)
            rows.append((slot.seq_id, pos, span.embd[pos - span.start:pos - span.start + k]))
            taken.append((seq, pos, k))
            room -= k
            if room <= 0:
                break
        if not rows:
            return [], 0
        rc = self.batch.decode(rows, non_causal=self.non_causal)
        self.decodes += 1
        if rc != 0:
            return [seq for seq, _, _ in taken], rc
        for seq, pos, k in taken:
            seq.slot.tokens.extend(seq.prompt[pos:pos + k])
        return [], 0
