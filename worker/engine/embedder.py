"""Embeddings: a second llama.cpp context on the same weights with pooling on, and every input
of a request packed into as few llama_decode calls as fit (not one call per input). Small
requests that wait together share decodes too (embed_many)."""

from __future__ import annotations

import llama_cpp as L
import numpy as np

from herd.worker.engine.batch import RequestError
from herd.worker.engine.llama import LlamaModel, LoraAdapter, apply_adapters

_MAX_SEQS_PER_BATCH = 32


def coalesce(sizes: list[int], limit: int = _MAX_SEQS_PER_BATCH) -> list[range]:
    """Runs of consecutive requests (given their input counts) to embed together: a request
    joins the run while the run's inputs still fit one decode's sequences. Eight one-text
    requests then cost one decode instead of eight; a big request, which fills decodes on its
    own, gains nothing from company and would only make the small ones wait for it."""
    runs: list[range] = []
    start, used = 0, 0
    for i, n in enumerate(sizes):
        if i > start and used + n > limit:
            runs.append(range(start, i))
            start, used = i, 0
        used += n
    if sizes:
        runs.append(range(start, len(sizes)))
    return runs


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
        return self.pooled(self._tokens(texts), truncate=truncate)

    def embed_many(self, requests: list[tuple[list[str], bool]]
                   ) -> list[tuple[np.ndarray, int] | RequestError]:
        """embed() of each (texts, truncate), all of their inputs packed into the same decodes;
        a request that is refused (too long without truncate) fails alone."""
        fitted: list[list[list[int]] | RequestError] = []
        for texts, truncate in requests:
            try:
                fitted.append(self._fitted(self._tokens(texts), truncate=truncate))
            except RequestError as e:
                fitted.append(e)
        vectors = self._pool([s for f in fitted if not isinstance(f, RequestError) for s in f])
        results: list[tuple[np.ndarray, int] | RequestError] = []
        start = 0
        for f in fitted:
            if isinstance(f, RequestError):
                results.append(f)
                continue
            results.append((vectors[start:start + len(f)], sum(len(s) for s in f)))
            start += len(f)
        return results

    def _tokens(self, texts: list[str]) -> list[list[int]]:
        if self.ranks:
            raise RequestError("this model is a reranker: it scores pairs (/api/rerank), "
                               "it does not embed")
        return [self.model.tokenize(text, add_special=True, parse_special=False) or [self.model.bos]
                for text in texts]

    def pooled(self, seqs: list[list[int]], *, truncate: bool) -> tuple[np.ndarray, int]:
        """What the model's pooling makes of each token sequence (len(seqs) × dim)."""
        seqs = self._fitted(seqs, truncate=truncate)
        return self._pool(seqs), sum(len(s) for s in seqs)

    def _fitted(self, seqs: list[list[int]], *, truncate: bool) -> list[list[int]]:
        for i, tokens in enumerate(seqs):
            if len(tokens) > self.max_tokens:
                if not truncate:
                    raise RequestError("the input length exceeds the context length")
                seqs[i] = tokens[:self.max_tokens]
        return seqs

    def _pool(self, seqs: list[list[int]]) -> np.ndarray:
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
        return out

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
