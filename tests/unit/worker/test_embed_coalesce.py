"""Embed requests that wait together in the runner share decodes (Embedder.embed_many), each
still answered as if alone; coalesce() decides which of them go together."""

from __future__ import annotations

import numpy as np
import pytest
from support.tiny_models import write_tiny_llama

from herd.worker.engine.embedder import Embedder, coalesce
from herd.worker.engine.llama import LlamaModel
from herd.worker.engine.prompt import RequestError


def test_small_requests_go_together_up_to_one_decode_of_sequences() -> None:
    assert coalesce([1] * 8, limit=32) == [range(0, 8)]
    assert coalesce([20, 12, 1], limit=32) == [range(0, 2), range(2, 3)]
    # A request that fills decodes alone goes alone: the small ones must not wait for it.
    assert coalesce([1, 256, 1, 1], limit=32) == [range(0, 1), range(1, 2), range(2, 4)]
    assert coalesce([40], limit=32) == [range(0, 1)]
    assert coalesce([], limit=32) == []


@pytest.fixture(scope="module")
def embedder(tmp_path_factory):
    model = LlamaModel(str(write_tiny_llama(tmp_path_factory.mktemp("emb") / "t.gguf",
                                            context_length=64)), n_gpu_layers=0)
    e = Embedder(model, max_tokens=16, n_threads=2)
    yield e
    e.close()


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def test_embed_many_answers_each_request_as_embed_would(embedder: Embedder) -> None:
    long_text = " ".join(["hello"] * 40)  # over max_tokens (16)
    requests = [(["hello world", "a"], True), ([long_text], False), (["why is the sky blue"], True),
                ([long_text, "b"], True)]
    results = embedder.embed_many(requests)
    assert isinstance(results[1], RequestError) and "exceeds the context length" in str(results[1])
    for (texts, truncate), result in zip(requests, results):
        if isinstance(result, RequestError):
            continue
        vectors, tokens = result
        alone, alone_tokens = embedder.embed(list(texts), truncate=truncate)
        assert vectors.shape == alone.shape and tokens == alone_tokens
        assert (_cosines(vectors, alone) > 0.999).all()
