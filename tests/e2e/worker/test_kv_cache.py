"""OLLAMA_KV_CACHE_TYPE and OLLAMA_FLASH_ATTENTION reach the llama.cpp context."""

from __future__ import annotations

import pathlib

import httpx
import llama_cpp as L
import pytest

from support.tiny_models import write_tiny_llama
from herd.worker.engine.llama import LlamaContext, LlamaModel


def _kv_bytes(model: LlamaModel, kv: str, flash: str) -> int:
    ctx = LlamaContext(model, n_ctx_seq=256, n_seq=1, n_batch=64, n_threads=2,
                       kv_cache_type=kv, flash_attention=flash)
    try:
        tokens = (L.llama_token * 32)(*range(1, 33))  # kept alive: the batch points into it
        batch = L.llama_batch_get_one(tokens, 32)
        assert L.llama_decode(ctx.ptr, batch) == 0
        return int(L.llama_state_seq_get_size(ctx.ptr, 0))
    finally:
        ctx.close()


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory):
    # Quantized cache blocks hold 32 values: the heads must be a multiple of that (64 here).
    path = write_tiny_llama(tmp_path_factory.mktemp("kv") / "heads64.gguf", seed=3,
                            embedding_length=128, head_count=2)
    m = LlamaModel(str(path), n_gpu_layers=0)
    yield m
    m.close()


def test_a_quantized_cache_holds_the_same_tokens_in_fewer_bytes(model: LlamaModel) -> None:
    f16, q8, q4 = (_kv_bytes(model, kv, "auto") for kv in ("f16", "q8_0", "q4_0"))
    assert q4 < q8 < 0.75 * f16


def test_heads_the_blocks_do_not_divide_keep_an_f16_cache(tiny_gguf: pathlib.Path) -> None:
    small_heads = LlamaModel(str(tiny_gguf), n_gpu_layers=0)  # 16-value heads
    try:
        ctx = LlamaContext(small_heads, n_ctx_seq=64, n_seq=1, n_batch=16, n_threads=2,
                           kv_cache_type="q8_0")
        assert ctx.kv_cache_type == "f16"
        ctx.close()
    finally:
        small_heads.close()


def test_without_flash_attention_the_cache_stays_f16(model: LlamaModel) -> None:
    assert _kv_bytes(model, "q8_0", "off") == _kv_bytes(model, "f16", "off")


def test_a_server_with_a_q8_0_cache_answers(make_server) -> None:
    srv = make_server(OLLAMA_KV_CACHE_TYPE="q8_0", OLLAMA_FLASH_ATTENTION="1")
    r = httpx.post(srv.url + "/api/generate", json={
        "model": "tiny", "prompt": "hello", "stream": False, "options": {"num_predict": 4}})
    assert r.status_code == 200 and r.json()["eval_count"] > 0
