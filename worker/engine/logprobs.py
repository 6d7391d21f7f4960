"""Log-probabilities of sampled tokens, read from the raw logits of one batch position.

Ollama reports them from the model's distribution before temperature and the other samplers,
as llama.cpp's own server does: log_softmax(logits)[token], and the `top` most likely tokens.
"""

from __future__ import annotations

import ctypes

import llama_cpp as L
import numpy as np

from herd.protocol.wire import TokenLogprob
from herd.worker.engine.llama import LlamaModel


def _entry(model: LlamaModel, token: int, logprob: float) -> TokenLogprob:
    piece = model.piece(token)
    return TokenLogprob(piece.decode("utf-8", "replace"), float(logprob), list(piece))


def token_logprob(model: LlamaModel, ctx: L.llama_context_p, batch_index: int, token: int,
                  top: int) -> TokenLogprob:
    pointer = L.llama_get_logits_ith(ctx, batch_index)
    logits = np.ctypeslib.as_array(ctypes.cast(pointer, ctypes.POINTER(ctypes.c_float)),
                                   shape=(model.n_vocab,))
    peak = float(logits.max())
    log_total = peak + float(np.log(np.exp(logits - peak, dtype=np.float64).sum()))
    entry = _entry(model, token, float(logits[token]) - log_total)
    if top > 0:
        k = min(top, model.n_vocab)
        best = np.argpartition(logits, -k)[-k:]
        best = best[np.argsort(-logits[best], kind="stable")]
        entry.top = [_entry(model, int(t), float(logits[t]) - log_total) for t in best]
    return entry
