"""gateway/gguf_meta.py: the few GGUF facts the store and /api/tags need."""

from __future__ import annotations

import pathlib

import gguf
import pytest

from herd.gateway.store.gguf_meta import (
    GGUFSummary,
    NotGGUF,
    format_parameter_size,
    read_metadata,
    read_summary,
)
from support.tiny_models import CHATML_TEMPLATE, build_vocab, write_tiny_llama


@pytest.fixture(scope="module")
def tiny_f32(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    return write_tiny_llama(tmp_path_factory.mktemp("gguf") / "tiny-f32.gguf", context_length=1024)


@pytest.fixture(scope="module")
def tiny_f16(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    return write_tiny_llama(tmp_path_factory.mktemp("gguf") / "tiny-f16.gguf", file_type_f32=False,
                            chat_template=None)


def tensor_elements(path: pathlib.Path) -> int:
    """The parameter count, computed independently with the gguf package's own reader."""
    return sum(int(t.n_elements) for t in gguf.GGUFReader(str(path)).tensors)


def test_summary_of_an_f32_llama(tiny_f32: pathlib.Path) -> None:
    assert read_summary(str(tiny_f32)) == GGUFSummary(
        architecture="llama",
        file_type="F32",
        parameter_count=tensor_elements(tiny_f32),
        context_length=1024,
        pooling=False,
        embedding_length=64,
        chat_template=CHATML_TEMPLATE,
        vision=False,
    )


def test_summary_of_an_f16_llama_without_template(tiny_f16: pathlib.Path) -> None:
    summary = read_summary(str(tiny_f16))
    assert summary.architecture == "llama"
    assert summary.file_type == "F16"
    assert summary.context_length == 2048
    assert summary.chat_template == ""


def test_parameter_count_is_the_sum_of_tensor_elements(tiny_f32: pathlib.Path,
                                                       tiny_f16: pathlib.Path) -> None:
    for path in (tiny_f32, tiny_f16):
        expected = tensor_elements(path)
        assert expected > 0
        assert read_metadata(str(path))[1] == expected
        assert read_summary(str(path)).parameter_count == expected


def test_metadata_keeps_scalars_and_strings(tiny_f32: pathlib.Path) -> None:
    meta, _ = read_metadata(str(tiny_f32))
    assert meta["general.architecture"] == "llama"
    assert meta["general.name"] == "tiny-llama"
    assert meta["general.file_type"] == int(gguf.LlamaFileType.ALL_F32)
    assert meta["llama.context_length"] == 1024
    assert meta["llama.embedding_length"] == 64
    assert meta["llama.rope.freq_base"] == pytest.approx(10000.0)
    assert meta["tokenizer.chat_template"] == CHATML_TEMPLATE


def test_long_tokenizer_arrays_are_replaced_by_their_length(tiny_f32: pathlib.Path) -> None:
    meta, _ = read_metadata(str(tiny_f32))
    n_vocab = len(build_vocab()[0])
    assert n_vocab > 64
    for key in ("tokenizer.ggml.tokens", "tokenizer.ggml.scores", "tokenizer.ggml.token_type"):
        assert not isinstance(meta[key], list)
        assert meta[key] == n_vocab
    # ...and skipping them left the cursor where the following keys start.
    assert meta["tokenizer.ggml.bos_token_id"] == 1


def test_a_non_gguf_file_is_rejected(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_bytes(b"hello, this is not a model")
    with pytest.raises(NotGGUF):
        read_summary(str(path))


def test_an_empty_file_is_rejected(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "empty.gguf"
    path.write_bytes(b"")
    with pytest.raises(NotGGUF):
        read_summary(str(path))


@pytest.mark.parametrize("length", [4, 10, 24, 100, 1000])
def test_a_truncated_gguf_is_rejected(tiny_f32: pathlib.Path, tmp_path: pathlib.Path,
                                      length: int) -> None:
    path = tmp_path / "truncated.gguf"
    path.write_bytes(tiny_f32.read_bytes()[:length])
    assert path.read_bytes().startswith(b"GGUF")
    with pytest.raises(NotGGUF):
        read_summary(str(path))


def test_gguf_version_1_is_rejected(tiny_f32: pathlib.Path, tmp_path: pathlib.Path) -> None:
    data = bytearray(tiny_f32.read_bytes())
    data[4:8] = (1).to_bytes(4, "little")
    path = tmp_path / "v1.gguf"
    path.write_bytes(bytes(data))
    with pytest.raises(NotGGUF):
        read_summary(str(path))


def test_not_gguf_is_a_value_error() -> None:
    assert issubclass(NotGGUF, ValueError)


@pytest.mark.parametrize(
    ("count", "text"),
    [
        (268_098_176, "268.10M"),
        (3_200_000_000, "3.2B"),
        (8_030_261_248, "8.0B"),
        (1_500_000, "1.50M"),
        (999, "999"),
        (0, "0"),
    ],
)
def test_format_parameter_size_matches_ollama(count: int, text: str) -> None:
    assert format_parameter_size(count) == text


@pytest.mark.parametrize(("count", "text"), [(7_000_000_000, "7B"), (8_000_000, "8M"), (8_000, "8K")])
def test_format_parameter_size_whole_numbers_like_ollama(count: int, text: str) -> None:
    assert format_parameter_size(count) == text
