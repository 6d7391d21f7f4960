"""A llama.cpp model and its vocabulary through llama-cpp-python's low-level ctypes API."""

from __future__ import annotations

import ctypes
import os

import llama_cpp as L


class ModelLoadError(RuntimeError):
    pass


def _quiet_llama_logs() -> None:
    # llama.cpp logs every tensor at load; the runner's stderr is for problems.
    if os.environ.get("HERD_LLAMA_VERBOSE") != "1":
        try:
            from llama_cpp import _logger

            _logger.set_verbose(False)
        except (ImportError, AttributeError):
            pass


class LlamaModel:
    """Weights + vocabulary; contexts are created on top of it."""

    def __init__(self, path: str, *, n_gpu_layers: int = -1,
                 tensor_split: list[float] | None = None, main_gpu: int = 0) -> None:
        _quiet_llama_logs()
        L.llama_backend_init()
        params = L.llama_model_default_params()
        params.n_gpu_layers = 999 if n_gpu_layers < 0 else n_gpu_layers
        params.main_gpu = main_gpu
        if tensor_split:
            # Layer proportions over the GPUs the runner sees (CUDA_VISIBLE_DEVICES).
            proportions = list(tensor_split[:L.LLAMA_MAX_DEVICES])
            proportions += [0.0] * (L.LLAMA_MAX_DEVICES - len(proportions))
            self._tensor_split = (ctypes.c_float * L.LLAMA_MAX_DEVICES)(*proportions)
            params.tensor_split = self._tensor_split
            params.split_mode = L.LLAMA_SPLIT_MODE_LAYER
        self.ptr = L.llama_model_load_from_file(path.encode(), params)
        if not self.ptr:
            raise ModelLoadError(f"unable to load model: {path}")
        self.vocab = L.llama_model_get_vocab(self.ptr)
        self.n_vocab = L.llama_vocab_n_tokens(self.vocab)
        self.bos = L.llama_vocab_bos(self.vocab)
        self.eos = L.llama_vocab_eos(self.vocab)
        self.add_bos = bool(L.llama_vocab_get_add_bos(self.vocab))
        self.n_ctx_train = L.llama_model_n_ctx_train(self.ptr)
        self.size = int(L.llama_model_size(self.ptr))
        self._pieces: dict[int, bytes] = {}
        self._eog: dict[int, bool] = {}

    def close(self) -> None:
        if self.ptr:
            L.llama_model_free(self.ptr)
            self.ptr = None

    def meta(self, key: str) -> str | None:
        size = 256
        while True:
            buf = ctypes.create_string_buffer(size)
            n = L.llama_model_meta_val_str(self.ptr, key.encode(), buf, size)
            if n < 0:
                return None
            if n < size:
                return buf.value.decode("utf-8", "replace")
            size = n + 1

    def tokenize(self, text: str, *, add_special: bool, parse_special: bool) -> list[int]:
        data = text.encode("utf-8")
        cap = len(data) + 8
        buf = (L.llama_token * cap)()
        n = L.llama_tokenize(self.vocab, data, len(data), buf, cap, add_special, parse_special)
        if n < 0:
            cap = -n
            buf = (L.llama_token * cap)()
            n = L.llama_tokenize(self.vocab, data, len(data), buf, cap, add_special, parse_special)
        return list(buf[:n])

    def piece(self, token: int) -> bytes:
        """Bytes of one token as printed text (control tokens render as nothing); cached."""
        cached = self._pieces.get(token)
        if cached is None:
            buf = ctypes.create_string_buffer(64)
            n = L.llama_token_to_piece(self.vocab, token, buf, 64, 0, False)
            if n < 0:
                buf = ctypes.create_string_buffer(-n)
                n = L.llama_token_to_piece(self.vocab, token, buf, -n, 0, False)
            cached = buf.raw[:n]
            self._pieces[token] = cached
        return cached

    def detokenize(self, tokens: list[int]) -> str:
        return b"".join(self.piece(t) for t in tokens).decode("utf-8", "replace")

    def text_of(self, tokens: list[int]) -> str:
        """llama.cpp's own inverse of tokenize(parse_special=True): special tokens written out,
        the SentencePiece space prefix dropped, so the text tokenizes back to the same ids."""
        arr = (L.llama_token * max(len(tokens), 1))(*tokens)
        cap = max(len(tokens) * 8, 64)
        for _ in range(2):
            buf = ctypes.create_string_buffer(cap)
            n = L.llama_detokenize(self.vocab, arr, len(tokens), buf, cap, False, True)
            if n >= 0:
                return buf.raw[:n].decode("utf-8", "replace")
            cap = -n
        raise RuntimeError("llama_detokenize failed")

    def is_eog(self, token: int) -> bool:
        known = self._eog.get(token)
        if known is None:
            known = bool(L.llama_vocab_is_eog(self.vocab, token))
            self._eog[token] = known
        return known

    def token_text(self, token: int) -> str:
        """The raw vocabulary text of a token (for BOS/EOS in chat templates)."""
        if token < 0:
            return ""
        raw = L.llama_vocab_get_text(self.vocab, token)
        return raw.decode("utf-8", "replace") if raw else ""


class LoraAdapter:
    """A LoRA adapter loaded for a model; contexts apply it with LlamaContext.apply_adapters."""

    def __init__(self, model: LlamaModel, path: str) -> None:
        self.ptr = L.llama_adapter_lora_init(model.ptr, path.encode())
        if not self.ptr:
            raise ModelLoadError(f"unable to load LoRA adapter: {path}")


def apply_adapters(ctx: L.llama_context_p, adapters: list[LoraAdapter]) -> None:
    """Applies LoRA adapters (scale 1) to a context; every context of a runner gets them."""
    if not adapters:
        return
    handles = (L.llama_adapter_lora_p_ctypes * len(adapters))(*(a.ptr for a in adapters))
    scales = (ctypes.c_float * len(adapters))(*(1.0 for _ in adapters))
    if L.llama_set_adapters_lora(ctx, handles, len(adapters), scales) != 0:
        raise ModelLoadError("unable to apply the LoRA adapters")


_KV_CACHE_TYPES = {"f16": L.GGML_TYPE_F16, "q8_0": L.GGML_TYPE_Q8_0, "q4_0": L.GGML_TYPE_Q4_0}
_FLASH_ATTENTION = {"auto": -1, "off": 0, "on": 1}  # llama_flash_attn_type


class LlamaContext:
    """One llama.cpp context with `n_seq` sequences of `n_ctx_seq` tokens each."""

    # A sliding-window model keeps all its cells (llama.cpp then prunes none that left the
    # window): a sequence can be cut at any position, for a prefix kept for the next request
    # and for a rejected draft's tail alike. It is llama.cpp's default; the placement's
    # estimate counts the full-size cache.
    swa_full = True

    def __init__(self, model: LlamaModel, *, n_ctx_seq: int, n_seq: int, n_batch: int,
                 n_threads: int, kv_cache_type: str = "f16",
                 flash_attention: str = "auto", kv_unified: bool = False) -> None:
        params = L.llama_context_default_params()
        params.flash_attn_type = _FLASH_ATTENTION[flash_attention]
        # A quantized V cache needs flash attention; like Ollama, fall back to f16 without it.
        kv = kv_cache_type if flash_attention != "off" else "f16"
        params.type_k = params.type_v = _KV_CACHE_TYPES[kv]
        self.kv_cache_type = kv
        # kv_unified=False splits n_ctx evenly across sequences, so size it as per-seq × slots.
        params.n_ctx = n_ctx_seq * n_seq
        params.n_batch = n_batch
        params.n_ubatch = n_batch
        params.n_seq_max = n_seq
        # One KV stream per sequence (Herd's default): each sequence attends over its own cells
        # only. A unified cache (one stream for all) attends over every sequence's cells, masked;
        # it measured slower at 8 full slots and faster only with gaps in the busy seq ids
        # (bench/ubatch_probe.py).
        params.kv_unified = kv_unified
        params.swa_full = self.swa_full
        if n_threads > 0:
            params.n_threads = n_threads
            params.n_threads_batch = n_threads
        self.ptr = L.llama_init_from_model(model.ptr, params)
        if not self.ptr and kv != "f16":
            # Quantized blocks must divide the attention head size; a model whose heads do
            # not fit them keeps the f16 cache, as with Ollama.
            params.type_k = params.type_v = _KV_CACHE_TYPES["f16"]
            self.kv_cache_type = "f16"
            self.ptr = L.llama_init_from_model(model.ptr, params)
        if not self.ptr:
            raise ModelLoadError("unable to create llama.cpp context (out of memory?)")
        self.memory = L.llama_get_memory(self.ptr)
        # llama.cpp pads the context (to 256); the user's num_ctx stays the limit we enforce.
        self.n_ctx_seq = min(n_ctx_seq, int(L.llama_n_ctx_seq(self.ptr)))
        self.n_batch = n_batch
        self.n_seq = n_seq

    def close(self) -> None:
        if self.ptr:
            L.llama_free(self.ptr)
            self.ptr = None

    def apply_adapters(self, adapters: list[LoraAdapter]) -> None:
        apply_adapters(self.ptr, adapters)

    def shift(self, seq_id: int, keep: int, discard: int) -> bool:
        """Drops `discard` cells after the first `keep` and moves the rest down to close the gap
        (RoPE re-applied by llama.cpp); False where the cache cannot do that."""
        if not L.llama_memory_can_shift(self.memory):
            return False
        if not L.llama_memory_seq_rm(self.memory, seq_id, keep, keep + discard):
            return False
        L.llama_memory_seq_add(self.memory, seq_id, keep + discard, -1, -discard)
        return True

    def forget(self, seq_id: int, from_pos: int = 0) -> int:
        """Drops the sequence's KV cells from `from_pos` on; returns how many cells remain.

        Some caches (sliding-window, recurrent) cannot cut a sequence in the middle: then the
        whole sequence goes and the caller must prefill it again from the start."""
        if L.llama_memory_seq_rm(self.memory, seq_id, from_pos, -1):
            return from_pos
        L.llama_memory_seq_rm(self.memory, seq_id, 0, -1)
        return 0
