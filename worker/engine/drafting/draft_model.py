"""A draft model for speculative decoding: a smaller model of the same vocabulary, loaded in the
runner beside the model with one sequence per slot, that proposes the next tokens of every
decoding sequence. The sequences draft together, one llama_decode of the draft per drafted
position whatever their number (llama.cpp's server drafts slot by slot); the model then
verifies every draft in its own single step (speculative.py).

The draft keeps its cache per slot like the model does: a sequence's cells are its tokens as far
as they agree with the model's, so a new step feeds it only what was accepted since the last
one, and a new request on a slot reuses the prefix it shares with the last one."""

from __future__ import annotations

import logging

import llama_cpp as L
import numpy as np

from herd.worker.engine.llama import LlamaContext, LlamaModel
from herd.worker.engine.sequence import common_prefix

log = logging.getLogger("herd.runner")

# llama.cpp's --draft-p-min: a lone sequence's draft ends at the first token the draft model
# is less sure of than this (where the model would likely reject it anyway).
P_MIN = 0.75


class DraftModel:
    def __init__(self, model: LlamaModel, ctx: LlamaContext, target_vocab: int) -> None:
        self.model = model
        self.ctx = ctx
        self.target_vocab = target_vocab  # draft ids past the model's vocabulary are never drafted
        self.cells: list[list[int]] = [[] for _ in range(ctx.n_seq)]
        self._batch = L.llama_batch_init(ctx.n_batch, 0, 1)
        self.drafted = 0  # counters for the benchmark and the tests
        self.decodes = 0

    def close(self) -> None:
        L.llama_batch_free(self._batch)
        self.ctx.close()
        self.model.close()

    def propose(self, wants: list[tuple[int, list[int], int]], *,
                stop_unsure: bool) -> dict[int, list[int]]:
        """Drafts for (seq id, the sequence's tokens ending with the one the model decodes now,
        at most this many tokens). `stop_unsure`: end each draft at its first unsure token
        (sequences drafting together must draft alike, see speculative.add_drafts)."""
        drafts: dict[int, list[int]] = {seq_id: [] for seq_id, _, _ in wants}
        limits = {seq_id: k for seq_id, _, k in wants if k > 0}
        pending = {seq_id: self._unseen(seq_id, tokens)
                   for seq_id, tokens, k in wants if k > 0 and tokens}
        try:
            # What the draft has not seen yet, the accepted tokens (a whole prompt, first),
            # in as few decodes as fit; each sequence's first draft comes with its last token.
            live = []
            while pending:
                finishing = self._fill(pending)
                self._decode()
                live += [seq_id for seq_id, index in finishing
                         if self._take(drafts[seq_id], index, stop_unsure)
                         and len(drafts[seq_id]) < limits[seq_id]]
            # Then one decode per drafted position for every sequence still drafting.
            while live:
                for i, seq_id in enumerate(live):
                    self._put(i, drafts[seq_id][-1], seq_id, True)
                self._batch.n_tokens = len(live)
                self._decode()
                live = [seq_id for i, seq_id in enumerate(live)
                        if self._take(drafts[seq_id], i, stop_unsure)
                        and len(drafts[seq_id]) < limits[seq_id]]
        except _DecodeFailed as e:
            # Its cells' state is unknown: forget them all; the model decodes on undrafted.
            log.warning("draft model: %s", e)
            for seq_id, cells in enumerate(self.cells):
                self.ctx.forget(seq_id, 0)
                cells.clear()
            return {seq_id: [] for seq_id in drafts}
        self.drafted += sum(len(d) for d in drafts.values())
        return drafts

    def _unseen(self, seq_id: int, tokens: list[int]) -> list[int]:
        """Drops the cells that left the sequence (rejected drafts, another request's answer)
        and returns the tokens to feed; the last one is always fed, its logits start the draft."""
        cells = self.cells[seq_id]
        keep = min(common_prefix(cells, tokens), len(tokens) - 1)
        if keep < len(cells):
            del cells[self.ctx.forget(seq_id, keep):]
        return tokens[len(cells):]

    def _fill(self, pending: dict[int, list[int]]) -> list[tuple[int, int]]:
        """Puts as much of the pending tokens in the batch as fits; returns the (seq id, batch
        index) of the sequences whose last token is in it."""
        n = 0
        finishing = []
        for seq_id in list(pending):
            chunk = pending[seq_id]
            take = chunk[:self.ctx.n_batch - n]
            if not take:
                break
            for j, token in enumerate(take):
                self._put(n, token, seq_id, len(take) == len(chunk) and j == len(take) - 1)
                n += 1
            if len(take) == len(chunk):
                finishing.append((seq_id, n - 1))
                del pending[seq_id]
            else:
                pending[seq_id] = chunk[len(take):]
        self._batch.n_tokens = n
        return finishing

    def _put(self, i: int, token: int, seq_id: int, logits: bool) -> None:
        cells = self.cells[seq_id]
        b = self._batch
        b.token[i] = token
        b.pos[i] = len(cells)
        b.n_seq_id[i] = 1
        b.seq_id[i][0] = seq_id
        b.logits[i] = logits
        cells.append(token)

    def _decode(self) -> None:
        rc = L.llama_decode(self.ctx.ptr, self._batch)
        self.decodes += 1
        if rc != 0:
            raise _DecodeFailed(f"llama_decode failed with status {rc}")

    def _take(self, draft: list[int], index: int, stop_unsure: bool) -> bool:
        """Appends the draft model's greedy token at batch `index`; False when the draft ends
        there instead (unsure, past the model's vocabulary, or the end of the text)."""
        logits = np.ctypeslib.as_array(L.llama_get_logits_ith(self.ctx.ptr, index),
                                       shape=(self.model.n_vocab,))
        token = int(logits.argmax())
        if stop_unsure and 1.0 / float(np.exp(logits - logits[token]).sum()) < P_MIN:
            return False
        if token >= self.target_vocab:
            return False
        draft.append(token)
        return not self.model.is_eog(token)


class _DecodeFailed(RuntimeError):
    pass


def load_draft(path: str, target: LlamaModel, *, n_ctx_seq: int, n_seq: int, n_batch: int,
               n_threads: int, n_gpu_layers: int, kv_cache_type: str,
               flash_attention: str) -> DraftModel:
    """The draft model and its context, sized like the model's: a slot per sequence, as long."""
    model = LlamaModel(path, n_gpu_layers=n_gpu_layers)
    try:
        ctx = LlamaContext(model, n_ctx_seq=n_ctx_seq, n_seq=n_seq, n_batch=n_batch,
                           n_threads=n_threads, kv_cache_type=kv_cache_type,
                           flash_attention=flash_attention)
    except BaseException:
        model.close()
        raise
    return DraftModel(model, ctx, target.n_vocab)
