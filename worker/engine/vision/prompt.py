"""Prompts that hold images: tagged as Ollama tags them, tokenized through the projector into KV
cells, and encoded — all on the projector's own thread, off the engine's step loop.

A prompt becomes a list of cell keys, one per KV position: a text token is its id, an image
position is ("img", sha256 of the image, i). The engine's KV-prefix reuse compares these keys,
so the same image in the next turn of a chat is reused like text, and a prefix that ends inside
an image is cut back to the image's start.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import msgspec
import numpy as np

from herd.protocol.wire import ChatTurn, Submit
from herd.worker.engine.vision.imagefile import Image, read_image
from herd.worker.engine.prompt import PromptBuilder, RequestError
from herd.worker.engine.vision.projector import ImageChunk, Projector, ProjectorError, TextChunk

Cell = int | tuple[str, str, int]

# Images one request may carry; more is a 400 (each costs an encode and its KV positions).
MAX_IMAGES = 32
_EMBEDDINGS_CACHED = 16  # recently encoded images, by content hash (a chat resends its images)


def has_images(req: Submit) -> bool:
    return bool(req.images) or any(turn.images for turn in req.messages)


def tag_turns(turns: list[ChatTurn]) -> tuple[list[ChatTurn], list[bytes]]:
    """Ollama's imageTaggedMessages (server/prompt.go): each image becomes [img-N], numbered
    across the messages, put in place of the user's own [img] or else before the text."""
    out: list[ChatTurn] = []
    images: list[bytes] = []
    for turn in turns:
        if not turn.images:
            out.append(turn)
            continue
        prefix, content = "", turn.content
        for data in turn.images:
            tag = f"[img-{len(images)}]"
            images.append(data)
            if "[img]" in content:
                content = content.replace("[img]", tag, 1)
            else:
                prefix += tag
        out.append(msgspec.structs.replace(turn, content=prefix + content, images=[]))
    return out, images


def tag_raw(prompt: str, images: list[bytes]) -> str:
    """A raw prompt places its images with [img-N] itself; untagged ones go before it."""
    missing = "".join(f"[img-{i}]" for i in range(len(images)) if f"[img-{i}]" not in prompt)
    return missing + prompt


def split_tagged(text: str, n_images: int) -> list[str | int]:
    """The rendered prompt as text pieces and image indexes: the first [img-N] of each image
    (llama_server.go replaces one occurrence per image); other text stays text."""
    places: list[tuple[int, int, int]] = []
    for i in range(n_images):
        at = text.find(f"[img-{i}]")
        if at < 0:
            raise RequestError(f"the template dropped image {i + 1} from the prompt")
        places.append((at, at + len(f"[img-{i}]"), i))
    parts: list[str | int] = []
    pos = 0
    for start, end, i in sorted(places):
        parts += [text[pos:start], i]
        pos = end
    parts.append(text[pos:])
    return parts


@dataclass(eq=False)
class ImageSpan:
    """An image's cells in a prompt: positions start … start + n − 1, and its embeddings."""

    start: int
    chunk: ImageChunk
    embd: np.ndarray | None = None

    @property
    def end(self) -> int:
        return self.start + self.chunk.n_pos

    @property
    def id(self) -> str:
        return self.chunk.id


@dataclass(eq=False)
class VisionPrompt:
    text: str
    cells: list[Cell]
    spans: list[ImageSpan]


class VisionWorker:
    """One projector and the single thread that tokenizes and encodes for it."""

    def __init__(self, projector: Projector, prompts: PromptBuilder) -> None:
        self.projector = projector
        self.prompts = prompts
        self.non_causal = projector.non_causal
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="herd-vision")
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
        self.projector.close()

    def submit(self, req: Submit, n_ubatch: int) -> Future[VisionPrompt]:
        return self._pool.submit(self.build, req, n_ubatch)

    def render(self, req: Submit) -> str:
        """The prompt text with its [img-N] tags (render_only asks for just this)."""
        if req.raw_prompt is not None:
            return tag_raw(req.raw_prompt, req.images)
        turns, _ = tag_turns(req.messages)
        return self.prompts.render(req, turns)[0]

    # -- on the projector's thread -----------------------------------------------------

    def build(self, req: Submit, n_ubatch: int) -> VisionPrompt:
        images = req.images if req.raw_prompt is not None else [
            data for turn in req.messages for data in turn.images]
        if len(images) > MAX_IMAGES:
            raise RequestError(f"too many images: {len(images)} (at most {MAX_IMAGES})")
        decoded = [read_image(data, f"image {i + 1}", max_pixels=self.projector.max_pixels)
                   for i, data in enumerate(images)]
        by_bytes = dict(zip(map(id, images), decoded))
        prompt = self._tokenized(req, req.messages, by_bytes)
        limit = self.prompts.n_ctx_seq
        if (len(prompt.cells) >= limit and req.truncate and req.raw_prompt is None
                and not req.suffix):
            prompt = self._drop_oldest(req, limit, prompt, by_bytes)
        if len(prompt.cells) >= limit:
            if not req.truncate:
                raise RequestError("the input length exceeds the context length")
            prompt = _cut(prompt, min(max(req.sampling.num_keep, 0), limit // 2), limit)
        if not prompt.cells or isinstance(prompt.cells[-1], tuple):
            raise RequestError("the prompt must not end with an image")
        for span in prompt.spans:
            if self.non_causal and span.chunk.n_tokens > n_ubatch:
                raise RequestError(f"an image of {span.chunk.n_tokens} tokens does not fit the "
                                   f"batch of {n_ubatch}: raise num_batch")
            span.embd = self._embeddings(span.chunk)
        return prompt

    def _tokenized(self, req: Submit, turns: list[ChatTurn],
                   by_bytes: dict[int, Image]) -> VisionPrompt:
        if req.raw_prompt is not None:
            images, text, with_bos = req.images, tag_raw(req.raw_prompt, req.images), not req.context
        else:
            tagged, images = tag_turns(turns)
            text, with_bos = self.prompts.render(req, tagged)
        parts: list[str | Image] = [p if isinstance(p, str) else by_bytes[id(images[p])]
                                    for p in split_tagged(text, len(images))]
        model = self.prompts.model
        try:
            chunks = self.projector.tokenize_parts(parts, add_special=False)
        except ProjectorError as e:
            raise RequestError(str(e)) from e
        cells: list[Cell] = list(req.context)
        if with_bos and model.add_bos and (not cells or cells[0] != model.bos):
            cells.insert(0, model.bos)
        spans: list[ImageSpan] = []
        for chunk in chunks:
            if isinstance(chunk, TextChunk):
                cells += chunk.tokens
            else:
                spans.append(ImageSpan(len(cells), chunk))
                cells += [("img", chunk.id, i) for i in range(chunk.n_pos)]
        return VisionPrompt(text, cells, spans)

    def _drop_oldest(self, req: Submit, limit: int, prompt: VisionPrompt,
                     by_bytes: dict[int, Image]) -> VisionPrompt:
        """The fewest oldest non-system messages dropped (never the last one) for the prompt
        to fit, by bisection as PromptBuilder does; image numbers restart from the first kept
        message, as in Ollama's chatPrompt."""
        droppable = [i for i, t in enumerate(req.messages[:-1]) if t.role != "system"]

        def without(n: int) -> VisionPrompt:
            gone = set(droppable[:n])
            return self._tokenized(req, [t for i, t in enumerate(req.messages) if i not in gone],
                                   by_bytes)

        best = prompt
        low, high = 1, len(droppable)
        while low <= high:
            mid = (low + high) // 2
            candidate = without(mid)
            if len(candidate.cells) < limit:
                best, high = candidate, mid - 1
            else:
                low = mid + 1
        if len(best.cells) >= limit and droppable:
            best = without(len(droppable))
        return best

    def _embeddings(self, chunk: ImageChunk) -> np.ndarray:
        with self._lock:
            cached = self._cache.get(chunk.id)
            if cached is not None:
                self._cache.move_to_end(chunk.id)
                return cached
        try:
            embd = self.projector.encode(chunk)
        except ProjectorError as e:
            raise RequestError(str(e), status=500) from e
        with self._lock:
            self._cache[chunk.id] = embd
            while len(self._cache) > _EMBEDDINGS_CACHED:
                self._cache.popitem(last=False)
        return embd


def _cut(prompt: VisionPrompt, keep: int, limit: int) -> VisionPrompt:
    """The first `keep` cells and the newest tail, leaving room to answer, as PromptBuilder
    cuts text; a cut never falls inside an image (the image goes whole or stays whole)."""
    cells = prompt.cells
    head, tail = keep, len(cells) - max(limit * 3 // 4 - keep, 1)
    for span in prompt.spans:
        if span.start < head < span.end:
            head = span.start
        if span.start < tail < span.end:
            tail = span.end
    spans = [span for span in prompt.spans if span.end <= head]
    spans += [ImageSpan(span.start - tail + head, span.chunk, span.embd)
              for span in prompt.spans if span.start >= tail]
    return VisionPrompt(prompt.text, cells[:head] + cells[tail:], spans)

