"""Reads tensors out of *.safetensors files with numpy alone.

The format is an 8-byte little-endian header length, a JSON header
({name: {dtype, shape, data_offsets}}) and the raw little-endian data. We parse it ourselves
rather than through safetensors' numpy API because most released checkpoints store BF16, which
numpy has no dtype for (safe_open(framework="np") refuses it); a memmap of the raw bytes lets
us widen BF16 to F32 with a shift, and keeps only the tensor being converted in memory.
"""

from __future__ import annotations

import json
import pathlib
import struct

import msgspec
import numpy as np
from msgspec import Struct

from herd.gateway.store.convert.errors import ConversionError

# Float dtypes we can convert; integer tensors (position_ids and the like) are never weights.
_FLOAT_DTYPES: dict[str, np.dtype] = {
    "F64": np.dtype("<f8"),
    "F32": np.dtype("<f4"),
    "F16": np.dtype("<f2"),
    "BF16": np.dtype("<u2"),  # read as raw 16-bit words, widened in load()
}
_ALL_DTYPES: dict[str, int] = {
    "F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1,
    "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1, "U16": 2, "U32": 4, "U64": 8,
}
_MAX_HEADER = 100 * 1024 * 1024  # the spec's own limit; anything bigger is not a safetensors file


class TensorRef(Struct, frozen=True):
    """Where one tensor's bytes live; nothing is read until load()."""

    name: str
    path: str
    dtype: str
    shape: tuple[int, ...]
    start: int  # absolute file offset of the first byte
    end: int

    @property
    def is_float(self) -> bool:
        return self.dtype in _FLOAT_DTYPES


class _Entry(Struct):
    dtype: str
    shape: list[int]
    data_offsets: tuple[int, int]


def _read_header(path: pathlib.Path) -> list[TensorRef]:
    size = path.stat().st_size
    with path.open("rb") as f:
        raw_len = f.read(8)
        if len(raw_len) < 8:
            raise ConversionError(f"{path.name} is not a safetensors file (too short)")
        (n,) = struct.unpack("<Q", raw_len)
        if n > _MAX_HEADER or 8 + n > size:
            raise ConversionError(f"{path.name} is not a safetensors file (bad header length)")
        header = f.read(n)
    try:
        table = json.loads(header)
    except ValueError as e:
        raise ConversionError(f"{path.name} has a corrupt safetensors header: {e}") from None
    if not isinstance(table, dict):
        raise ConversionError(f"{path.name} has a corrupt safetensors header")
    base = 8 + n
    refs = []
    for name, spec in table.items():
        if name == "__metadata__":
            continue
        try:
            entry = msgspec.convert(spec, _Entry)
        except msgspec.ValidationError as e:
            raise ConversionError(f"{path.name}: bad header entry for {name!r}: {e}") from None
        start, end = entry.data_offsets
        shape = tuple(entry.shape)
        width = _ALL_DTYPES.get(entry.dtype)
        if width is None:
            raise ConversionError(f"{path.name}: tensor {name!r} has unsupported dtype {entry.dtype}")
        if end - start != width * int(np.prod(shape, dtype=np.int64)) or base + end > size:
            raise ConversionError(
                f"{path.name}: tensor {name!r} {list(shape)} {entry.dtype} does not match its data "
                f"(file truncated?)")
        refs.append(TensorRef(name, str(path), entry.dtype, shape, base + start, base + end))
    return refs


def _index_shards(src_dir: pathlib.Path) -> set[str] | None:
    """Shard names a model.safetensors.index.json promises, so a missing shard is reported
    by name instead of surfacing later as a missing tensor."""
    index = src_dir / "model.safetensors.index.json"
    if not index.is_file():
        return None
    try:
        weight_map = json.loads(index.read_text(encoding="utf-8")).get("weight_map", {})
    except ValueError as e:
        raise ConversionError(f"model.safetensors.index.json is not valid JSON: {e}") from None
    return {str(v) for v in weight_map.values()}


def index_weights(src_dir: pathlib.Path) -> dict[str, TensorRef]:
    """Every tensor in the directory's top-level *.safetensors files, by name.

    Only the top level: sentence-transformers keeps extra heads (2_Dense/...) in subfolders,
    and those are not part of the base model.
    """
    files = sorted(p for p in src_dir.glob("*.safetensors") if p.is_file())
    if not files:
        raise ConversionError("no *.safetensors weight files found in the model directory")
    expected = _index_shards(src_dir)
    if expected:
        missing = sorted(expected - {p.name for p in files})
        if missing:
            raise ConversionError(f"missing safetensors shard(s): {', '.join(missing)}")
    refs: dict[str, TensorRef] = {}
    for path in files:
        for ref in _read_header(path):
            if ref.name in refs:
                raise ConversionError(f"tensor {ref.name!r} appears in more than one safetensors file")
            refs[ref.name] = ref
    if not refs:
        raise ConversionError("the safetensors files contain no tensors")
    return refs


def load(ref: TensorRef) -> np.ndarray:
    """The tensor as a new float32 array (a copy, so callers may modify it)."""
    dtype = _FLOAT_DTYPES.get(ref.dtype)
    if dtype is None:
        raise ConversionError(f"tensor {ref.name!r} has non-float dtype {ref.dtype}")
    count = int(np.prod(ref.shape, dtype=np.int64))
    if count == 0:
        return np.zeros(ref.shape, dtype=np.float32)
    raw = np.memmap(ref.path, dtype=dtype, mode="r", offset=ref.start, shape=(count,))
    try:
        if ref.dtype == "BF16":
            # BF16 is the top half of an IEEE float32: shift the 16 bits into place.
            data = (raw.astype(np.uint32) << 16).view(np.float32)
        else:
            data = raw.astype(np.float32)
    finally:
        del raw
    return data.reshape(ref.shape)
