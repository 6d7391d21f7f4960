"""Hugging Face safetensors model directory -> one GGUF file, in-process with the gguf package.

The file is streamed: tensor infos are declared from the safetensors headers first, then each
tensor is read, fixed up and written on its own, so memory stays at about one tensor however
large the model is. Output types: F16 for matrices, F32 for 1-D tensors (norms, biases).
"""

from __future__ import annotations

import json
import logging
import os
import pathlib
from collections.abc import Callable

import gguf
import numpy as np

from herd.gateway.store.convert.archs import ARCHS, Arch, HfConfig
from herd.gateway.store.convert.errors import ConversionError
from herd.gateway.store.convert.plan import PlannedTensor, plan_tensors
from herd.gateway.store.convert.vocab import build_vocab, write_vocab
from herd.gateway.store.convert.weights import index_weights, load

__all__ = ["ConversionError", "SUPPORTED_ARCHITECTURES", "convert_safetensors"]

log = logging.getLogger("herd.convert")

SUPPORTED_ARCHITECTURES: tuple[str, ...] = tuple(ARCHS)

_F16_MAX = float(np.finfo(np.float16).max)


def _load_config(src_dir: pathlib.Path) -> HfConfig:
    if not src_dir.is_dir():
        raise ConversionError(f"model directory {src_dir} does not exist")
    path = src_dir / "config.json"
    if not path.is_file():
        raise ConversionError("missing config.json in the model directory")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise ConversionError(f"config.json is not valid JSON: {e}") from None
    if not isinstance(raw, dict):
        raise ConversionError("config.json must hold a JSON object")
    return HfConfig(raw)


def _pick_arch(cfg: HfConfig, src_dir: pathlib.Path) -> Arch:
    names = cfg.get("architectures", default=[])
    if not isinstance(names, list) or not names:
        raise ConversionError("config.json has no 'architectures' list; cannot tell the model type")
    for name in names:
        if name in ARCHS:
            return ARCHS[name](cfg, src_dir)
    raise ConversionError(
        f"unsupported architecture {', '.join(map(str, names))}; "
        f"supported: {', '.join(SUPPORTED_ARCHITECTURES)}")


def _to_output(t: PlannedTensor, data: np.ndarray) -> np.ndarray:
    if t.out_type == gguf.GGMLQuantizationType.F16:
        peak = float(np.abs(data).max()) if data.size else 0.0
        if peak > _F16_MAX:
            # Rare in released weights, but a plain cast would turn such values into inf.
            log.warning("%s: clipping values up to %.4g into float16 range", t.gguf_name, peak)
            np.clip(data, -_F16_MAX, _F16_MAX, out=data)
    return np.ascontiguousarray(data, dtype=t.np_dtype)


def _write_metadata(w: gguf.GGUFWriter, arch: Arch, cfg: HfConfig, planned: list[PlannedTensor],
                    n_vocab: int) -> None:
    w.add_type(gguf.GGUFType.MODEL)
    source = cfg.get("_name_or_path", default="")
    if isinstance(source, str) and source.strip("/"):
        w.add_name(source.rstrip("/").rsplit("/", 1)[-1])
    arch.write_hparams(w, n_vocab)
    has_f16 = any(t.out_type == gguf.GGMLQuantizationType.F16 for t in planned)
    w.add_file_type(gguf.LlamaFileType.MOSTLY_F16 if has_f16 else gguf.LlamaFileType.ALL_F32)
    w.add_quantization_version(gguf.GGML_QUANT_VERSION)


def _write_file(out: pathlib.Path, arch: Arch, cfg: HfConfig, src_dir: pathlib.Path,
                planned: list[PlannedTensor], n_vocab: int,
                progress: Callable[[str], None]) -> None:
    vocab = build_vocab(src_dir, default_pre=arch.default_pre, n_rows=n_vocab,
                        wordpiece=arch.wordpiece, type_vocab_size=arch.type_vocab_size)
    w = gguf.GGUFWriter(out, arch.name)
    try:
        _write_metadata(w, arch, cfg, planned, n_vocab)
        write_vocab(w, src_dir, vocab)
        for t in planned:
            w.add_tensor_info(t.gguf_name, t.shape, np.dtype(t.np_dtype), t.nbytes)
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_ti_data_to_file()
        extras = arch.extra_tensors()
        total = max(sum(t.nbytes for t in planned), 1)
        done, next_pct = 0, 25
        for t in planned:
            if t.ref is None:
                data = extras[t.gguf_name].astype(np.float32)
            else:
                data = arch.transform(t.hf_name, load(t.ref))
            if tuple(data.shape) != t.shape:  # a transform must never reshape: the header is written
                raise ConversionError(f"internal error: {t.gguf_name} changed shape while converting")
            w.write_tensor_data(_to_output(t, data))
            done += t.nbytes
            if (pct := done * 100 // total) >= next_pct:  # a few status lines, not one per tensor
                progress(f"converting tensors {pct}%")
                next_pct = pct // 25 * 25 + 25
        w.flush()
    finally:
        w.close()


def convert_safetensors(src_dir: pathlib.Path, out_path: pathlib.Path,
                        progress: Callable[[str], None] = lambda s: None) -> str:
    """Converts an HF model directory to one GGUF file and returns its GGUF architecture name.

    Matrices are written as F16 and 1-D tensors (norms, biases) as F32. Raises ConversionError
    with a message fit for an API client for unsupported architectures, missing files, bad
    shapes or unusable tokenizers; out_path is only created when conversion succeeds.
    """
    src_dir, out_path = pathlib.Path(src_dir), pathlib.Path(out_path)
    cfg = _load_config(src_dir)
    arch = _pick_arch(cfg, src_dir)
    refs = index_weights(src_dir)
    planned, n_vocab = plan_tensors(arch, refs)
    progress(f"converting {arch.name} model ({len(planned)} tensors)")
    partial = out_path.with_name(out_path.name + ".partial")
    try:
        _write_file(partial, arch, cfg, src_dir, planned, n_vocab, progress)
        os.replace(partial, out_path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return arch.name
