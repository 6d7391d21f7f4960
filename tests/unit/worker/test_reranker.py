"""How a query and a document become one sequence for a rank-pooling model, as llama.cpp's
server joins them (tools/server `format_prompt_rerank`)."""

from __future__ import annotations

import pytest
from support.tiny_models import write_tiny_reranker

from herd.worker.engine.llama import LlamaModel
from herd.worker.engine.reranker import pair_tokens


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("rr")
    plain = LlamaModel(str(write_tiny_reranker(d / "a.gguf")), n_gpu_layers=0)
    templated = LlamaModel(str(write_tiny_reranker(
        d / "b.gguf", rerank_template="[CLS]q: {query} [SEP]d: {document}")), n_gpu_layers=0)
    return plain, templated


def test_bos_query_sep_document_by_the_vocabs_flags(models) -> None:
    plain, _ = models
    q = plain.tokenize("the sky", add_special=False, parse_special=False)
    d = plain.tokenize("a cat", add_special=False, parse_special=False)
    # add_bos (the [CLS]) and add_sep are set, add_eos is not.
    assert pair_tokens(plain, "the sky", "a cat") == [2, *q, 3, *d]


def test_the_models_rerank_template_wins(models) -> None:
    _, templated = models
    expected = templated.tokenize("[CLS]q: the sky [SEP]d: a cat", add_special=False,
                                  parse_special=True)
    assert pair_tokens(templated, "the sky", "a cat") == expected
    assert expected[0] == 2 and 3 in expected  # the special tokens in the template are parsed
