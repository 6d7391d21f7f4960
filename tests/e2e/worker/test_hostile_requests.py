"""Nothing a request carries can end the runner its model shares with every other stream.

Each probe was confirmed to kill the runner (or hang the request) before the fix. Through a real
server, each gets its 4xx while a stream started beside it on the same model finishes intact, the
runner is the same process afterwards, and the server still answers. Ollama's reference for the
Go template errors is text/template/parse's lexer and `newNumber` ("malformed character
constant", "illegal number syntax"), ollama/template/template.go's Parse at create.
"""

from __future__ import annotations

import json

import httpx
import pytest

from support.herd_server import wait_until

BESIDE_TOKENS = 48


def _beside(server):
    """A streaming generation on `tiny`, open and decoding when the probe arrives."""
    body = {"model": "tiny", "prompt": "tell me a story", "stream": True,
            "options": {"num_predict": BESIDE_TOKENS, "temperature": 0}}
    stream = httpx.stream("POST", server.url + "/api/generate", json=body, timeout=120)
    response = stream.__enter__()
    lines = response.iter_lines()
    first = json.loads(next(lines))
    assert not first.get("done"), first
    return stream, lines


def _finish(stream, lines) -> dict:
    try:
        chunks = [json.loads(line) for line in lines if line]
    finally:
        stream.__exit__(None, None, None)
    last = chunks[-1]
    assert "error" not in last, last
    return last


def _check_probe(server, path: str, body: dict, status: int = 400) -> str:
    pids = server.runner_pids()
    stream, lines = _beside(server)
    r = httpx.post(server.url + path, json=body, timeout=120)
    last = _finish(stream, lines)
    assert r.status_code == status, r.text
    assert last["done"] and last["done_reason"] == "length"
    assert last["eval_count"] == BESIDE_TOKENS
    assert server.runner_pids() == pids  # the same runner: nothing killed or restarted it
    after = httpx.post(server.url + "/api/generate", timeout=120, json={
        "model": "tiny", "prompt": "hi", "stream": False, "options": {"num_predict": 2}})
    assert after.status_code == 200, after.text
    return r.json()["error"]


def _warm(server) -> None:
    httpx.post(server.url + "/api/generate", json={"model": "tiny", "prompt": "hi",
               "stream": False, "options": {"num_predict": 1}}, timeout=120).raise_for_status()


NESTED_JINJA = "{{ " + "(" * 5000 + "1" + ")" * 5000 + " }}"
NESTED_JINJA_BLOCKS = "{% if true %}" * 3000 + "x" + "{% endif %}" * 3000


@pytest.mark.parametrize("extra, error", [
    ({"template": "{{ .Prompt }}{{ 'ab' }}"}, "malformed character constant"),
    ({"template": "{{ .Prompt }}{{ 1e999 }}"}, "illegal number syntax"),
    ({"template": "{{ .Prompt }}{{ " + "(" * 3000 + "1" + ")" * 3000 + " }}"}, "nested too deeply"),
    ({"template": "{{ .Prompt }}" + "{{ if 1 }}" * 3000 + "{{ end }}" * 3000}, "nested too deeply"),
    ({"template": NESTED_JINJA}, "nested too deeply"),
    ({"template": NESTED_JINJA_BLOCKS}, "template error"),
    ({"template": "{{ 'a' * 10**10 }}{% if 1 %}{% endif %}"}, "too large"),
    ({"template": "{{ 'x'|center(10**10) }}{% if 1 %}{% endif %}"}, "too large"),
    ({"template": "{% set ns = namespace(s='ab') %}{% for i in range(64) %}"
                  "{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s }}"}, "too large"),
    ({"template": "{{ $x := \"ab\" }}{{ range 64 }}{{ $x = printf \"%s%s\" $x $x }}{{ end }}"
                  "{{ .Prompt }}{{ $x }}"}, "exceeds the limit"),
    ({"format": {"type": "string", "maxLength": 200000}}, "maxLength"),
    ({"format": {"type": "array", "items": {"type": "integer"}, "minItems": 10 ** 6}}, "minItems"),
    ({"format": {"type": "string", "pattern": "^((a{0,99}){0,99})$"}}, "pattern repeats"),
    ({"format": {"$ref": "https://example.com/schema.json"}}, "local $ref"),
])
def test_a_hostile_generate_is_a_400_and_the_runner_keeps_decoding(server, extra, error) -> None:
    _warm(server)
    body = {"model": "tiny", "prompt": "hi", "stream": False, "options": {"num_predict": 2},
            **extra}
    assert error in _check_probe(server, "/api/generate", body)


@pytest.mark.parametrize("options, name", [
    ({"num_batch": -1}, "num_batch"),
    ({"num_batch": 10 ** 9}, "num_batch"),
    ({"num_thread": -4}, "num_thread"),
    ({"num_thread": 100000}, "num_thread"),
    ({"num_ctx": -5}, "num_ctx"),
    ({"num_ctx": 1 << 40}, "num_ctx"),
    ({"num_predict": 1 << 40}, "num_predict"),
    ({"seed": 1 << 70}, "seed"),
    ({"repeat_last_n": 1 << 40}, "repeat_last_n"),
])
@pytest.mark.parametrize("path", ["/api/generate", "/api/chat"])
def test_an_option_out_of_range_is_a_400_naming_it(server, path, options, name) -> None:
    _warm(server)
    body = {"model": "tiny", "stream": False, "options": options}
    body.update({"prompt": "hi"} if path == "/api/generate" else
                {"messages": [{"role": "user", "content": "hi"}]})
    assert name in _check_probe(server, path, body)


def test_too_many_images_is_a_400(server) -> None:
    _warm(server)
    body = {"model": "tiny", "prompt": "hi", "images": ["aGk="] * 100, "stream": False}
    assert "too many images" in _check_probe(server, "/api/generate", body)


def test_any_negative_num_predict_is_capped(server) -> None:
    """num_predict -3 streamed for ever: every negative but -2 is "unlimited", which Herd caps
    at 8 contexts (Ollama's runner treats any num_predict < 0 as no limit)."""
    before = set(server.runner_pids())
    # keep_alive 0: the num_ctx-16 runner goes with its answer, so no later probe here sees
    # it reaped as stale (the reload of other load-time options) and blames the probe.
    r = httpx.post(server.url + "/api/generate", timeout=300, json={
        "model": "tiny", "prompt": "hi", "stream": False, "raw": True, "keep_alive": 0,
        "options": {"num_predict": -3, "num_ctx": 16, "temperature": 0}})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["done_reason"] in ("length", "stop")
    assert body["eval_count"] <= 8 * 16
    assert wait_until(lambda: set(server.runner_pids()) <= before)


def test_a_stored_template_that_cannot_render_fails_its_requests_not_its_model(server) -> None:
    """A model created with a template that parses but fails every render: each request gets
    the template's 400, and the runner (shared with `tiny`) keeps serving."""
    r = httpx.post(server.url + "/api/create", timeout=120, json={
        "model": "tiny-badtmpl", "from": "tiny",
        "template": "{{ raise_exception('no') }}{% if 1 %}{% endif %}"})
    assert r.status_code == 200, r.text
    _warm(server)
    body = {"model": "tiny-badtmpl", "prompt": "hi", "stream": False}
    assert "no" in _check_probe(server, "/api/generate", body)


@pytest.mark.parametrize("template", [
    "{{ .Prompt }}{{ 'ab' }}",
    NESTED_JINJA,
    "{% if %}",
])
def test_create_refuses_a_template_it_cannot_parse(server, template) -> None:
    r = httpx.post(server.url + "/api/create", timeout=120, json={
        "model": "tiny-refused", "from": "tiny", "template": template})
    assert r.status_code == 400, r.text
    assert "template" in r.json()["error"]


def test_a_gguf_whose_chat_template_cannot_compile_still_loads(server, tmp_path) -> None:
    """The GGUF's own template failed every load (each request started a runner that died);
    the runner now logs it and uses the family's built-in template."""
    from support.tiny_models import write_tiny_llama

    gguf = write_tiny_llama(tmp_path / "bad-template.gguf", seed=3,
                            chat_template="{{ " + "(" * 5000 + " }}")
    server.create_model("tiny-badgguf", gguf)
    r = httpx.post(server.url + "/api/chat", timeout=120, json={
        "model": "tiny-badgguf", "stream": False, "options": {"num_predict": 2},
        "messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code == 200, r.text
