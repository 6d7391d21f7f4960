"""/api/embed and /api/embeddings on a generative tiny model (mean-pooled hidden states)."""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest


def embed(server, **body) -> httpx.Response:
    return httpx.post(server.url + "/api/embed", json={"model": "tiny", **body}, timeout=60)


def cosine(a: list[float], b: list[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b))
    return dot / (math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b)))


def test_embed_a_list_returns_one_normalised_vector_per_input_in_order(server) -> None:
    texts = ["hello world", "why is the sky blue", "a", "tell me a story about a cat"]
    r = embed(server, input=texts)
    assert r.status_code == 200
    body = r.json()
    assert body["model"] == "tiny"
    vectors = body["embeddings"]
    assert len(vectors) == 4 and len({len(v) for v in vectors}) == 1 and len(vectors[0]) == 64
    for v in vectors:
        assert math.isclose(math.sqrt(sum(x * x for x in v)), 1.0, rel_tol=1e-5)
    assert body["prompt_eval_count"] > len(texts)
    assert body["total_duration"] > 0
    # Batched together or alone, each input gets the same vector.
    for text, vector in zip(texts, vectors):
        (alone,) = embed(server, input=text).json()["embeddings"]
        assert cosine(alone, vector) > 0.999
    assert cosine(vectors[0], vectors[1]) < 0.999


def test_ollama_client_embed(server) -> None:
    r = server.client().embed(model="tiny", input=["one", "two"])
    assert len(r.embeddings) == 2


def test_dimensions_truncates_then_renormalises(server) -> None:
    full = embed(server, input="hello world").json()["embeddings"][0]
    (short,) = embed(server, input="hello world", dimensions=16).json()["embeddings"]
    assert len(short) == 16
    assert math.isclose(sum(x * x for x in short), 1.0, rel_tol=1e-5)
    norm = math.sqrt(sum(x * x for x in full[:16]))
    assert all(math.isclose(s, f / norm, rel_tol=1e-4, abs_tol=1e-6) for s, f in zip(short, full[:16]))


def test_empty_input_loads_the_model_and_returns_no_vectors(server) -> None:
    for empty in ("", [], None):
        body = {"input": empty} if empty is not None else {}
        r = embed(server, **body)
        assert r.status_code == 200
        assert r.json()["embeddings"] == []


@pytest.mark.parametrize("bad", [[1, 2], {"a": 1}, 5, ["ok", None]])
def test_invalid_input_type_is_400(server, bad) -> None:
    r = embed(server, input=bad)
    assert (r.status_code, r.json()) == (400, {"error": "invalid input type"})


def test_too_long_input_without_truncate_is_400_and_truncated_by_default(server) -> None:
    long = "hello world " * 400
    r = embed(server, input=long, truncate=False, options={"num_ctx": 128})
    assert (r.status_code, r.json()) == (400, {"error": "the input length exceeds the context length"})
    r = embed(server, input=long, options={"num_ctx": 128})
    assert r.status_code == 200
    assert r.json()["prompt_eval_count"] == 128


def test_concurrent_requests_are_each_answered_as_if_alone(server) -> None:
    """The runner embeds requests that wait together in shared decodes; one refused among them
    fails alone."""
    opts = {"num_ctx": 128}
    texts = [f"note {i}: the cat sat on mat number {i}" for i in range(8)]
    alone = [embed(server, input=t, options=opts).json()["embeddings"][0] for t in texts]
    with ThreadPoolExecutor(len(texts) + 1) as pool:
        bad = pool.submit(embed, server, input="hello world " * 400, truncate=False, options=opts)
        together = [pool.submit(embed, server, input=t, options=opts) for t in texts]
        assert bad.result().status_code == 400
        for want, got in zip(alone, together):
            assert got.result().status_code == 200
            (vector,) = got.result().json()["embeddings"]
            assert cosine(want, vector) > 0.999


def test_embed_errors(server) -> None:
    assert httpx.post(server.url + "/api/embed", json={"input": "x"}).json() == {"error": "model is required"}
    r = httpx.post(server.url + "/api/embed", json={"model": "ghost", "input": "x"})
    assert (r.status_code, r.json()) == (404, {"error": "model 'ghost' not found"})


def test_legacy_embeddings_are_not_normalised_but_point_the_same_way(server) -> None:
    r = httpx.post(server.url + "/api/embeddings", json={"model": "tiny", "prompt": "hello world"}, timeout=60)
    assert r.status_code == 200
    legacy = r.json()["embedding"]
    assert not math.isclose(math.sqrt(sum(x * x for x in legacy)), 1.0, rel_tol=1e-3)
    (normalised,) = embed(server, input="hello world").json()["embeddings"]
    assert cosine(legacy, normalised) > 0.9999
    empty = httpx.post(server.url + "/api/embeddings", json={"model": "tiny", "prompt": ""}, timeout=60)
    assert empty.json() == {"embedding": []}
    missing = httpx.post(server.url + "/api/embeddings", json={"prompt": "x"})
    assert (missing.status_code, missing.json()) == (400, {"error": "model is required"})
