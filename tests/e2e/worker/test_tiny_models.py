"""Real llama-cpp-python checks that the tiny GGUF writer produces usable models."""

from __future__ import annotations

import pathlib
from collections.abc import Iterator

import pytest

llama_cpp = pytest.importorskip("llama_cpp")

try:
    from support.tiny_models import BOS_TOKEN, IM_END_TOKEN, IM_START_TOKEN, build_vocab, write_tiny_llama
except ImportError:  # tests/ imported as a package
    from tests.tiny_models import BOS_TOKEN, IM_END_TOKEN, IM_START_TOKEN, build_vocab, write_tiny_llama

TOKENS = build_vocab()[0]


@pytest.fixture(scope="module")
def model_path(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    return write_tiny_llama(tmp_path_factory.mktemp("tiny") / "tiny.gguf", seed=0)


@pytest.fixture(scope="module")
def llm(model_path: pathlib.Path) -> Iterator[llama_cpp.Llama]:
    model = llama_cpp.Llama(model_path=str(model_path), n_ctx=256, verbose=False)
    yield model
    model.close()


def test_file_is_small(model_path: pathlib.Path) -> None:
    assert model_path.stat().st_size < 5 * 1024 * 1024


def test_f16_file_loads(tmp_path: pathlib.Path) -> None:
    path = write_tiny_llama(tmp_path / "tiny16.gguf", file_type_f32=False, name="tiny16")
    model = llama_cpp.Llama(model_path=str(path), n_ctx=64, verbose=False)
    try:
        assert model.metadata["general.file_type"] == "1"
        assert model.metadata["general.name"] == "tiny16"
        assert model.tokenize(b"hello world", add_bos=False) == [TOKENS.index("\u2581hello"), TOKENS.index("\u2581world")]
    finally:
        model.close()


def test_metadata(llm: llama_cpp.Llama) -> None:
    assert llm.metadata["general.architecture"] == "llama"
    assert llm.metadata["general.name"] == "tiny-llama"
    assert llm.metadata["llama.context_length"] == "2048"
    assert "<|im_start|>" in llm.metadata["tokenizer.chat_template"]
    assert llm.n_vocab() == len(TOKENS)


def test_words_tokenize_to_word_tokens(llm: llama_cpp.Llama) -> None:
    ids = llm.tokenize(b"hello world", add_bos=False)
    assert ids == [TOKENS.index("\u2581hello"), TOKENS.index("\u2581world")]
    assert llm.tokenize(b"hello world")[0] == TOKENS.index(BOS_TOKEN)


def test_detokenize_round_trips_ascii(llm: llama_cpp.Llama) -> None:
    text = b"The quick brown fox, 42 times: why? {x} [y] ~ok~"
    ids = llm.tokenize(text, add_bos=True)
    assert llm.detokenize(ids) == text
    # Unknown characters fall back to byte tokens and still round-trip.
    text_utf8 = "caf\u00e9 \u2603".encode()
    assert llm.detokenize(llm.tokenize(text_utf8, add_bos=True)) == text_utf8


def test_chatml_special_tokens(llm: llama_cpp.Llama) -> None:
    im_start = TOKENS.index(IM_START_TOKEN)
    im_end = TOKENS.index(IM_END_TOKEN)
    assert llm.tokenize(IM_START_TOKEN.encode(), add_bos=False, special=True) == [im_start]
    assert llm.tokenize(IM_END_TOKEN.encode(), add_bos=False, special=True) == [im_end]
    # Without special parsing the marker is plain text, not the control token.
    assert im_start not in llm.tokenize(IM_START_TOKEN.encode(), add_bos=False, special=False)
    prompt = b"<|im_start|>user\nhello<|im_end|>\n<|im_start|>assistant\n"
    assert llm.tokenize(prompt, add_bos=False, special=True).count(im_start) == 2
    assert llm._model.token_eos() == TOKENS.index("</s>")
    assert llama_cpp.llama_vocab_is_eog(llm._model.vocab, im_end)
    assert llama_cpp.llama_vocab_is_eog(llm._model.vocab, TOKENS.index("</s>"))


def test_greedy_completion_runs_to_max_tokens(llm: llama_cpp.Llama) -> None:
    out = llm.create_completion("hello world", max_tokens=16, temperature=0.0)
    assert out["usage"]["completion_tokens"] == 16
    assert out["choices"][0]["finish_reason"] == "length"
    assert out["choices"][0]["text"].strip()
    again = llm.create_completion("hello world", max_tokens=16, temperature=0.0)
    assert again["choices"][0]["text"] == out["choices"][0]["text"]


def test_seeded_sampling_is_reproducible_and_varies(llm: llama_cpp.Llama) -> None:
    def sample(seed: int) -> str:
        out = llm.create_completion("hello", max_tokens=12, temperature=0.8, seed=seed)
        return out["choices"][0]["text"]

    assert sample(1) == sample(1)
    assert len({sample(seed) for seed in range(1, 5)}) > 1


def test_chat_completion_uses_template(llm: llama_cpp.Llama) -> None:
    out = llm.create_chat_completion(
        messages=[{"role": "user", "content": "Why is the sky blue?"}], max_tokens=8, temperature=0.0
    )
    assert out["usage"]["completion_tokens"] == 8
    assert out["choices"][0]["message"]["content"]


def test_weights_depend_on_seed(tmp_path: pathlib.Path) -> None:
    a = write_tiny_llama(tmp_path / "a.gguf", seed=1).read_bytes()
    b = write_tiny_llama(tmp_path / "b.gguf", seed=1).read_bytes()
    c = write_tiny_llama(tmp_path / "c.gguf", seed=2).read_bytes()
    assert a == b
    assert a != c


def test_chat_template_is_optional(tmp_path: pathlib.Path) -> None:
    from gguf import GGUFReader

    with_template = GGUFReader(write_tiny_llama(tmp_path / "t.gguf"))
    without = GGUFReader(write_tiny_llama(tmp_path / "n.gguf", chat_template=None))
    assert "tokenizer.chat_template" in with_template.fields
    assert "tokenizer.chat_template" not in without.fields
