"""Images for vision models through libmtmd (llama_cpp.mtmd_cpp, llama-cpp-python 0.3.36).

A `Projector` is one mtmd context (the projector GGUF, "mmproj") on top of a loaded text model.
It reads image bytes into bitmaps, splits a prompt that holds images into chunks (text tokens and
image chunks), and encodes an image chunk into rows of text-model embeddings. `EmbeddingBatch`
decodes such rows, for one or several sequences, in one llama_decode call.

Pitfalls measured on this wheel (see also ../shared/vision.md):
- Every image is decoded with Pillow and handed over as RGB pixels (mtmd_bitmap_init).
  mtmd_helper_bitmap_init_from_buf falls through to ffprobe (a subprocess) on any buffer its
  stb_image cannot decode, and that includes a truncated PNG or JPEG with a good signature; it
  cannot read WebP at all. For PNG the pixels are the same bytes stb_image gives (tested).
- A projector without `clip.projector_type` does not load ("unknown projector type"): old llava
  projectors must be given "mlp" before llama.cpp sees them (Ollama patches them the same way).
- Chunks belong to their mtmd_input_chunks list; an ImageChunk holds its own copy
  (mtmd_input_chunk_copy, which keeps the preprocessed pixels) so it outlives the list and can
  be encoded later, on another thread.
- mtmd_get_output_embd points into the context's own buffer, overwritten by the next encode:
  it is copied out at once.
"""

from __future__ import annotations

import ctypes
import threading
from dataclasses import dataclass, field
from collections.abc import Callable
from typing import Any, Sequence, Union

import llama_cpp as L
import llama_cpp.mtmd_cpp as M
import numpy as np

from herd.worker.engine.vision.imagefile import (DEFAULT_MAX_PIXELS, Image, ImageError, image_format,
                                          read_image)
from herd.worker.engine.llama import LlamaContext, LlamaModel

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "EmbeddingBatch",
    "Image",
    "ImageChunk",
    "ImageError",
    "Projector",
    "ProjectorError",
    "TextChunk",
    "image_format",
    "read_image",
]

class ProjectorError(RuntimeError):
    """A projector that cannot be loaded or used with this text model."""


_logs_routed = False


def _route_logs() -> None:
    # mtmd and clip log through their own callbacks; give them llama-cpp-python's, which obeys
    # the same verbosity switch the text model's logs do (herd.worker.engine.llama._quiet_llama_logs).
    global _logs_routed
    if _logs_routed:
        return
    try:
        from llama_cpp import _logger

        M.mtmd_log_set(_logger.llama_log_callback, ctypes.c_void_p(0))
        M.mtmd_helper_log_set(_logger.llama_log_callback, ctypes.c_void_p(0))
    except (ImportError, AttributeError):
        pass
    _logs_routed = True


@dataclass(eq=False)
class TextChunk:
    tokens: list[int]


@dataclass(eq=False)
class ImageChunk:
    """One image in a tokenized prompt: `n_tokens` embedding rows occupying `n_pos` positions.

    `id` is the sha256 of the image's bytes (hex): the same image always has the same id, so it
    keys both the KV-prefix reuse and an embeddings cache."""

    n_tokens: int
    n_pos: int
    id: str
    ptr: int | None = field(default=None, repr=False)  # an owned mtmd_input_chunk copy

    def close(self) -> None:
        if self.ptr:
            M.mtmd_input_chunk_free(self.ptr)
            self.ptr = None

    def __del__(self) -> None:
        self.close()


Chunk = Union[TextChunk, ImageChunk]



class _Bitmap:
    """An owned mtmd_bitmap."""

    def __init__(self, image: Image) -> None:
        buf = (ctypes.c_uint8 * len(image.rgb)).from_buffer_copy(image.rgb)
        self.ptr = M.mtmd_bitmap_init(image.width, image.height, buf)
        if not self.ptr:
            raise ImageError(f"{image.name}: libmtmd refused the bitmap")
        M.mtmd_bitmap_set_id(self.ptr, image.id.encode())

    def close(self) -> None:
        if self.ptr:
            M.mtmd_bitmap_free(self.ptr)
            self.ptr = None


class Projector:
    """A projector GGUF loaded for a text model. One thread at a time may call its methods
    (one worker thread per projector); they hold a lock, so a second thread waits."""

    def __init__(self, model: LlamaModel, path: str, *, n_threads: int = 0,
                 use_gpu: bool = False, flash_attention: str = "auto", warmup: bool = True,
                 max_pixels: int = DEFAULT_MAX_PIXELS) -> None:
        _route_logs()
        params = M.mtmd_context_params_default()
        params.use_gpu = use_gpu
        params.print_timings = False
        params.warmup = warmup
        params.flash_attn_type = {"auto": -1, "off": 0, "on": 1}[flash_attention]
        if n_threads > 0:
            params.n_threads = n_threads
        self.path = path
        self.model = model
        self.max_pixels = max_pixels
        self._lock = threading.Lock()
        self.ptr = M.mtmd_init_from_file(path.encode(), model.ptr, params)
        if not self.ptr:
            raise ProjectorError(f"unable to load projector: {path}")
        if not M.mtmd_support_vision(self.ptr):
            self.close()
            raise ProjectorError(f"projector has no vision encoder: {path}")
        if M.mtmd_decode_use_mrope(self.ptr):
            self.close()
            raise ProjectorError(
                "this model places image tokens with M-RoPE (Qwen2-VL family), "
                "which Herd does not support")
        # Rows of one image embedding: the text model's input width.
        self.n_embd = int(L.llama_model_n_embd_inp(model.ptr))
        self.marker = (M.mtmd_get_marker(self.ptr) or M.mtmd_default_marker()).decode()
        # gemma3-style projectors: an image attends to itself both ways, so it is decoded with
        # causal attention off, whole within one ubatch, one image per llama_decode.
        self.non_causal = bool(M.mtmd_decode_use_non_causal(self.ptr, None))

    def close(self) -> None:
        if getattr(self, "ptr", None):
            M.mtmd_free(self.ptr)
            self.ptr = None

    def __enter__(self) -> Projector:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- prompts --------------------------------------------------------------------------

    def read(self, data: bytes, name: str = "image") -> Image:
        return read_image(data, name, max_pixels=self.max_pixels)

    def tokenize(self, text: str, images: Sequence[bytes | Image], *,
                 add_special: bool = True, parse_special: bool = True) -> list[Chunk]:
        """Splits `text`, where each image stands as `self.marker`, into chunks. Images are bytes
        (read here, named "image N" from 1) or Images already read. The projector's own text
        around an image (gemma3's <start_of_image> … <end_of_image>) comes as text chunks."""
        if text.count(self.marker) != len(images):
            raise ImageError(f"the prompt has {text.count(self.marker)} image markers for "
                             f"{len(images)} images")
        decoded = [im if isinstance(im, Image) else self.read(im, f"image {i + 1}")
                   for i, im in enumerate(images)]
        bitmaps = [_Bitmap(im) for im in decoded]
        try:
            data = text.encode("utf-8")
            inp = M.mtmd_input_text(data, len(data), add_special, parse_special)
            arr = (M.mtmd_bitmap_p_ctypes * max(len(bitmaps), 1))(*(b.ptr for b in bitmaps))
            return self._tokenized(lambda chunks: M.mtmd_tokenize(
                self.ptr, chunks, ctypes.byref(inp), arr, len(bitmaps)))
        finally:
            for b in bitmaps:
                b.close()

    def _tokenized(self, tokenize: Callable[[Any], int]) -> list[Chunk]:
        """Runs one of mtmd's tokenizers into a fresh chunk list and copies the chunks out."""
        chunks = M.mtmd_input_chunks_init()
        try:
            with self._lock:
                rc = tokenize(chunks)
            if rc == 1:
                raise ImageError("the number of images does not match the prompt's markers")
            if rc != 0:
                raise ImageError(f"failed to preprocess the images (mtmd_tokenize: {rc})")
            return self._collect(chunks)
        finally:
            M.mtmd_input_chunks_free(chunks)

    def tokenize_parts(self, parts: Sequence[str | bytes | Image], *,
                       add_special: bool = True, parse_special: bool = True) -> list[Chunk]:
        """Like tokenize, but from a list of text pieces and images: no marker in the text, so a
        user who writes the marker string gets it as plain text. bytes are read as images."""
        texts: list[M.mtmd_input_text] = []
        keep: list[object] = []
        bitmaps: list[_Bitmap] = []
        structs: list[M.mtmd_input_part] = []
        n_image = 0
        try:
            for part in parts:
                if isinstance(part, str):
                    data = part.encode("utf-8")
                    keep.append(data)
                    t = M.mtmd_input_text(data, len(data), add_special, parse_special)
                    texts.append(t)
                    structs.append(M.mtmd_input_part(ctypes.pointer(t), None))
                else:
                    n_image += 1
                    im = part if isinstance(part, Image) else self.read(part, f"image {n_image}")
                    bmp = _Bitmap(im)
                    bitmaps.append(bmp)
                    structs.append(M.mtmd_input_part(None, bmp.ptr))
            ptrs = (ctypes.POINTER(M.mtmd_input_part) * max(len(structs), 1))(
                *(ctypes.pointer(s) for s in structs))
            return self._tokenized(lambda chunks: M.mtmd_tokenize_from_parts(
                self.ptr, chunks, ptrs, len(structs), add_special))
        finally:
            for b in bitmaps:
                b.close()

    @staticmethod
    def _collect(chunks) -> list[Chunk]:
        out: list[Chunk] = []
        for i in range(M.mtmd_input_chunks_size(chunks)):
            c = M.mtmd_input_chunks_get(chunks, i)
            kind = M.mtmd_input_chunk_get_type(c)
            if kind == M.MTMD_INPUT_CHUNK_TYPE_TEXT:
                n = ctypes.c_size_t()
                toks = M.mtmd_input_chunk_get_tokens_text(c, ctypes.byref(n))
                tokens = list(toks[:n.value]) if n.value else []
                if out and isinstance(out[-1], TextChunk):
                    out[-1].tokens.extend(tokens)
                elif tokens:
                    out.append(TextChunk(tokens))
            elif kind == M.MTMD_INPUT_CHUNK_TYPE_IMAGE:
                raw_id = M.mtmd_input_chunk_get_id(c)
                owned = M.mtmd_input_chunk_copy(c)
                if not owned:
                    raise MemoryError("mtmd_input_chunk_copy failed")
                out.append(ImageChunk(int(M.mtmd_input_chunk_get_n_tokens(c)),
                                      int(M.mtmd_input_chunk_get_n_pos(c)),
                                      raw_id.decode() if raw_id else "", owned))
            else:
                for done in out:
                    if isinstance(done, ImageChunk):
                        done.close()
                raise ImageError("audio input is not supported")
        return out

    # -- encoding -------------------------------------------------------------------------

    def encode(self, chunk: ImageChunk) -> np.ndarray:
        """The image's embeddings: float32 rows, shape (n_tokens, n_embd). Safe to call from a
        worker thread while another thread decodes on the text model's context."""
        if not chunk.ptr:
            raise ValueError("image chunk already closed")
        with self._lock:
            rc = M.mtmd_encode_chunk(self.ptr, chunk.ptr)
            if rc != 0:
                raise ProjectorError(f"failed to encode the image (mtmd_encode_chunk: {rc})")
            out = M.mtmd_get_output_embd(self.ptr)
            if not out:
                raise ProjectorError("the projector produced no embeddings")
            flat = np.ctypeslib.as_array(out, shape=(chunk.n_tokens * self.n_embd,))
            return flat.reshape(chunk.n_tokens, self.n_embd).copy()


class EmbeddingBatch:
    """A llama_batch carrying embedding rows (batch.embd) instead of token ids.

    llama.cpp refuses a batch that mixes the two, so an image is decoded in its own
    llama_decode; one call may hold rows of several sequences, each row with its own seq_id and
    position."""

    def __init__(self, ctx: LlamaContext, n_embd: int, capacity: int | None = None) -> None:
        self.ctx = ctx
        self.n_embd = n_embd
        self.capacity = capacity or ctx.n_batch
        self.n_ubatch = int(L.llama_n_ubatch(ctx.ptr))
        self._batch = L.llama_batch_init(self.capacity, n_embd, 1)

    def close(self) -> None:
        if self._batch is not None:
            L.llama_batch_free(self._batch)
            self._batch = None

    def decode(self, rows: Sequence[tuple[int, int, np.ndarray]], *,
               non_causal: bool = False, logits_last: bool = False) -> int:
        """Decodes `rows`: (seq_id, first position, embeddings[n, n_embd]) per sequence, in one
        llama_decode. Positions run first, first+1, … (no M-RoPE). No logits are computed
        unless `logits_last`, which asks for the last row of each sequence. Non-causal images
        must come one per call and fit one ubatch. Returns llama_decode's status (0 = done)."""
        total = sum(len(e) for _, _, e in rows)
        if total == 0:
            return 0
        if total > self.capacity:
            raise ValueError(f"{total} embedding rows exceed the batch capacity {self.capacity}")
        if non_causal and (len(rows) != 1 or total > self.n_ubatch):
            raise ValueError("a non-causal image is decoded alone and whole within n_ubatch "
                             f"({self.n_ubatch}), got {len(rows)} images of {total} rows")
        b = self._batch
        dst = np.ctypeslib.as_array(b.embd, shape=(self.capacity * self.n_embd,))
        n = 0
        for seq_id, pos0, embd in rows:
            embd = np.ascontiguousarray(embd, dtype=np.float32)
            if embd.ndim != 2 or embd.shape[1] != self.n_embd:
                raise ValueError(f"embeddings of shape {embd.shape}, want (n, {self.n_embd})")
            k = len(embd)
            dst[n * self.n_embd:(n + k) * self.n_embd] = embd.reshape(-1)
            for i in range(k):
                b.pos[n + i] = pos0 + i
                b.n_seq_id[n + i] = 1
                b.seq_id[n + i][0] = seq_id
                b.logits[n + i] = logits_last and i == k - 1
            n += k
        b.n_tokens = n
        if non_causal:
            L.llama_set_causal_attn(self.ctx.ptr, False)
        try:
            return int(L.llama_decode(self.ctx.ptr, b))
        finally:
            if non_causal:
                L.llama_set_causal_attn(self.ctx.ptr, True)
