"""Decides, before any weight is read, which GGUF tensor each HF tensor becomes, in what type,
and checks shapes and completeness so a bad checkpoint fails fast with a clear message."""

from __future__ import annotations

import re

import gguf
import numpy as np
from msgspec import Struct

from herd.gateway.store.convert.archs import Arch
from herd.gateway.store.convert.errors import ConversionError
from herd.gateway.store.convert.weights import TensorRef

# Tensors outside the repeated blocks; every other expected name exists once per layer.
_GLOBAL_PREFIXES = ("token_embd", "output", "token_types", "position_embd", "rope_freqs")
_BLOCK = re.compile(r"^blk\.(\d+)\.")
_F32_MATRICES = ("position_embd.", "token_types.")


class PlannedTensor(Struct, frozen=True):
    gguf_name: str
    shape: tuple[int, ...]  # HF (row-major numpy) order; the writer reverses it for GGUF
    out_type: gguf.GGMLQuantizationType
    hf_name: str = ""  # empty for tensors we synthesize (rope_freqs)
    ref: TensorRef | None = None

    @property
    def np_dtype(self) -> type[np.floating]:
        return np.float16 if self.out_type == gguf.GGMLQuantizationType.F16 else np.float32

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * np.dtype(self.np_dtype).itemsize


def out_type_for(gguf_name: str, shape: tuple[int, ...]) -> gguf.GGMLQuantizationType:
    """F16 for weight matrices (where the bytes are, and what llama.cpp quantizes from); F32
    for 1-D tensors and for the few matrices ggml adds straight onto F32 activations
    (position and token-type embeddings): its CPU add has no F32 + F16 kernel. Same rule as
    llama.cpp's converter."""
    if (len(shape) <= 1 or not gguf_name.endswith(".weight") or gguf_name.endswith("_norm.weight")
            or gguf_name.startswith(_F32_MATRICES)):
        return gguf.GGMLQuantizationType.F32
    return gguf.GGMLQuantizationType.F16


def _sort_key(name: str) -> tuple[int, int, str]:
    m = _BLOCK.match(name)
    if m is None:
        return (0 if name.startswith("token") or name.startswith("position") else 2, 0, name)
    return (1, int(m.group(1)), name)


def plan_tensors(arch: Arch, refs: dict[str, TensorRef]) -> tuple[list[PlannedTensor], int]:
    """(tensors in write order, vocabulary rows of the token embedding)."""
    tmap = gguf.get_tensor_name_map(arch.gguf_arch, arch.n_layer)
    mapped: dict[str, tuple[str, TensorRef]] = {}
    for hf_name, ref in refs.items():
        name = arch.rename(hf_name)
        if name is None:
            continue
        gguf_name = tmap.get_name(name, try_suffixes=(".weight", ".bias"))
        if gguf_name is None:
            raise ConversionError(
                f"unexpected tensor {hf_name!r} {list(ref.shape)}: no {arch.name} GGUF equivalent "
                "(wrong architecture in config.json, or more layers than "
                f"num_hidden_layers={arch.n_layer}?)")
        if not ref.is_float:
            raise ConversionError(f"tensor {hf_name!r} has non-float dtype {ref.dtype}")
        if gguf_name in mapped:
            raise ConversionError(
                f"tensors {mapped[gguf_name][0]!r} and {hf_name!r} both map to {gguf_name}")
        mapped[gguf_name] = (hf_name, ref)

    if "token_embd.weight" not in mapped:
        raise ConversionError("missing weights: no token embedding tensor found")
    embd = mapped["token_embd.weight"][1]
    if len(embd.shape) != 2 or embd.shape[1] != arch.hidden:
        raise ConversionError(
            f"bad shape for the token embedding: {list(embd.shape)}, expected [vocab, {arch.hidden}]")
    n_vocab = embd.shape[0]

    expected = arch.expected_shapes(n_vocab)
    for gguf_name, (hf_name, ref) in mapped.items():
        key = _BLOCK.sub("", gguf_name)
        if key in expected and tuple(ref.shape) != expected[key][0]:
            raise ConversionError(
                f"bad shape for {hf_name!r}: {list(ref.shape)}, expected {list(expected[key][0])} "
                "from config.json")
    missing = []
    for key, (_, required) in expected.items():
        if not required:
            continue
        if key.startswith(_GLOBAL_PREFIXES):
            names = [key]
        else:
            names = [f"blk.{i}.{key}" for i in range(arch.n_layer)]
        missing += [n for n in names if n not in mapped]
    if missing:
        shown = ", ".join(missing[:6]) + (f" and {len(missing) - 6} more" if len(missing) > 6 else "")
        raise ConversionError(f"missing weights: {shown}")

    planned = [PlannedTensor(g, tuple(ref.shape), out_type_for(g, tuple(ref.shape)), hf, ref)
               for g, (hf, ref) in mapped.items()]
    for name, data in arch.extra_tensors().items():
        planned.append(PlannedTensor(name, tuple(data.shape), out_type_for(name, tuple(data.shape))))
    planned.sort(key=lambda t: _sort_key(t.gguf_name))
    return planned, n_vocab
