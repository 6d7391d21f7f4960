"""Vision end to end: a tiny text model and a tiny random-weight projector the suite writes,
created through /api/create, answering images on every API surface through a real server.

Ollama's behaviour is the reference: server/create.go (isProjectorGGUF, the projector layer),
server/quantization.go (old llava projectors get clip.projector_type "mlp"), server/prompt.go
(imageTaggedMessages: [img-N] before the text or in place of the user's [img]),
openai/openai.go (decodeImageURL: data: URIs only), openai/responses.go (input_image)."""

from __future__ import annotations

import base64
import concurrent.futures
import json
import pathlib
import struct
import zlib

import httpx
import pytest

from support.herd_server import HerdServer
from support.tiny_vision import (BLUE, RED, gradient_png, jpeg_bytes, solid_png, webp_bytes,
                                 write_tiny_projector)

GREEDY = {"temperature": 0, "seed": 1, "num_predict": 12}
RED_PNG = base64.b64encode(solid_png(RED)).decode()
BLUE_PNG = base64.b64encode(solid_png(BLUE)).decode()
NOISE_PNG = base64.b64encode(gradient_png(seed=3)).decode()


@pytest.fixture(scope="module")
def vision(tmp_path_factory: pytest.TempPathFactory, tiny_gguf: pathlib.Path):
    """A server with `tiny` (no projector), `tiny-vision` (mlp projector, created from files),
    `tiny-gemma-vision` (a non-causal gemma3 projector) and `tiny-llava` (an old projector
    without clip.projector_type)."""
    folder = tmp_path_factory.mktemp("mmproj")
    srv = HerdServer(tmp_path_factory.mktemp("herd"))
    with srv:
        srv.create_model("tiny", tiny_gguf)
        client = srv.client()
        model = client.create_blob(tiny_gguf)
        for name, kind in (("tiny-vision", "mlp"), ("tiny-gemma-vision", "gemma3"),
                           ("tiny-llava", None)):
            # gemma3 pools 4 patches into one token: 32×32 (16 tokens) keeps images apart
            path = write_tiny_projector(folder / f"{name}.gguf", projector_type=kind,
                                        general_type=kind is not None,
                                        image_size=32 if kind == "gemma3" else 16)
            r = httpx.post(srv.url + "/api/create", json={
                "model": name, "stream": False,
                "files": {"model.gguf": model, "mmproj.gguf": client.create_blob(path)}})
            assert r.status_code == 200, r.text
        srv.projector_dir, srv.tiny_gguf = folder, tiny_gguf
        yield srv


def generate(srv, images=None, prompt="what is this?", model="tiny-vision", **extra):
    body = {"model": model, "prompt": prompt, "stream": False, "options": GREEDY, **extra}
    if images is not None:
        body["images"] = images
    r = httpx.post(srv.url + "/api/generate", json=body)
    assert r.status_code == 200, r.text
    return r.json()["response"]


def chat_body(messages, model="tiny-vision", **extra):
    return {"model": model, "messages": messages, "stream": False, "options": GREEDY, **extra}


def chat(srv, messages, **extra):
    r = httpx.post(srv.url + "/api/chat", json=chat_body(messages, **extra))
    assert r.status_code == 200, r.text
    return r.json()["message"]["content"]


def test_create_stores_the_projector_layer_and_show_reports_it(vision) -> None:
    r = httpx.post(vision.url + "/api/show", json={"model": "tiny-vision"})
    assert r.status_code == 200
    show = r.json()
    assert "vision" in show["capabilities"]
    assert show["projector_info"]["clip.projector_type"] == "mlp"
    assert show["projector_info"]["general.architecture"] == "clip"
    manifest = json.loads(next((vision.models_dir / "manifests").rglob("tiny-vision/latest"))
                          .read_text())
    kinds = [layer["mediaType"] for layer in manifest["layers"]]
    assert kinds.count("application/vnd.ollama.image.model") == 1
    assert kinds.count("application/vnd.ollama.image.projector") == 1
    plain = httpx.post(vision.url + "/api/show", json={"model": "tiny"}).json()
    assert "vision" not in plain["capabilities"] and "projector_info" not in plain
    froms = [line for line in show["modelfile"].splitlines() if line.startswith("FROM ")]
    assert len(froms) == 2 and froms[1].endswith(manifest["layers"][kinds.index(
        "application/vnd.ollama.image.projector")]["digest"].replace(":", "-"))


def test_old_llava_projector_is_patched_to_mlp(vision) -> None:
    show = httpx.post(vision.url + "/api/show", json={"model": "tiny-llava"}).json()
    assert show["projector_info"]["clip.projector_type"] == "mlp"
    assert generate(vision, [RED_PNG], model="tiny-llava") == generate(vision, [RED_PNG])


def test_same_image_same_answer_different_images_or_none_differ(vision) -> None:
    red = generate(vision, [RED_PNG])
    assert red == generate(vision, [RED_PNG])
    assert red != generate(vision, [BLUE_PNG])
    assert red != generate(vision, None)


def test_non_causal_gemma3_projector(vision) -> None:
    red = generate(vision, [RED_PNG], model="tiny-gemma-vision")
    assert red == generate(vision, [RED_PNG], model="tiny-gemma-vision")
    assert red != generate(vision, [BLUE_PNG], model="tiny-gemma-vision")
    assert red != generate(vision, [NOISE_PNG], model="tiny-gemma-vision")
    assert red != generate(vision, None, model="tiny-gemma-vision")


def test_a_non_causal_image_must_fit_one_batch(vision) -> None:
    """gemma3's 16 image tokens (64 patches pooled 2×2) attend to each other both ways: one
    ubatch holds them all, so a num_batch below that is a 400 naming the fix."""
    r = httpx.post(vision.url + "/api/generate", json={
        "model": "tiny-gemma-vision", "prompt": "x", "images": [RED_PNG], "stream": False,
        "options": {**GREEDY, "num_batch": 8}})
    assert r.status_code == 400 and "raise num_batch" in r.json()["error"]


def test_chat_streamed_equals_non_streamed(vision) -> None:
    messages = [{"role": "user", "content": "describe", "images": [NOISE_PNG]}]
    whole = chat(vision, messages)
    with httpx.stream("POST", vision.url + "/api/chat",
                      json=chat_body(messages, stream=True)) as r:
        pieces = [json.loads(line)["message"]["content"] for line in r.iter_lines() if line]
    assert "".join(pieces) == whole and whole


def test_images_across_turns_and_the_users_own_tag(vision) -> None:
    """[img-N] numbers run across the messages; a user's [img] is replaced in place
    (server/prompt.go imageTaggedMessages)."""
    messages = [{"role": "user", "content": "first", "images": [RED_PNG]},
                {"role": "assistant", "content": "a red one"},
                {"role": "user", "content": "compare [img] with this", "images": [BLUE_PNG,
                                                                                   NOISE_PNG]}]
    r = httpx.post(vision.url + "/api/chat", json=chat_body(messages, _debug_render_only=True))
    prompt = r.json()["_debug_info"]["rendered_template"]
    assert r.json()["_debug_info"]["image_count"] == 3
    assert "[img-0]first" in prompt and "compare [img-1] with this" in prompt
    assert prompt.index("[img-2]") < prompt.index("compare")
    answer = chat(vision, messages)
    assert answer == chat(vision, messages)  # the second time reuses the cached prefix
    first = chat(vision, messages[:1])
    assert first == chat(vision, messages[:1])  # a prefix of the cached one, cut at an image


def test_openai_data_uri_equals_native_base64(vision) -> None:
    """Each content part is a message of its own, as Ollama's FromChatRequest makes them."""
    native = chat(vision, [{"role": "user", "content": "", "images": [NOISE_PNG]},
                           {"role": "user", "content": "what is it?"}])
    r = httpx.post(vision.url + "/v1/chat/completions", json={
        "model": "tiny-vision", "temperature": 0, "seed": 1, "max_tokens": 12,
        "messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "data:image/png;base64," + NOISE_PNG}},
            {"type": "text", "text": "what is it?"}]}]})
    assert r.status_code == 200, r.text
    assert r.json()["choices"][0]["message"]["content"] == native
    r = httpx.post(vision.url + "/v1/chat/completions", json={
        "model": "tiny-vision", "messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}]}]})
    assert r.status_code == 400 and "image URLs are not currently supported" in r.text


def test_anthropic_and_responses_images_equal_native(vision) -> None:
    native = chat(vision, [{"role": "user", "content": "what is it?", "images": [RED_PNG]}])
    r = httpx.post(vision.url + "/v1/messages", json={
        "model": "tiny-vision", "max_tokens": 12, "temperature": 0,
        "messages": [{"role": "user", "content": [
            {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                         "data": RED_PNG}},
            {"type": "text", "text": "what is it?"}]}]})
    assert r.status_code == 200, r.text
    assert r.json()["content"][0]["text"] == native
    r = httpx.post(vision.url + "/v1/responses", json={
        "model": "tiny-vision", "temperature": 0, "max_output_tokens": 12,
        "input": [{"role": "user", "content": [
            {"type": "input_text", "text": "what is it?"},
            {"type": "input_image", "image_url": "data:image/png;base64," + RED_PNG}]}]})
    assert r.status_code == 200, r.text
    assert r.json()["output"][-1]["content"][0]["text"] == native


def test_jpeg_and_webp_are_read(vision) -> None:
    png = gradient_png(seed=5)
    webp = base64.b64encode(webp_bytes(png, lossless=True)).decode()
    assert generate(vision, [webp]) == generate(vision, [base64.b64encode(png).decode()])
    jpeg = base64.b64encode(jpeg_bytes(png)).decode()
    assert generate(vision, [jpeg])


def test_image_and_text_requests_together_give_what_each_gives_alone(vision) -> None:
    alone_text = [generate(vision, None, prompt=f"tell me {i}") for i in range(3)]
    alone_image = generate(vision, [NOISE_PNG])
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        image = pool.submit(generate, vision, [NOISE_PNG])
        texts = [pool.submit(generate, vision, None, prompt=f"tell me {i}") for i in range(3)]
        assert image.result() == alone_image
        assert [t.result() for t in texts] == alone_text


def _huge_png(width: int, height: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(
            ">I", zlib.crc32(kind + data))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2,
                                                               0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b""))


def test_bad_images_are_a_400_naming_them(vision) -> None:
    def error(images, url="/api/generate"):
        r = httpx.post(vision.url + url, json={"model": "tiny-vision", "prompt": "x",
                                              "images": images, "stream": False})
        assert r.status_code == 400, r.text
        return r.json()["error"]

    text = base64.b64encode(b"just some text, not a picture").decode()
    assert error([RED_PNG, text]) == "image 2 is not a PNG, JPEG or WebP image"
    assert "image 1 is 9000x8000, more than" in error(
        [base64.b64encode(_huge_png(9000, 8000)).decode()])
    truncated = base64.b64encode(solid_png(RED)[:40]).decode()
    assert error([truncated]).startswith("image 1")
    assert "too many images" in error([RED_PNG] * 33)
    r = httpx.post(vision.url + "/api/chat", json=chat_body(
        [{"role": "user", "content": "a", "images": [RED_PNG]},
         {"role": "user", "content": "b", "images": [text]}]))
    assert r.status_code == 400 and r.json()["error"] == "image 2 is not a PNG, JPEG or WebP image"
    # the model keeps serving
    assert generate(vision, [RED_PNG]) == generate(vision, [RED_PNG])


def test_text_only_requests_and_embeddings_unaffected(vision) -> None:
    assert generate(vision, None, prompt="hello") == generate(vision, None, prompt="hello",
                                                              model="tiny")
    r = httpx.post(vision.url + "/api/embed", json={"model": "tiny-vision", "input": "hi"})
    assert r.status_code == 200 and len(r.json()["embeddings"][0]) == 64


def test_modelfile_with_two_from_lines(vision, tiny_gguf: pathlib.Path) -> None:
    """The modelfile form names blobs: the model's, then the projector's (the CLI uploads the
    files and sends `files`; tests/e2e/cli/test_cli.py)."""
    client = vision.client()
    model = client.create_blob(tiny_gguf)
    projector = client.create_blob(vision.projector_dir / "tiny-vision.gguf")
    r = httpx.post(vision.url + "/api/create", json={
        "model": "tiny-vision-mf", "stream": False,
        "modelfile": f"FROM {model}\nFROM {projector}\n"})
    assert r.status_code == 200, r.text
    show = httpx.post(vision.url + "/api/show", json={"model": "tiny-vision-mf"}).json()
    assert "vision" in show["capabilities"]
    assert generate(vision, [RED_PNG], model="tiny-vision-mf") == generate(vision, [RED_PNG])


def test_long_chat_with_an_image_drops_whole_messages_and_never_shifts(vision) -> None:
    """Past num_ctx the oldest messages go (the image with its message); a sequence holding
    an image stops at the context's end instead of shifting it (llama-server turns context
    shift off with a projector)."""
    options = {**GREEDY, "num_ctx": 96}
    history = [{"role": "user", "content": "look", "images": [RED_PNG]}]
    for i in range(8):
        history += [{"role": "assistant", "content": "ok " * 6},
                    {"role": "user", "content": f"more words number {i} " * 2}]
    r = httpx.post(vision.url + "/api/chat", json=chat_body(history, options=options))
    assert r.status_code == 200, r.text
    assert r.json()["prompt_eval_count"] < 96
    options = {**GREEDY, "num_ctx": 64, "num_predict": -1}
    r = httpx.post(vision.url + "/api/generate", json={
        "model": "tiny-vision", "prompt": "go on", "images": [RED_PNG], "stream": False,
        "options": options})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["done_reason"] == "length"
    assert body["prompt_eval_count"] + body["eval_count"] <= 64


def test_raw_prompt_places_images_at_its_tags(vision) -> None:
    tagged = generate(vision, [RED_PNG], prompt="look: [img-0] now", raw=True)
    assert tagged == generate(vision, [RED_PNG], prompt="look: [img-0] now", raw=True)
    assert tagged != generate(vision, None, prompt="look: [img-0] now", raw=True)
    # an image the raw prompt does not place goes before it
    assert generate(vision, [RED_PNG], prompt="look: now", raw=True) == generate(
        vision, [RED_PNG], prompt="[img-0]look: now", raw=True)


def test_a_store_whose_projector_lacks_its_type_loads_it_as_mlp(vision) -> None:
    """An Ollama store or a pull can hold an old llava projector unpatched: the runner reads
    it through a patched copy."""
    client = vision.client()
    raw = write_tiny_projector(vision.projector_dir / "raw-llava.gguf", projector_type=None)
    digest = client.create_blob(raw)
    path = next((vision.models_dir / "manifests").rglob("tiny-vision/latest"))
    manifest = json.loads(path.read_text())
    for layer in manifest["layers"]:
        if layer["mediaType"] == "application/vnd.ollama.image.projector":
            layer["digest"], layer["size"] = digest, raw.stat().st_size
    target = path.parent.parent / "raw-llava" / "latest"
    target.parent.mkdir(parents=True)
    target.write_text(json.dumps(manifest))
    show = httpx.post(vision.url + "/api/show", json={"model": "raw-llava"}).json()
    assert "clip.projector_type" not in show["projector_info"]
    assert generate(vision, [RED_PNG], model="raw-llava") == generate(vision, [RED_PNG],
                                                                      model="tiny-llava")


def test_a_projector_that_cannot_load_leaves_the_text_model_serving(vision) -> None:
    """One built for another text model (its projection width differs): text still answers,
    images get a 400 saying why (so do M-RoPE projectors, which Herd does not run)."""
    client = vision.client()
    wrong = write_tiny_projector(vision.projector_dir / "wrong.gguf", text_embd=32)
    r = httpx.post(vision.url + "/api/create", json={
        "model": "tiny-wrong", "stream": False,
        "files": {"model.gguf": client.create_blob(vision.tiny_gguf),
                  "mmproj.gguf": client.create_blob(wrong)}})
    assert r.status_code == 200, r.text
    assert generate(vision, None, prompt="hello", model="tiny-wrong") == generate(
        vision, None, prompt="hello", model="tiny")
    r = httpx.post(vision.url + "/api/generate", json={
        "model": "tiny-wrong", "prompt": "x", "images": [RED_PNG], "stream": False})
    assert r.status_code == 400 and r.json()["error"].startswith("unable to load projector")


def test_a_projector_blob_beside_a_model_name(vision) -> None:
    """FROM a model already in the store, then FROM a projector: the model gains it."""
    projector = vision.client().create_blob(vision.projector_dir / "tiny-vision.gguf")
    r = httpx.post(vision.url + "/api/create", json={
        "model": "tiny-plus", "stream": False, "modelfile": f"FROM tiny\nFROM {projector}\n"})
    assert r.status_code == 200, r.text
    assert generate(vision, [RED_PNG], model="tiny-plus") == generate(vision, [RED_PNG])
    r = httpx.post(vision.url + "/api/create", json={
        "model": "tiny-bad", "stream": False, "modelfile": "FROM tiny\nFROM tiny\n"})
    assert r.status_code == 400 and "a second FROM must name a projector blob" in r.text
