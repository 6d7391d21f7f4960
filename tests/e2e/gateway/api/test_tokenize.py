"""POST /api/tokenize and POST /api/detokenize (ollama#3582): the ids are the model's own, as
llama.cpp's tokenizer gives them (no BOS added, special tokens in the text parsed, as
llama.cpp's server /tokenize does), and detokenizing them gives the text back."""

from __future__ import annotations

import httpx
import llama_cpp
import pytest

TEXTS = ["hello world", "Why is the sky blue?", "<|im_start|>user\nhi<|im_end|>", "", "é ü 日本"]


@pytest.fixture(scope="module")
def vocab(tiny_gguf):
    return llama_cpp.Llama(str(tiny_gguf), vocab_only=True, verbose=False)


def post(server, path: str, **body) -> httpx.Response:
    return httpx.post(server.url + path, json={"model": "tiny", **body})


def test_tokenize_is_exactly_the_models_tokenizer(server, vocab) -> None:
    for text in TEXTS:
        r = post(server, "/api/tokenize", content=text)
        assert r.status_code == 200, r.text
        assert r.json() == {"model": "tiny", "tokens": vocab.tokenize(
            text.encode(), add_bos=False, special=True)}
    control = post(server, "/api/tokenize", content="<|im_start|>").json()["tokens"]
    assert control == [vocab.tokenize(b"<|im_start|>", add_bos=False, special=True)[0]]
    assert len(control) == 1  # a control token written in the text is that token


def test_detokenize_round_trips(server, vocab) -> None:
    """Text → ids → the same text, special tokens written out. (After a control token this
    SentencePiece vocab's tokenizer itself starts the next word with a space: that is the
    model's tokenization, and detokenizing shows it as llama.cpp does.)"""
    for text in TEXTS:
        tokens = post(server, "/api/tokenize", content=text).json()["tokens"]
        r = post(server, "/api/detokenize", tokens=tokens)
        assert r.status_code == 200, r.text
        content = r.json()["content"]
        if "<|" in text:
            assert content == "<|im_start|> user\nhi<|im_end|>"
        else:
            assert r.json() == {"model": "tiny", "content": text}


def test_errors(server, vocab) -> None:
    r = post(server, "/api/detokenize", tokens=[1, vocab.n_vocab()])
    assert r.status_code == 400
    assert r.json() == {"error": f"invalid token id {vocab.n_vocab()} (the vocabulary has "
                                 f"{vocab.n_vocab()})"}
    assert post(server, "/api/detokenize", tokens=[-1]).status_code == 400
    assert post(server, "/api/detokenize").json() == {"error": "tokens is required"}
    assert post(server, "/api/tokenize").json() == {"error": "content is required"}
    r = httpx.post(server.url + "/api/tokenize", json={"model": "nope", "content": "x"})
    assert r.status_code == 404 and r.json() == {"error": "model 'nope' not found"}
    r = post(server, "/api/tokenize", content=3)
    assert r.status_code == 400
