"""Tiny random-weight projector (mmproj) GGUFs and images built in code.

The projector matches a text model written by tiny_models.write_tiny_llama: its
``projection_dim`` is the text model's ``n_embd``. llama.cpp's clip loader accepts it (the key
and tensor set is the one ../shared/vision.md measured); it loads in milliseconds and turns a
16×16 image into 16 (mlp) or 4 (gemma3) image tokens.

PNGs are written with zlib alone; JPEG and WebP need Pillow.
"""

from __future__ import annotations

import io
import pathlib
import struct
import zlib

import numpy as np
from gguf import GGUFWriter

__all__ = [
    "RED", "GREEN", "BLUE",
    "write_tiny_projector",
    "png_bytes", "solid_png", "gradient_png",
    "jpeg_bytes", "webp_bytes",
]

RED = (255, 0, 0)
GREEN = (0, 255, 0)
BLUE = (0, 0, 255)


def write_tiny_projector(
    path: pathlib.Path,
    *,
    projector_type: str | None = "mlp",
    text_embd: int = 64,
    seed: int = 0,
    image_size: int = 16,
    patch_size: int = 4,
    width: int = 32,
    block_count: int = 1,
    head_count: int = 4,
    hidden: int = 64,
    scale_factor: int = 2,
    weight_std: float = 0.2,
    general_type: bool = True,
) -> pathlib.Path:
    """Write a random-weight CLIP-style projector GGUF and return its path.

    ``projector_type`` is "mlp" (llava-style, causal) or "gemma3" (non-causal, pools
    ``scale_factor``² patches into one token); None writes no ``clip.projector_type`` key at all,
    like old llava projectors (llama.cpp then assumes mlp). ``text_embd`` must be the text
    model's ``n_embd``. ``general_type`` adds ``general.type = "mmproj"`` as
    convert_hf_to_gguf writes it.
    """
    if projector_type not in ("mlp", "gemma3", None):
        raise ValueError(f"unsupported projector type {projector_type!r}")
    if image_size % patch_size:
        raise ValueError("image_size must be a multiple of patch_size")
    path = pathlib.Path(path)
    rng = np.random.default_rng(seed)
    E, P, F, H, T = width, patch_size, 2 * width, hidden, text_embd
    N = (image_size // patch_size) ** 2

    def mat(*shape: int) -> np.ndarray:
        return rng.normal(0.0, weight_std, size=shape).astype(np.float32)

    def ones(n: int) -> np.ndarray:
        return np.ones(n, dtype=np.float32)

    def zeros(n: int) -> np.ndarray:
        return np.zeros(n, dtype=np.float32)

    w = GGUFWriter(str(path), "clip")
    if general_type:
        w.add_type("mmproj")
    w.add_name(f"tiny-{projector_type or 'llava'}-projector")
    w.add_bool("clip.has_vision_encoder", True)
    w.add_bool("clip.has_text_encoder", False)
    if projector_type is not None:
        w.add_string("clip.projector_type", projector_type)
    w.add_bool("clip.use_gelu", True)
    w.add_uint32("clip.vision.image_size", image_size)
    w.add_uint32("clip.vision.patch_size", patch_size)
    w.add_uint32("clip.vision.embedding_length", E)
    w.add_uint32("clip.vision.feed_forward_length", F)
    w.add_uint32("clip.vision.block_count", block_count)
    w.add_uint32("clip.vision.projection_dim", T)
    w.add_uint32("clip.vision.attention.head_count", head_count)
    w.add_float32("clip.vision.attention.layer_norm_epsilon", 1e-6)
    w.add_array("clip.vision.image_mean", [0.5, 0.5, 0.5])
    w.add_array("clip.vision.image_std", [0.5, 0.5, 0.5])
    if projector_type == "gemma3":
        w.add_uint32("clip.vision.projector.scale_factor", scale_factor)

    # numpy shapes: ggml's ne reversed.
    w.add_tensor("v.patch_embd.weight", mat(E, 3, P, P))
    w.add_tensor("v.patch_embd.bias", mat(E))
    w.add_tensor("v.position_embd.weight", mat(N, E))
    for i in range(block_count):
        b = f"v.blk.{i}"
        for name in ("attn_q", "attn_k", "attn_v", "attn_out"):
            w.add_tensor(f"{b}.{name}.weight", mat(E, E))
            w.add_tensor(f"{b}.{name}.bias", mat(E))
        for name in ("ln1", "ln2"):
            w.add_tensor(f"{b}.{name}.weight", ones(E))
            w.add_tensor(f"{b}.{name}.bias", zeros(E))
        w.add_tensor(f"{b}.ffn_up.weight", mat(F, E))
        w.add_tensor(f"{b}.ffn_up.bias", mat(F))
        w.add_tensor(f"{b}.ffn_down.weight", mat(E, F))
        w.add_tensor(f"{b}.ffn_down.bias", mat(E))
    if projector_type == "gemma3":
        w.add_tensor("v.post_ln.weight", ones(E))
        w.add_tensor("v.post_ln.bias", zeros(E))
        w.add_tensor("mm.soft_emb_norm.weight", ones(E))
        w.add_tensor("mm.input_projection.weight", mat(E, T))
    else:
        w.add_tensor("mm.0.weight", mat(H, E))
        w.add_tensor("mm.0.bias", mat(H))
        w.add_tensor("mm.2.weight", mat(T, H))
        w.add_tensor("mm.2.bias", mat(T))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


# -- images ----------------------------------------------------------------------------------

def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_bytes(pixels: np.ndarray) -> bytes:
    """A PNG of ``pixels``, written with zlib: h×w (grey), h×w×2 (grey+alpha), h×w×3 (RGB) or
    h×w×4 (RGBA); uint8 gives 8-bit samples, uint16 16-bit ones."""
    pixels = np.asarray(pixels)
    depth = 16 if pixels.dtype == np.uint16 else 8
    pixels = pixels.astype(">u2" if depth == 16 else np.uint8)
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    h, w, c = pixels.shape
    color = {1: 0, 2: 4, 3: 2, 4: 6}[c]
    raw = b"".join(b"\x00" + pixels[y].tobytes() for y in range(h))  # filter type 0 per row
    return (b"\x89PNG\r\n\x1a\n"
            + _chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, depth, color, 0, 0, 0))
            + _chunk(b"IDAT", zlib.compress(raw, 9))
            + _chunk(b"IEND", b""))


def solid_png(rgb: tuple[int, int, int], size: int = 16) -> bytes:
    return png_bytes(np.broadcast_to(np.array(rgb, dtype=np.uint8), (size, size, 3)))


def gradient_png(size: int = 16, seed: int = 0) -> bytes:
    """A deterministic noisy gradient: detail at every patch, unlike a solid colour."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size]
    base = np.stack([x * 255 // max(size - 1, 1), y * 255 // max(size - 1, 1),
                     (x + y) * 127 // max(size - 1, 1)], axis=-1)
    noise = rng.integers(0, 32, size=(size, size, 3))
    return png_bytes(np.clip(base + noise, 0, 255).astype(np.uint8))


def _pillow(png: bytes, fmt: str, **options) -> bytes:
    from PIL import Image

    out = io.BytesIO()
    with Image.open(io.BytesIO(png)) as im:
        im.convert("RGB").save(out, format=fmt, **options)
    return out.getvalue()


def jpeg_bytes(png: bytes, quality: int = 95) -> bytes:
    return _pillow(png, "JPEG", quality=quality)


def webp_bytes(png: bytes, lossless: bool = True) -> bytes:
    return _pillow(png, "WEBP", lossless=lossless)
