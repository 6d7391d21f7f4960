"""Projector (mmproj) GGUF files: recognising one, and giving old llava projectors the
`clip.projector_type` key llama.cpp's clip loader needs ("unknown projector type" otherwise).

Ollama recognises a projector at create by `general.type` or `clip.has_vision_encoder`
(server/create.go isProjectorGGUF) and writes "mlp" into those that lack the key
(server/quantization.go addDefaultLlavaProjectorType). Herd does the same at create, and at load
for projectors already in a store or pulled from a registry, through a patched copy.
"""

from __future__ import annotations

import os
import struct
import tempfile

import gguf

_STRING = int(gguf.GGUFValueType.STRING)


def _field(reader: gguf.GGUFReader, key: str):
    f = reader.fields.get(key)
    if f is None or not f.types:
        return None
    if f.types[0] == gguf.GGUFValueType.STRING:
        return bytes(f.parts[f.data[0]]).decode("utf-8", "replace")
    return f.parts[f.data[0]][0] if f.data else None


def is_projector(meta: dict) -> bool:
    """From a GGUF's key/values (herd.gateway.store.gguf_meta.read_metadata's dict)."""
    if meta.get("general.type") in ("projector", "mmproj"):
        return True
    arch = meta.get("general.architecture", "")
    if not meta.get(f"{arch}.block_count") and meta.get(f"{arch}.vision.block_count"):
        return True
    return arch == "clip" and bool(meta.get("clip.has_vision_encoder")
                                   or meta.get("clip.has_audio_encoder"))


def needs_projector_type(meta: dict) -> bool:
    return (meta.get("general.architecture") == "clip" and bool(meta.get("clip.has_vision_encoder"))
            and "clip.projector_type" not in meta and "clip.vision.projector_type" not in meta)


def write_with_projector_type(src: str, dst: str, projector_type: str = "mlp") -> None:
    """Copies `src` to `dst` with one more key: the header is rewritten, the tensor data is
    copied byte for byte (tensor offsets are relative to the data section)."""
    reader = gguf.GGUFReader(src)
    kv_start = 4 + 4 + 8 + 8
    n_tensors = len(reader.tensors)
    n_kv = int(reader.fields["GGUF.kv_count"].parts[0][0])
    if n_tensors:
        info_start = reader.tensors[0].field.offset
        last = reader.tensors[-1].field
        info_end = last.offset + sum(int(p.nbytes) for p in last.parts)
    else:
        info_start = info_end = reader.data_offset
    version = int(reader.fields["GGUF.version"].parts[0][0])
    align = int(getattr(reader, "alignment", 32))
    key, value = b"clip.projector_type", projector_type.encode()
    extra = (struct.pack("<Q", len(key)) + key + struct.pack("<I", _STRING)
             + struct.pack("<Q", len(value)) + value)
    del reader
    with open(src, "rb") as f:
        f.seek(kv_start)
        kvs = f.read(info_start - kv_start)
        infos = f.read(info_end - info_start)
        head = (b"GGUF" + struct.pack("<I", version) + struct.pack("<Q", n_tensors)
                + struct.pack("<Q", n_kv + 1) + kvs + extra + infos)
        head += b"\0" * (-len(head) % align)
        old_pad = -info_end % align
        f.seek(info_end + old_pad)
        fd, tmp = tempfile.mkstemp(prefix=".tmp-mmproj-", dir=os.path.dirname(dst) or ".")
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(head)
                while block := f.read(1 << 22):
                    out.write(block)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, dst)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise


def read_meta(path: str) -> dict:
    reader = gguf.GGUFReader(path)
    return {key: _field(reader, key) for key in reader.fields if not key.startswith("GGUF.")
            and key.startswith(("general.", "clip."))}


def cache_dir() -> str:
    return os.path.join(os.path.expanduser("~"), ".cache", "herd", "projectors")


def with_projector_type(path: str, folder: str) -> str:
    """`path`, or a patched copy in `folder` when the projector lacks its type."""
    if not needs_projector_type(read_meta(path)):
        return path
    os.makedirs(folder, exist_ok=True)
    st = os.stat(path)
    dst = os.path.join(folder, f"{os.path.basename(path)}-{st.st_size}-{int(st.st_mtime)}.gguf")
    if not os.path.exists(dst):
        write_with_projector_type(path, dst)
    return dst
