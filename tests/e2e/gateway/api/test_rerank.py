"""POST /api/rerank and POST /v1/rerank (ollama#3368) on a tiny random BERT cross-encoder with
rank pooling (tests/support/tiny_models.write_tiny_reranker). The scores must be what llama.cpp
gives the pair joined as its server joins it (tools/server `format_prompt_rerank`:
[CLS] query [SEP] document for this vocab), computed here in-process with llama-cpp-python."""

from __future__ import annotations

import pathlib

import httpx
import llama_cpp
import pytest
from gguf import PoolingType
from support.tiny_models import write_tiny_reranker

QUERY = "why is the sky blue"
DOCS = ["the sky is blue", "a cat", "hello world", "the sun is hot"]


@pytest.fixture(scope="module")
def reranker_gguf(tmp_path_factory) -> pathlib.Path:
    return write_tiny_reranker(tmp_path_factory.mktemp("rr") / "rr.gguf")


@pytest.fixture(scope="module")
def ranker(server, reranker_gguf):
    server.create_model("tiny-rr", reranker_gguf)
    return server


@pytest.fixture(scope="module")
def expected(reranker_gguf) -> list[float]:
    """llama.cpp's own rank pooling through its C API, one pair at a time."""
    L = llama_cpp
    mparams = L.llama_model_default_params()
    mparams.n_gpu_layers = 0
    model = L.llama_model_load_from_file(str(reranker_gguf).encode(), mparams)
    vocab = L.llama_model_get_vocab(model)
    cparams = L.llama_context_default_params()
    cparams.embeddings = True
    cparams.pooling_type = L.LLAMA_POOLING_TYPE_RANK
    cparams.n_ctx = cparams.n_batch = cparams.n_ubatch = 512
    ctx = L.llama_init_from_model(model, cparams)

    def tokenize(text: str) -> list[int]:
        buf = (L.llama_token * 256)()
        n = L.llama_tokenize(vocab, text.encode(), len(text.encode()), buf, 256, False, False)
        return list(buf[:n])

    scores = []
    for doc in DOCS:
        tokens = ([L.llama_vocab_bos(vocab)] + tokenize(QUERY) + [L.llama_vocab_sep(vocab)]
                  + tokenize(doc))
        L.llama_memory_clear(L.llama_get_memory(ctx), True)
        arr = (L.llama_token * len(tokens))(*tokens)
        assert L.llama_decode(ctx, L.llama_batch_get_one(arr, len(tokens))) == 0
        scores.append(float(L.llama_get_embeddings_seq(ctx, 0)[0]))
    L.llama_free(ctx)
    L.llama_model_free(model)
    return scores


def rerank(server, path: str = "/api/rerank", **body) -> httpx.Response:
    return httpx.post(server.url + path, json={"model": "tiny-rr", "query": QUERY,
                                               "documents": DOCS, **body})


def test_results_sorted_with_llama_cpps_scores(ranker, expected) -> None:
    r = rerank(ranker)
    assert r.status_code == 200, r.text
    body = r.json()
    results = body["results"]
    assert sorted(x["index"] for x in results) == list(range(len(DOCS)))
    scores = [x["relevance_score"] for x in results]
    assert scores == sorted(scores, reverse=True)
    for x in results:
        assert x["relevance_score"] == pytest.approx(expected[x["index"]], rel=1e-4, abs=1e-5)
        assert "document" not in x
    assert body["model"] == "tiny-rr" and body["usage"]["prompt_tokens"] > len(DOCS)


def test_top_n_documents_and_the_v1_route(ranker, expected) -> None:
    best = max(range(len(DOCS)), key=lambda i: expected[i])
    r = rerank(ranker, "/v1/rerank", top_n=1, return_documents=True)
    assert r.status_code == 200, r.text
    (only,) = r.json()["results"]
    assert only["index"] == best and only["document"] == {"text": DOCS[best]}
    # Batched or alone, a document gets the same score.
    alone = rerank(ranker, documents=[DOCS[2]]).json()["results"][0]["relevance_score"]
    assert alone == pytest.approx(expected[2], rel=1e-4, abs=1e-5)


def test_refusals(ranker) -> None:
    r = rerank(ranker, documents=[])
    assert r.status_code == 400
    assert r.json() == {"error": "documents must be a non-empty list of strings"}
    assert rerank(ranker, documents=["a", 3]).status_code == 400
    r = httpx.post(ranker.url + "/api/rerank", json={"model": "tiny-rr", "documents": DOCS})
    assert r.json() == {"error": "query is required"}
    r = rerank(ranker, model="tiny")
    assert r.status_code == 400
    assert r.json()["error"].startswith("this model does not support reranking")
    r = rerank(ranker, "/v1/rerank", model="tiny")
    assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error"
    r = httpx.post(ranker.url + "/api/embed", json={"model": "tiny-rr", "input": "x"})
    assert r.status_code == 400 and "reranker" in r.json()["error"]


def test_an_embedding_model_that_does_not_rank_is_refused(ranker, tmp_path) -> None:
    mean = write_tiny_reranker(tmp_path / "mean.gguf", pooling=PoolingType.MEAN)
    ranker.create_model("tiny-mean", mean)
    assert httpx.post(ranker.url + "/api/embed", json={"model": "tiny-mean", "input": "x"}
                      ).status_code == 200
    r = rerank(ranker, model="tiny-mean")
    assert r.status_code == 400
    assert r.json() == {"error": "this model does not support reranking (its pooling type is "
                                 "not rank)"}


def test_a_reranker_tokenizes_with_its_wordpiece_vocab(ranker) -> None:
    r = httpx.post(ranker.url + "/api/tokenize", json={"model": "tiny-rr", "content": "the sky"})
    assert r.status_code == 200 and len(r.json()["tokens"]) == 2
