"""worker/vision.py on real llama.cpp + libmtmd, in-process, with the tiny models the suite writes:
a random-weight text model and random-weight projectors (mlp: causal, gemma3: non-causal)."""

from __future__ import annotations

import ctypes
import hashlib
import os
import pathlib
import threading

import llama_cpp as L
import llama_cpp.mtmd_cpp as M
import numpy as np
import pytest

from support.tiny_models import write_tiny_llama
from support.tiny_vision import (BLUE, GREEN, RED, gradient_png, jpeg_bytes, png_bytes, solid_png,
                         webp_bytes, write_tiny_projector)
from herd.worker.engine.llama import LlamaContext, LlamaModel
from herd.worker.engine.vision.projector import (EmbeddingBatch, Image, ImageChunk, ImageError, Projector,
                           ProjectorError, TextChunk, image_format, read_image)

N_BATCH = 64
KINDS = ["mlp", "gemma3"]


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, pathlib.Path]:
    d = tmp_path_factory.mktemp("vision")
    out = {"text": write_tiny_llama(d / "tiny.gguf", seed=0, embedding_length=64)}
    for kind in KINDS:
        out[kind] = write_tiny_projector(d / f"mmproj-{kind}.gguf", projector_type=kind,
                                         text_embd=64, seed=1)
    return out


@pytest.fixture(scope="module")
def model(files):
    m = LlamaModel(str(files["text"]), n_gpu_layers=0)
    yield m
    m.close()


@pytest.fixture(scope="module")
def ctx(model):
    c = LlamaContext(model, n_ctx_seq=128, n_seq=2, n_batch=N_BATCH, n_threads=2)
    yield c
    c.close()


@pytest.fixture(scope="module")
def projectors(model, files):
    ps = {kind: Projector(model, str(files[kind]), n_threads=2) for kind in KINDS}
    yield ps
    for p in ps.values():
        p.close()


@pytest.fixture
def fresh(ctx):
    L.llama_memory_clear(ctx.memory, True)
    return ctx


# -- decoding helpers -----------------------------------------------------------------------

class Tokens:
    def __init__(self, ctx: LlamaContext) -> None:
        self.ctx = ctx
        self.batch = L.llama_batch_init(ctx.n_batch, 0, 1)

    def decode(self, rows: list[tuple[int, int, list[int]]], logits_last: bool) -> list[int]:
        """rows: (seq_id, first position, tokens); returns each row's logits index."""
        b, n, last = self.batch, 0, []
        for seq_id, pos0, toks in rows:
            for i, t in enumerate(toks):
                b.token[n], b.pos[n], b.n_seq_id[n] = t, pos0 + i, 1
                b.seq_id[n][0] = seq_id
                b.logits[n] = logits_last and i == len(toks) - 1
                n += 1
            last.append(n - 1)
        b.n_tokens = n
        assert L.llama_decode(self.ctx.ptr, b) == 0
        return last

    def close(self) -> None:
        L.llama_batch_free(self.batch)


def logits(ctx: LlamaContext, model: LlamaModel, i: int) -> np.ndarray:
    return np.ctypeslib.as_array(L.llama_get_logits_ith(ctx.ptr, i), shape=(model.n_vocab,)).copy()


def helper_decode(proj: Projector, ctx: LlamaContext, chunk: ImageChunk, embd: np.ndarray,
                  pos: int, seq_id: int) -> int:
    """llama.cpp's own way: mtmd_helper_decode_image_chunk."""
    embd = np.ascontiguousarray(embd, dtype=np.float32)
    new_pos = L.llama_pos(0)
    rc = M.mtmd_helper_decode_image_chunk(
        proj.ptr, ctx.ptr, chunk.ptr, embd.ctypes.data_as(ctypes.POINTER(ctypes.c_float)),
        pos, seq_id, ctx.n_batch, ctypes.byref(new_pos),
        M.mtmd_helper_post_decode_callback(), None)  # a NULL callback: None is refused
    assert rc == 0
    return new_pos.value


def run_prompt(proj: Projector, ctx: LlamaContext, model: LlamaModel, chunks, seq_id: int = 0,
               *, use_helper: bool = False) -> np.ndarray:
    """Decodes a chunked prompt into seq_id and returns the last token's logits."""
    toks = Tokens(ctx)
    embd_batch = EmbeddingBatch(ctx, proj.n_embd)
    try:
        pos = 0
        idx = -1
        for k, c in enumerate(chunks):
            if isinstance(c, TextChunk):
                idx = toks.decode([(seq_id, pos, c.tokens)], logits_last=k == len(chunks) - 1)[0]
                pos += len(c.tokens)
            else:
                embd = proj.encode(c)
                if use_helper:
                    pos = helper_decode(proj, ctx, c, embd, pos, seq_id)
                else:
                    assert embd_batch.decode([(seq_id, pos, embd)], non_causal=proj.non_causal) == 0
                    pos += c.n_pos
        assert isinstance(chunks[-1], TextChunk)
        return logits(ctx, model, idx)
    finally:
        toks.close()
        embd_batch.close()


def prompt(proj: Projector, *images: bytes) -> list:
    text = "look " + " and ".join(proj.marker for _ in images) + " what is this"
    return proj.tokenize(text, list(images))


def close_all(chunks) -> None:
    for c in chunks:
        if isinstance(c, ImageChunk):
            c.close()


# -- the projector ------------------------------------------------------------------------

@pytest.mark.parametrize("kind, n_tokens, non_causal", [("mlp", 16, False), ("gemma3", 4, True)])
def test_projector_chunks_an_image(projectors, model, kind, n_tokens, non_causal) -> None:
    proj = projectors[kind]
    assert proj.n_embd == 64 and proj.non_causal is non_causal
    png = solid_png(RED)
    chunks = prompt(proj, png)
    images = [c for c in chunks if isinstance(c, ImageChunk)]
    assert len(images) == 1
    assert (images[0].n_tokens, images[0].n_pos) == (n_tokens, n_tokens)
    # The id is the sha256 of the image's bytes: the key of KV reuse and of an embeddings cache.
    assert images[0].id == hashlib.sha256(png).hexdigest()
    text = [model.detokenize(c.tokens) for c in chunks if isinstance(c, TextChunk)]
    if kind == "gemma3":  # the projector's own wrapping text comes as text chunks
        assert text[0].endswith("<start_of_image>") and "<end_of_image>" in text[1]
    assert chunks[0].tokens[0] == model.bos
    assert sum(t == model.bos for c in chunks if isinstance(c, TextChunk) for t in c.tokens) == 1
    embd = proj.encode(images[0])
    assert embd.shape == (n_tokens, 64) and embd.dtype == np.float32
    assert np.isfinite(embd).all() and np.abs(embd).max() > 0
    close_all(chunks)


def test_tokenize_parts_keeps_marker_text_as_text(projectors, model) -> None:
    proj = projectors["mlp"]
    chunks = proj.tokenize_parts(["see ", solid_png(BLUE), f" it says {proj.marker}"])
    assert [type(c) for c in chunks] == [TextChunk, ImageChunk, TextChunk]
    assert proj.marker in model.detokenize(chunks[2].tokens)
    close_all(chunks)
    with pytest.raises(ImageError, match="2 image markers for 1 images"):
        proj.tokenize(f"{proj.marker}{proj.marker}", [solid_png(RED)])


def test_a_chunk_outlives_its_list_and_encodes_the_same(projectors) -> None:
    proj = projectors["mlp"]
    a = [c for c in prompt(proj, gradient_png()) if isinstance(c, ImageChunk)][0]
    b = [c for c in prompt(proj, gradient_png()) if isinstance(c, ImageChunk)][0]
    np.testing.assert_array_equal(proj.encode(a), proj.encode(b))
    a.close()
    with pytest.raises(ValueError):
        proj.encode(a)


# -- same image, different images ----------------------------------------------------------

@pytest.mark.parametrize("kind", KINDS)
def test_same_image_gives_the_same_logits(projectors, fresh, model, kind) -> None:
    proj = projectors[kind]
    first = run_prompt(proj, fresh, model, prompt(proj, solid_png(RED)), seq_id=0)
    # Another sequence, other chunk objects, same bytes.
    again = run_prompt(proj, fresh, model, prompt(proj, solid_png(RED)), seq_id=1)
    np.testing.assert_array_equal(first, again)


@pytest.mark.parametrize("kind", KINDS)
def test_different_images_give_different_logits(projectors, fresh, model, kind) -> None:
    proj = projectors[kind]
    red = run_prompt(proj, fresh, model, prompt(proj, solid_png(RED)), seq_id=0)
    L.llama_memory_clear(fresh.memory, True)
    blue = run_prompt(proj, fresh, model, prompt(proj, solid_png(BLUE)), seq_id=0)
    assert np.abs(red - blue).max() > 0.05
    assert int(np.argmax(red)) != int(np.argmax(blue)) or np.abs(red - blue).max() > 0.5


def test_two_images_in_one_prompt(projectors, fresh, model) -> None:
    proj = projectors["mlp"]
    rg = prompt(proj, solid_png(RED), solid_png(GREEN))
    gr = prompt(proj, solid_png(GREEN), solid_png(RED))
    assert [type(c) for c in rg] == [TextChunk, ImageChunk, TextChunk, ImageChunk, TextChunk]
    a = run_prompt(proj, fresh, model, rg, seq_id=0)
    b = run_prompt(proj, fresh, model, gr, seq_id=1)
    assert np.abs(a - b).max() > 0.05  # order matters


# -- the batched embeddings decode equals llama.cpp's helper -------------------------------

def test_one_decode_for_two_sequences_equals_the_helper_alone(projectors, fresh, model) -> None:
    proj = projectors["mlp"]
    per_seq = {0: prompt(proj, solid_png(RED)), 1: prompt(proj, gradient_png())}
    embds = {s: proj.encode(ch[1]) for s, ch in per_seq.items()}

    # Reference: each sequence alone, its image through mtmd_helper_decode_image_chunk.
    want = {}
    for s, (head, image, tail) in per_seq.items():
        L.llama_memory_clear(fresh.memory, True)
        toks = Tokens(fresh)
        toks.decode([(s, 0, head.tokens)], logits_last=False)
        pos = helper_decode(proj, fresh, image, embds[s], len(head.tokens), s)
        want[s] = logits(fresh, model, toks.decode([(s, pos, tail.tokens)], True)[0])
        toks.close()

    # Herd's way: text of both sequences in one batch, both images in ONE llama_decode, tails.
    L.llama_memory_clear(fresh.memory, True)
    toks, batch = Tokens(fresh), EmbeddingBatch(fresh, proj.n_embd)
    toks.decode([(s, 0, ch[0].tokens) for s, ch in per_seq.items()], logits_last=False)
    assert batch.decode([(s, len(ch[0].tokens), embds[s]) for s, ch in per_seq.items()]) == 0
    idx = toks.decode([(s, len(ch[0].tokens) + ch[1].n_pos, ch[2].tokens)
                       for s, ch in per_seq.items()], logits_last=True)
    for k, s in enumerate(per_seq):
        np.testing.assert_allclose(logits(fresh, model, idx[k]), want[s], rtol=0, atol=1e-5)
    assert np.abs(want[0] - want[1]).max() > 0.05
    toks.close()
    batch.close()
    for ch in per_seq.values():
        close_all(ch)


def test_a_causal_image_may_span_several_decodes(projectors, fresh, model) -> None:
    """An image bigger than the batch: its rows go in slices, positions continuing."""
    proj = projectors["mlp"]
    head, image, tail = prompt(proj, gradient_png())
    want = run_prompt(proj, fresh, model, [head, image, tail], seq_id=0, use_helper=True)
    L.llama_memory_clear(fresh.memory, True)
    embd = proj.encode(image)
    toks, small = Tokens(fresh), EmbeddingBatch(fresh, proj.n_embd, capacity=5)
    toks.decode([(0, 0, head.tokens)], logits_last=False)
    pos = len(head.tokens)
    for start in range(0, image.n_tokens, 5):
        part = embd[start:start + 5]
        assert small.decode([(0, pos, part)]) == 0
        pos += len(part)
    got = logits(fresh, model, toks.decode([(0, pos, tail.tokens)], logits_last=True)[0])
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)
    toks.close()
    small.close()
    close_all([image])


@pytest.mark.parametrize("kind", KINDS)
def test_kv_prefix_reuse_through_an_image(projectors, fresh, model, kind) -> None:
    """The cells of text + image stay; a new tail after them gives what a fresh prefill gives."""
    proj = projectors[kind]
    png = gradient_png()
    first = proj.tokenize(f"look {proj.marker} what is this", [png])
    second = proj.tokenize(f"look {proj.marker} tell me a story", [png])
    assert first[1].id == second[1].id and first[0].tokens == second[0].tokens
    want = run_prompt(proj, fresh, model, second, seq_id=1)
    run_prompt(proj, fresh, model, first, seq_id=0)
    kept = len(first[0].tokens) + first[1].n_pos  # reuse ends at the image's end, never inside
    assert fresh.forget(0, kept) == kept
    toks = Tokens(fresh)
    got = logits(fresh, model, toks.decode([(0, kept, second[2].tokens)], logits_last=True)[0])
    toks.close()
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)
    close_all(first)
    close_all(second)


def test_non_causal_image_alone_equals_the_helper(projectors, fresh, model) -> None:
    proj = projectors["gemma3"]
    chunks = prompt(proj, gradient_png())
    want = run_prompt(proj, fresh, model, chunks, seq_id=1, use_helper=True)
    L.llama_memory_clear(fresh.memory, True)
    got = run_prompt(proj, fresh, model, chunks, seq_id=1)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)
    # The switch matters: the same rows decoded with causal attention give other logits.
    L.llama_memory_clear(fresh.memory, True)
    toks, batch = Tokens(fresh), EmbeddingBatch(fresh, proj.n_embd)
    head, image, tail = chunks
    toks.decode([(1, 0, head.tokens)], logits_last=False)
    assert batch.decode([(1, len(head.tokens), proj.encode(image))], non_causal=False) == 0
    causal = logits(fresh, model, toks.decode([(1, len(head.tokens) + image.n_pos, tail.tokens)],
                                              logits_last=True)[0])
    assert not np.array_equal(causal, want)
    toks.close()
    batch.close()
    # Causal attention is back on afterwards: a text-only prompt is unaffected by the image.
    L.llama_memory_clear(fresh.memory, True)
    text_only = proj.tokenize("look what is this", [])
    before = run_prompt(proj, fresh, model, text_only, seq_id=0)
    L.llama_memory_clear(fresh.memory, True)
    run_prompt(proj, fresh, model, chunks, seq_id=1)
    L.llama_memory_seq_rm(fresh.memory, 0, 0, -1)
    after = run_prompt(proj, fresh, model, text_only, seq_id=0)
    np.testing.assert_array_equal(before, after)
    close_all(chunks)


def test_non_causal_refuses_two_images_or_more_than_a_ubatch(projectors, fresh) -> None:
    proj = projectors["gemma3"]
    batch = EmbeddingBatch(fresh, proj.n_embd)
    rows = np.zeros((4, proj.n_embd), dtype=np.float32)
    with pytest.raises(ValueError, match="alone"):
        batch.decode([(0, 0, rows), (1, 0, rows)], non_causal=True)
    with pytest.raises(ValueError, match="capacity"):
        batch.decode([(0, 0, np.zeros((N_BATCH + 1, proj.n_embd), np.float32))])
    batch.close()
    big = EmbeddingBatch(fresh, proj.n_embd, capacity=2 * N_BATCH)
    assert big.n_ubatch == N_BATCH
    with pytest.raises(ValueError, match="within n_ubatch"):
        big.decode([(0, 0, np.zeros((N_BATCH + 1, proj.n_embd), np.float32))], non_causal=True)
    big.close()


# -- what is not an image -------------------------------------------------------------------

def _no_ffprobe(monkeypatch) -> None:
    def refuse(*args, **kwargs):
        raise AssertionError("unknown bytes must never reach mtmd_helper_bitmap_init_from_buf")

    monkeypatch.setattr(M, "mtmd_helper_bitmap_init_from_buf", refuse)
    monkeypatch.setattr(M, "mtmd_helper_bitmap_init_from_buf_wrapper", refuse)


@pytest.mark.parametrize("data, why", [
    (os.urandom(300), "unsupported image format"),
    (b"just a text file, not an image\n" * 5, "unsupported image format"),
    (b"", "unsupported image format"),
    (solid_png(RED)[:40], "failed to decode the PNG"),  # truncated: stb would try ffprobe
    (b"\x89PNG\r\n\x1a\n" + os.urandom(200), "failed to decode the PNG"),
    (jpeg_bytes(solid_png(RED))[:60], "failed to decode the JPEG"),
    (b"RIFF\x10\x00\x00\x00WEBPVP8 " + os.urandom(30), "failed to decode the WEBP"),
])
def test_a_non_image_raises_image_error_naming_it(projectors, monkeypatch, data, why) -> None:
    _no_ffprobe(monkeypatch)
    proj = projectors["mlp"]
    with pytest.raises(ImageError, match=f"^image 2: {why}") as e:
        proj.tokenize(f"a {proj.marker} b {proj.marker}", [solid_png(RED), data])
    assert e.value.status == 400
    with pytest.raises(ImageError, match=f"^image 1: {why}"):
        proj.tokenize_parts(["a ", data])
    # The projector still works after refusing.
    close_all(proj.tokenize(f"a {proj.marker}", [solid_png(RED)]))


def test_pixel_limit(files, model) -> None:
    with Projector(model, str(files["mlp"]), n_threads=1, max_pixels=255) as proj:
        with pytest.raises(ImageError, match="16x16, more than 255 pixels"):
            proj.tokenize(proj.marker, [solid_png(RED)])


def test_a_projector_without_a_projector_type_does_not_load(tmp_path, model) -> None:
    # Old llava files: llama.cpp refuses them ("unknown projector type"); Herd patches them.
    path = write_tiny_projector(tmp_path / "llava.gguf", projector_type=None)
    with pytest.raises(ProjectorError, match="unable to load projector"):
        Projector(model, str(path), n_threads=1)


def test_mrope_models_are_refused(files, model, monkeypatch) -> None:
    monkeypatch.setattr(M, "mtmd_decode_use_mrope", lambda ctx: True)
    with pytest.raises(ProjectorError, match="M-RoPE"):
        Projector(model, str(files["mlp"]), n_threads=1)


# -- formats -------------------------------------------------------------------------------

def test_webp_and_jpeg_decode(projectors, fresh, model, monkeypatch) -> None:
    _no_ffprobe(monkeypatch)
    proj = projectors["mlp"]
    png = gradient_png()
    lossless, lossy, jpeg = webp_bytes(png), webp_bytes(png, lossless=False), jpeg_bytes(png)
    assert [image_format(x) for x in (png, lossless, lossy, jpeg)] == ["png", "webp", "webp",
                                                                      "jpeg"]
    # Lossless WebP: the very pixels of the PNG, hence the same embeddings and logits.
    assert read_image(lossless).rgb == read_image(png).rgb
    a, b = prompt(proj, png), prompt(proj, lossless)
    assert a[1].id != b[1].id  # ids hash the bytes, not the pixels
    np.testing.assert_array_equal(proj.encode(a[1]), proj.encode(b[1]))
    np.testing.assert_array_equal(run_prompt(proj, fresh, model, a, 0),
                                  run_prompt(proj, fresh, model, b, 1))
    for data in (lossy, jpeg, _pillow_bytes(png, "GIF"), _pillow_bytes(png, "BMP")):
        ch = prompt(proj, data)
        assert np.isfinite(proj.encode(ch[1])).all()
        close_all(ch)
    close_all(a)
    close_all(b)


def _pillow_bytes(png: bytes, fmt: str) -> bytes:
    import io

    from PIL import Image as PILImage

    out = io.BytesIO()
    with PILImage.open(io.BytesIO(png)) as im:
        im.save(out, format=fmt)
    return out.getvalue()


def test_pillow_pixels_equal_stb_for_png(projectors) -> None:
    """llama-server decodes PNG with stb_image; Herd's Pillow path gives the same pixels (the
    helper is called here on a known-good PNG only)."""
    proj = projectors["mlp"]
    rng = np.random.default_rng(3)
    cases = [gradient_png(),
             png_bytes(rng.integers(0, 256, size=(9, 13, 4), dtype=np.uint8)),  # RGBA
             png_bytes(rng.integers(0, 256, size=(9, 13), dtype=np.uint8)),  # grey
             png_bytes(rng.integers(0, 256, size=(9, 13, 2), dtype=np.uint8)),  # grey + alpha
             png_bytes(rng.integers(0, 65536, size=(9, 13), dtype=np.uint16)),  # 16-bit grey
             png_bytes(rng.integers(0, 65536, size=(9, 13, 3), dtype=np.uint16))]  # 16-bit RGB
    for png in cases:
        buf = (ctypes.c_uint8 * len(png)).from_buffer_copy(png)
        bmp = M.mtmd_helper_bitmap_init_from_buf(proj.ptr, buf, len(png), False)
        assert bmp
        n = M.mtmd_bitmap_get_n_bytes(bmp)
        stb = ctypes.string_at(M.mtmd_bitmap_get_data(bmp), n)
        assert M.mtmd_bitmap_get_id(bmp).decode() == hashlib.sha256(png).hexdigest()
        M.mtmd_bitmap_free(bmp)
        assert read_image(png).rgb == stb


def test_image_objects_are_accepted(projectors) -> None:
    proj = projectors["mlp"]
    im = read_image(solid_png(GREEN), "the green one")
    assert isinstance(im, Image) and (im.width, im.height) == (16, 16)
    chunks = proj.tokenize(proj.marker, [im])
    assert chunks[1 if isinstance(chunks[0], TextChunk) else 0].id == im.id
    close_all(chunks)


# -- threads --------------------------------------------------------------------------------

def test_encoding_in_a_thread_while_text_decodes(projectors, fresh, model) -> None:
    proj = projectors["mlp"]
    chunks = prompt(proj, gradient_png())
    want = proj.encode(chunks[1])
    got: list[np.ndarray] = []

    def work() -> None:
        for _ in range(20):
            got.append(proj.encode(chunks[1]))

    t = threading.Thread(target=work)
    t.start()
    toks = Tokens(fresh)
    words = model.tokenize("the sky is blue and the sun is hot " * 2, add_special=True,
                           parse_special=False)
    for i, tok in enumerate(words[:20]):
        toks.decode([(0, i, [tok])], logits_last=True)
    toks.close()
    t.join()
    assert len(got) == 20
    for g in got:
        np.testing.assert_array_equal(g, want)
    close_all(chunks)


# -- sampling in the decode graph ---------------------------------------------------------

@pytest.mark.parametrize("options", [{"temperature": 0.0},
                                     {"temperature": 0.9, "top_k": 40, "top_p": 0.9, "seed": 11}])
def test_device_sampling_around_an_embeddings_decode(projectors, fresh, model, options) -> None:
    """A chain attached to a sequence (llama_set_sampler, as the engine does with
    HERD_DEVICE_SAMPLING) survives embeddings batches without outputs, and draws what the CPU
    chain draws from the same logits."""
    from herd.protocol.wire import SamplingParams
    from herd.worker.engine.sampler import SamplerChain

    proj = projectors["mlp"]
    params = SamplingParams(**options)
    new_chain = lambda: SamplerChain(params, n_vocab=model.n_vocab, n_ctx=128,  # noqa: E731
                                     vocab=model.vocab)
    chunks = prompt(proj, solid_png(BLUE))
    pos = sum(len(c.tokens) if isinstance(c, TextChunk) else c.n_pos for c in chunks)
    last = len(chunks[-1].tokens) - 1  # run_prompt's last batch is the tail chunk
    toks = Tokens(fresh)
    # The CPU chain: sample after the prompt, then two more steps.
    cpu = new_chain()
    run_prompt(proj, fresh, model, chunks, seq_id=0)
    want = [cpu.sample(fresh.ptr, last)]
    for i in range(2):
        want.append(cpu.sample(fresh.ptr, toks.decode([(0, pos + i, [want[-1]])], True)[0]))
    cpu.close()

    L.llama_memory_clear(fresh.memory, True)
    dev = new_chain()
    assert dev.device_capable
    assert L.llama_set_sampler(fresh.ptr, 0, dev.ptr)
    try:
        run_prompt(proj, fresh, model, chunks, seq_id=0)
        got = [dev.sample_on_device(fresh.ptr, last)]
        for i in range(2):
            got.append(dev.sample_on_device(
                fresh.ptr, toks.decode([(0, pos + i, [got[-1]])], True)[0]))
    finally:
        L.llama_set_sampler(fresh.ptr, 0, None)
        dev.close()
        toks.close()
    assert got == want
    close_all(chunks)
