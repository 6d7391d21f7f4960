"""The shape of a model from its GGUF header alone: hyperparameters, per-layer head counts,
sliding-window layers, and the bytes of every tensor grouped by layer the way Ollama's
GroupLayers does (``blk.N.*`` per layer; ``output``/``output_norm`` as the output layer, with
``token_embd`` standing in when the output is tied to the embedding). Read without mapping the
tensor data, so a placement decision costs milliseconds even for a large model."""

from __future__ import annotations

import mmap
import re
import struct
from typing import Any

import gguf
import numpy as np
from msgspec import Struct

from herd.gateway.store.gguf_meta import GGUFCursor, NotGGUF

MiB = 1024 * 1024

_MAX_ARRAY_KEPT = 1024  # per-layer arrays are kept; tokenizer arrays only counted

# KV cache element types: (block size, bytes per block), as ggml_row_size computes them.
KV_CACHE_TYPES: dict[str, tuple[int, int]] = {
    "f32": (1, 4), "f16": (1, 2), "bf16": (1, 2),
    "q8_0": (32, 34), "q4_0": (32, 18), "q4_1": (32, 20), "q5_0": (32, 22), "q5_1": (32, 24),
    "iq4_nl": (32, 18),
}

# llama.cpp's hparams.set_swa_pattern(n) per architecture (llama-model.cpp load_hparams): layer
# il uses the sliding window when il % n < n - 1, i.e. every n-th layer attends globally.
_SWA_PATTERN = {"gemma2": 2, "gemma3": 6, "gemma3n": 5, "gemma-embedding": 6, "cohere2": 4,
                "llama4": 4, "gpt-oss": 2, "exaone4": 4}
_SWA_DEFAULT_WINDOW = {"gemma2": 4096, "llama4": 8192, "gpt-oss": 128}

# The CPU backend repacks these weight types into interleaved layouts (a second copy: the
# "CPU_REPACK model buffer") when the rows count is a multiple of 8 (ggml-cpu/repack.cpp, AVX2).
_REPACKED_TYPES = {gguf.GGMLQuantizationType.Q4_0, gguf.GGMLQuantizationType.Q4_K,
                   gguf.GGMLQuantizationType.IQ4_NL}

PAD_CELLS = 256  # llama.cpp pads n_ctx and n_ctx_seq (and the SWA cache) to 256 cells


class TensorInfo(Struct, frozen=True):
    name: str
    shape: list[int]      # ggml order: ne[0] is the row length
    type: int             # GGMLQuantizationType
    offset: int           # from the start of the data section
    nbytes: int


class ModelInfo(Struct):
    """What the estimate needs from a GGUF file: hyperparameters and tensor sizes."""
    path: str
    architecture: str
    n_layer: int
    n_embd: int
    n_vocab: int
    n_ctx_train: int
    n_head: list[int]          # per layer
    n_head_kv: list[int]       # per layer
    n_ff: list[int]            # per layer
    head_dim_k: int
    head_dim_v: int
    n_swa: int                 # sliding window in tokens, 0 when none
    swa_layers: list[bool]     # per layer
    layers: list[int]          # bytes of blk.N.* by layer
    output: int                # output.weight + output_norm (token_embd when tied)
    output_tied: bool
    token_embd: int
    other: int                 # every other tensor (rope_freqs, ...)
    repack: int                # bytes the CPU backend copies into repacked layouts
    data_span: int             # bytes llama.cpp maps for the tensors (alignment included)
    tensors: list[TensorInfo]

    @property
    def weights(self) -> int:
        """All tensor bytes (the embedding counted once even when tied)."""
        tied_extra = 0 if not self.output_tied else self.token_embd
        return sum(self.layers) + self.output - tied_extra + self.token_embd + self.other


# --- GGUF reading ----------------------------------------------------------------------------

def tensor_nbytes(shape: list[int], ttype: int) -> int:
    block, size = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType(ttype)]
    n = int(np.prod(shape, dtype=np.int64)) if shape else 1
    return n // block * size


def read_gguf(path: str) -> tuple[dict[str, Any], list[TensorInfo], int]:
    """Key/values (long arrays as their length), tensor infos and the data section's alignment."""
    with open(path, "rb") as f:
        if f.read(4) != b"GGUF":
            raise NotGGUF(f"{path}: not a GGUF file")
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
            cur = GGUFCursor(memoryview(mm), max_kept=_MAX_ARRAY_KEPT)
            try:
                cur.pos = 4
                if cur.unpack("<I") < 2:
                    raise NotGGUF(f"{path}: unsupported GGUF version")
                n_tensors, n_kv = cur.unpack("<Q"), cur.unpack("<Q")
                meta: dict[str, Any] = {}
                for _ in range(n_kv):
                    key = cur.string()
                    meta[key] = cur.value(cur.unpack("<I"))
                tensors = []
                for _ in range(n_tensors):
                    name = cur.string()
                    shape = [cur.unpack("<Q") for _ in range(cur.unpack("<I"))]
                    ttype, offset = cur.unpack("<I"), cur.unpack("<Q")
                    tensors.append(TensorInfo(name, shape, ttype, offset, tensor_nbytes(shape, ttype)))
            except (struct.error, KeyError, ValueError) as e:
                raise NotGGUF(f"{path}: not a GGUF file: {e}") from e
            finally:
                cur.data.release()
    return meta, tensors, int(meta.get("general.alignment", 32))


def _per_layer(value: Any, n_layer: int, default: int) -> list[int]:
    if isinstance(value, list):
        return [int(v) for v in value][:n_layer] + [int(value[-1]) if value else default] * (
            n_layer - len(value))
    return [int(value) if value is not None else default] * n_layer


_BLK = re.compile(r"^blk\.(\d+)\.")


def read_model(path: str) -> ModelInfo:
    meta, tensors, _alignment = read_gguf(path)
    arch = str(meta.get("general.architecture", ""))

    def key(name: str, default: Any = None) -> Any:
        return meta.get(f"{arch}.{name}", default)

    n_layer = int(key("block_count", 0))
    n_embd = int(key("embedding_length", 0))
    by_name = {t.name: t for t in tensors}
    embd = by_name.get("token_embd.weight")
    tokens = meta.get("tokenizer.ggml.tokens")
    n_vocab = (len(tokens) if isinstance(tokens, list) else int(tokens or 0)) or int(
        key("vocab_size", 0) or 0)
    if not n_vocab and embd is not None and len(embd.shape) > 1:
        n_vocab = int(embd.shape[1])
    n_head = _per_layer(key("attention.head_count"), n_layer, 0)
    # no head_count_kv: as many KV heads as heads; a 0 in a per-layer array: a recurrent layer
    kv_key = key("attention.head_count_kv")
    n_head_kv = list(n_head) if kv_key is None else _per_layer(kv_key, n_layer, 0)
    n_ff = _per_layer(key("feed_forward_length"), n_layer, 0)
    head_max = max(n_head, default=0)
    head_dim_k = int(key("attention.key_length", 0) or (n_embd // head_max if head_max else 0))
    head_dim_v = int(key("attention.value_length", 0) or head_dim_k)

    n_swa = int(key("attention.sliding_window", 0) or 0)
    pattern = key("attention.sliding_window_pattern")
    if isinstance(pattern, list):
        swa_layers = [bool(p) for p in pattern][:n_layer]
        swa_layers += [False] * (n_layer - len(swa_layers))
    else:
        every = int(pattern) if isinstance(pattern, int) else _SWA_PATTERN.get(arch, 0)
        if every and not n_swa:
            n_swa = _SWA_DEFAULT_WINDOW.get(arch, 0)
        swa_layers = [bool(every and n_swa and il % every < every - 1) for il in range(n_layer)]
    if not n_swa:
        swa_layers = [False] * n_layer

    layers = [0] * n_layer
    output = token_embd = other = repack = 0
    has_output = "output.weight" in by_name
    for t in tensors:
        m = _BLK.match(t.name)
        if m and int(m.group(1)) < n_layer:
            layers[int(m.group(1))] += t.nbytes
            if (t.type in _REPACKED_TYPES and len(t.shape) == 2 and t.shape[1] % 8 == 0):
                repack += t.nbytes
        elif t.name.startswith("output.") or t.name.startswith("output_norm."):
            output += t.nbytes
        elif t.name.startswith("token_embd."):
            token_embd += t.nbytes
        else:
            other += t.nbytes
    if has_output:
        out_t = by_name["output.weight"]
        if out_t.type in _REPACKED_TYPES and out_t.shape[1] % 8 == 0:
            repack += out_t.nbytes
    else:
        output += token_embd
    end = max((t.offset + t.nbytes for t in tensors), default=0)
    start = min((t.offset for t in tensors), default=0)
    return ModelInfo(
        path=path, architecture=arch, n_layer=n_layer, n_embd=n_embd, n_vocab=n_vocab,
        n_ctx_train=int(key("context_length", 0) or 0), n_head=n_head, n_head_kv=n_head_kv,
        n_ff=n_ff, head_dim_k=head_dim_k, head_dim_v=head_dim_v, n_swa=n_swa,
        swa_layers=swa_layers, layers=layers, output=output, output_tied=not has_output,
        token_embd=token_embd, other=other, repack=repack, data_span=end - start,
        tensors=tensors)


# --- KV cache and compute buffer --------------------------------------------------------------
