"""Embeddings: a second llama.cpp context on the same weights with pooling on, and every input
of a request packed into as few llama_decode calls as fit (not one call per input)."""

from __future__ import annotations

import llama_cpp as L
import numpy as np

from herd.worker.engine.batch import RequestError
from herd.worker.engine.llama import LlamaModel, LoraAdapter, apply_adapters

_MAX_SEQS_PER_BATCH = 32


class Embedder:
    def __init__(self, model: LlamaModel, *, max_tokens: int, n_threads: int,
                 adapters: list[LoraAdapter] | None = None) -> None:
        self.model = model
        self.max_tokens = max_tokens
        arch = model.meta("general.architecture") or ""
        params = L.llama_context_default_params()
        params.embeddings = True
        # Generative models carry no pooling type: mean-pool their last hidden states.
        pooling = model.meta(f"{arch}.pooling_type")
        has_pooling = pooling is not None
        # Rank pooling (rerankers) ends in a classification head: n_cls_out scores, not a vector.
        self.ranks = pooling == str(int(L.LLAMA_POOLING_TYPE_RANK))
        params.pooling_type = L.LLAMA_POOLING_TYPE_UNSPECIFIED if has_pooling else L.LLAMA_POOLING_TYPE_MEAN
        self.n_batch = max(max_tokens, 512)
        params.n_ctx = self.n_batch
        params.n_batch = self.n_batch
        params.n_ubatch = self.n_batch  # non-causal models need a whole sequence in one ubatch
        params.n_seq_max = _MAX_SEQS_PER_BATCH
        params.kv_unified = True  # the packed sequences share the cells instead of splitting them
        if n_threads > 0:
            params.n_threads = n_threads
            params.n_threads_batch = n_threads
        self.ctx = L.llama_init_from_model(model.ptr, params)
        if not self.ctx:
            raise RuntimeError("unable to create the embedding context")
        apply_adapters(self.ctx, adapters or [])
        self.memory = L.llama_get_memory(self.ctx)
        self.dim = (max(L.llama_model_n_cls_out(model.ptr), 1) if self.ranks
                    else L.llama_model_n_embd(model.ptr))
        self.batch = L.llama_batch_init(self.n_batch, 0, 1)

    def close(self) -> None:
        L.llama_batch_free(self.batch)
        L.llama_free(self.ctx)

    def embed(self, texts: list[str], *, truncate: bool) -> tuple[np.ndarray, int]:
        """Pooled, unnormalised vectors (len(texts) × dim) and the number of tokens evaluated."""
        if self.ranks:
            raise RequestError("this model is a reranker: it scores pairs (/api/rerank), "
                               "it does not embed")
        seqs = [self.model.tokenize(text, add_special=True, parse_special=False) or [self.model.bos]
                for text in texts]
        return self.pooled(seqs, truncate=truncate)

    def pooled(self, seqs: list[list[int]], *, truncate: bool) -> tuple[np.ndarray, int]:
        """What the model's pooling makes of each token sequence (len(seqs) × dim)."""
        for i, tokens in enumerate(seqs):
            if len(tokens) > self.max_tokens:
                if not truncate:
                    raise RequestError("the input length exceeds the context length")
                seqs[i] = tokens[:self.max_tokens]
        out = np.empty((len(seqs), self.dim), dtype=np.float32)
        start = 0
        while start < len(seqs):
            end, used = start, 0
            while (end < len(seqs) and end - start < _MAX_SEQS_PER_BATCH
                   and used + len(seqs[end]) <= self.n_batch):
                used += len(seqs[end])
                end += 1
            self._decode(seqs[start:end], out[start:end])
            start = end
        return out, sum(len(s) for s in seqs)

    def _decode(self, seqs: list[list[int]], out: np.ndarray) -> None:
        L.llama_memory_clear(self.memory, True)
        b = self.batch
        n = 0
        for seq_id, tokens in enumerate(seqs):
            for pos, token in enumerate(tokens):
                b.token[n] = token
                b.pos[n] = pos
                b.n_seq_id[n] = 1
                b.seq_id[n][0] = seq_id
                b.logits[n] = True
                n += 1
        b.n_tokens = n
        rc = L.llama_decode(self.ctx, b)
        if rc != 0:
            raise RequestError(f"llama_decode failed with status {rc}", status=500)
        for seq_id in range(len(seqs)):
            ptr = L.llama_get_embeddings_seq(self.ctx, seq_id)
            if not ptr:
                raise RequestError("the model produced no pooled embedding", status=500)
            out[seq_id] = np.ctypeslib.as_array(ptr, shape=(self.dim,))
