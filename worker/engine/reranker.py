"""Reranking with a rank-pooling model (llama.cpp's LLAMA_POOLING_TYPE_RANK: the CLS token's
state through the model's classification head gives one relevance score per sequence).

The query and each document are joined exactly as llama.cpp's server does
(tools/server, `format_prompt_rerank`): the GGUF's `tokenizer.chat_template.rerank` with
`{query}` and `{document}` filled in when the model ships one, else
`[BOS] query [EOS] [SEP] document [EOS]`, each special token only where the vocab asks for it."""

from __future__ import annotations

import llama_cpp as L
import numpy as np

from herd.worker.engine.embedder import Embedder
from herd.worker.engine.prompt import RequestError


def pair_tokens(model, query: str, document: str) -> list[int]:
    template = model.meta("tokenizer.chat_template.rerank")
    if template is not None:
        text = template.replace("{query}", query).replace("{document}", document)
        return model.tokenize(text, add_special=False, parse_special=True)
    vocab = model.vocab
    eos = L.llama_vocab_eos(vocab)
    sep = L.llama_vocab_sep(vocab)
    if eos < 0:
        eos = sep
    tokens: list[int] = []
    if L.llama_vocab_get_add_bos(vocab):
        tokens.append(L.llama_vocab_bos(vocab))
    tokens += model.tokenize(query, add_special=False, parse_special=False)
    if L.llama_vocab_get_add_eos(vocab):
        tokens.append(eos)
    if L.llama_vocab_get_add_sep(vocab):
        tokens.append(sep)
    tokens += model.tokenize(document, add_special=False, parse_special=False)
    if L.llama_vocab_get_add_eos(vocab):
        tokens.append(eos)
    return tokens


def rerank(embedder: Embedder, query: str, documents: list[str], *,
           truncate: bool) -> tuple[np.ndarray, int]:
    """One score per document (the head's first output), and the tokens evaluated."""
    if not embedder.ranks:
        raise RequestError("this model does not support reranking (its pooling type is not rank)")
    seqs = [pair_tokens(embedder.model, query, doc) for doc in documents]
    scores, tokens = embedder.pooled(seqs, truncate=truncate)
    return np.ascontiguousarray(scores[:, :1]), tokens
