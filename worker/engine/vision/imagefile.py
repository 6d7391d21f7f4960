"""Image bytes → RGB pixels, before libmtmd sees them: the format from the signature, the size
from the header, then Pillow decodes. The gateway uses the same checks for its 400s, so a bad
image is refused before a runner is even loaded."""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass

import numpy as np

# Pixels one image may have before it is decoded (width × height); a bigger one is a 400.
DEFAULT_MAX_PIXELS = 64 * 1024 * 1024

_SIGNATURES: tuple[tuple[bytes, int, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", 0, "png"),
    (b"\xff\xd8\xff", 0, "jpeg"),
    (b"GIF87a", 0, "gif"),
    (b"GIF89a", 0, "gif"),
    (b"BM", 0, "bmp"),
)


def image_format(data: bytes) -> str | None:
    """"png", "jpeg", "webp", "gif", "bmp" from the leading bytes; None for anything else."""
    for magic, offset, name in _SIGNATURES:
        if data[offset:offset + len(magic)] == magic:
            return name
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    return None


class ImageError(ValueError):
    """An image that cannot be read; the message names it. The gateway answers 400 with it."""

    status = 400


@dataclass(eq=False)
class Image:
    """Decoded RGB pixels of one image (a bitmap not yet handed to libmtmd)."""

    width: int
    height: int
    rgb: bytes  # width × height × 3
    id: str
    name: str = "image"


def read_image(data: bytes, name: str = "image", *,
               max_pixels: int = DEFAULT_MAX_PIXELS) -> Image:
    """Decodes PNG, JPEG, WebP, GIF (first frame) or BMP bytes into RGB pixels.

    Raises ImageError naming `name` for bytes that are no image, a damaged image, or one with
    more than `max_pixels` pixels (checked from the header, before decoding)."""
    fmt = image_format(data)
    if fmt is None:
        raise ImageError(f"{name}: unsupported image format (PNG, JPEG or WebP expected)")
    from PIL import Image as PILImage

    try:
        with PILImage.open(io.BytesIO(data), formats=[fmt.upper()]) as im:
            w, h = im.size
            if w <= 0 or h <= 0:
                raise ImageError(f"{name}: image has no pixels")
            if w * h > max_pixels:
                raise ImageError(f"{name}: image is {w}x{h}, more than {max_pixels} pixels")
            im.load()
            if im.mode in ("I", "I;16", "I;16B", "I;16L"):
                # 16-bit greyscale PNG: Pillow's convert clips it to 255 (all white); scale it to
                # 8 bits as stb_image does.
                grey = (np.asarray(im, dtype=np.uint32) >> 8).astype(np.uint8)
                rgb = PILImage.fromarray(grey, "L").convert("RGB")
            else:
                rgb = im.convert("RGB")
    except ImageError:
        raise
    except (OSError, ValueError, SyntaxError, PILImage.DecompressionBombError) as e:
        raise ImageError(f"{name}: failed to decode the {fmt.upper()} image ({e})") from None
    return Image(w, h, rgb.tobytes(), hashlib.sha256(data).hexdigest(), name)
