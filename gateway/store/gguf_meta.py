"""What the store and /api/tags need to know about a GGUF file, read with the gguf package."""

from __future__ import annotations

import mmap
import struct
from typing import Any

import gguf
from msgspec import Struct

from herd.protocol.api import Tensor

GGUF_MAGIC = b"GGUF"


class NotGGUF(ValueError):
    pass


class GGUFSummary(Struct):
    architecture: str
    file_type: str
    parameter_count: int
    context_length: int
    pooling: bool
    embedding_length: int = 0
    chat_template: str = ""
    vision: bool = False


_SCALARS: dict[int, str] = {
    gguf.GGUFValueType.UINT8: "<B", gguf.GGUFValueType.INT8: "<b",
    gguf.GGUFValueType.UINT16: "<H", gguf.GGUFValueType.INT16: "<h",
    gguf.GGUFValueType.UINT32: "<I", gguf.GGUFValueType.INT32: "<i",
    gguf.GGUFValueType.FLOAT32: "<f", gguf.GGUFValueType.BOOL: "<?",
    gguf.GGUFValueType.UINT64: "<Q", gguf.GGUFValueType.INT64: "<q",
    gguf.GGUFValueType.FLOAT64: "<d",
}
_MAX_ARRAY_KEPT = 64  # tokenizer arrays (262k entries) are skipped, not decoded


class GGUFCursor:
    """Reads a GGUF header (key/values, then tensor infos). gguf.GGUFReader decodes every
    tokenizer entry into numpy views, which takes ~15 s on gemma3's vocabulary; the store and
    placement need a few keys. Arrays longer than `max_kept` come back as their length."""

    def __init__(self, data: memoryview, keep_arrays: bool = False,
                 max_kept: int = _MAX_ARRAY_KEPT) -> None:
        self.data = data
        self.pos = 0
        self.keep_arrays = keep_arrays
        self.max_kept = max_kept

    def unpack(self, fmt: str) -> Any:
        (value,) = struct.unpack_from(fmt, self.data, self.pos)
        self.pos += struct.calcsize(fmt)
        return value

    def string(self) -> str:
        n = self.unpack("<Q")
        value = bytes(self.data[self.pos:self.pos + n]).decode("utf-8", "replace")
        self.pos += n
        return value

    def value(self, vtype: int) -> Any:
        if vtype == gguf.GGUFValueType.STRING:
            return self.string()
        if vtype == gguf.GGUFValueType.ARRAY:
            item_type, count = self.unpack("<I"), self.unpack("<Q")
            if count > self.max_kept and not self.keep_arrays:
                self.skip_array(item_type, count)
                return SkippedArray(count)
            return [self.value(item_type) for _ in range(count)]
        return self.unpack(_SCALARS[vtype])

    def skip_array(self, item_type: int, count: int) -> None:
        if item_type == gguf.GGUFValueType.STRING:
            for _ in range(count):
                self.pos += 8 + struct.unpack_from("<Q", self.data, self.pos)[0]
        elif item_type == gguf.GGUFValueType.ARRAY:
            for _ in range(count):
                self.value(item_type)
        else:
            self.pos += struct.calcsize(_SCALARS[item_type]) * count


class SkippedArray(int):
    """The length of an array that was too long to keep."""


def _type_name(ggml_type: int) -> str:
    try:
        return gguf.GGMLQuantizationType(ggml_type).name
    except ValueError:
        return str(ggml_type)


def read_metadata(path: str, keep_arrays: bool = False,
                  tensors: list[Tensor] | None = None) -> tuple[dict[str, Any], int]:
    """GGUF key/values (long arrays replaced by their length unless keep_arrays) and the total
    parameter count; `tensors`, when given, receives every tensor's name, type and shape."""
    with open(path, "rb") as f:
        if f.read(4) != GGUF_MAGIC:
            raise NotGGUF("supplied file was not in GGUF format")
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
            cur = GGUFCursor(memoryview(mm), keep_arrays)
            try:
                cur.pos = 4
                version = cur.unpack("<I")
                if version < 2:
                    raise NotGGUF("supplied file was not in GGUF format")
                n_tensors, n_kv = cur.unpack("<Q"), cur.unpack("<Q")
                meta: dict[str, Any] = {}
                for _ in range(n_kv):
                    key = cur.string()
                    meta[key] = cur.value(cur.unpack("<I"))
                params = 0
                for _ in range(n_tensors):
                    tensor_name = cur.string()
                    dims = [cur.unpack("<Q") for _ in range(cur.unpack("<I"))]
                    if tensors is not None:
                        tensors.append(Tensor(tensor_name, _type_name(cur.unpack("<I")),
                                                  dims))
                        cur.pos += 8  # offset
                    else:
                        cur.pos += 4 + 8  # type, offset
                    count = 1
                    for d in dims:
                        count *= d
                    params += count
            except (struct.error, KeyError, ValueError) as e:
                raise NotGGUF(f"supplied file was not in GGUF format: {e}") from e
            finally:
                cur.data.release()
    return meta, params


def file_type_name(file_type: int | None) -> str:
    if file_type is None:
        return ""
    try:
        name = gguf.LlamaFileType(file_type).name
    except ValueError:
        return str(file_type)
    return name.removeprefix("MOSTLY_").removeprefix("ALL_")


def read_summary(path: str) -> GGUFSummary:
    meta, params = read_metadata(path)
    arch = str(meta.get("general.architecture", ""))
    declared = meta.get("general.parameter_count")
    ctx = meta.get(f"{arch}.context_length")
    embd = meta.get(f"{arch}.embedding_length")
    file_type = meta.get("general.file_type")
    return GGUFSummary(
        architecture=arch,
        file_type=file_type_name(file_type if isinstance(file_type, int) else None),
        parameter_count=declared if isinstance(declared, int) and declared > 0 else params,
        context_length=int(ctx) if isinstance(ctx, int) else 0,
        pooling=f"{arch}.pooling_type" in meta,
        embedding_length=int(embd) if isinstance(embd, int) else 0,
        chat_template=str(meta.get("tokenizer.chat_template", "")),
        vision=any(key.endswith("vision.block_count") for key in meta),
    )


def format_parameter_size(count: int) -> str:
    """Ollama's format.HumanNumber: 7B, 3.2B, 8M, 268.10M, 8K."""
    for unit, scale, decimals in (("B", 1e9, 1), ("M", 1e6, 2), ("K", 1e3, 0)):
        if count >= scale:
            value = count / scale
            if value == int(value):
                return f"{int(value)}{unit}"
            return f"{value:.{decimals}f}{unit}"
    return str(count)
