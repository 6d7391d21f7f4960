"""Bad input always gets {"error": ...} with Ollama's status and wording, never a 500 or a hang."""

from __future__ import annotations

import httpx
import pytest


def post(server, path: str, **kwargs) -> httpx.Response:
    return httpx.post(server.url + path, timeout=60, **kwargs)


def error_of(r: httpx.Response) -> str:
    assert r.headers["content-type"].startswith("application/json")
    return r.json()["error"]


@pytest.mark.parametrize("path", ["/api/generate", "/api/chat", "/api/create"])
def test_empty_body_is_missing_request_body(server, path: str) -> None:
    r = post(server, path, content=b"")
    assert r.status_code == 400
    assert error_of(r) == "missing request body"


def test_chat_without_model_is_model_is_required(server) -> None:
    r = post(server, "/api/chat", json={"messages": []})
    assert (r.status_code, error_of(r)) == (400, "model is required")


def test_generate_without_model_is_a_404_for_the_empty_name(server) -> None:
    r = post(server, "/api/generate", json={"prompt": "hi"})
    assert (r.status_code, error_of(r)) == (404, "model '' not found")


@pytest.mark.parametrize("path,body", [
    ("/api/generate", {"model": "ghost", "prompt": "hi"}),
    ("/api/chat", {"model": "ghost", "messages": [{"role": "user", "content": "hi"}]}),
])
def test_unknown_model_is_404(server, path: str, body: dict) -> None:
    r = post(server, path, json=body)
    assert (r.status_code, error_of(r)) == (404, "model 'ghost' not found")


def test_invalid_model_name_is_400(server) -> None:
    r = post(server, "/api/generate", json={"model": "bad name!", "prompt": "hi"})
    assert (r.status_code, error_of(r)) == (400, "invalid model name")


def test_malformed_json_is_400(server) -> None:
    r = post(server, "/api/generate", content=b'{"model": "tiny", "prompt": ')
    assert r.status_code == 400
    assert error_of(r)


def test_wrong_field_type_names_the_field(server) -> None:
    r = post(server, "/api/generate", json={"model": "tiny", "prompt": 5})
    assert r.status_code == 400
    assert "prompt" in error_of(r)
    r = post(server, "/api/chat", json={"model": "tiny", "messages": "hi"})
    assert r.status_code == 400
    assert "messages" in error_of(r)


@pytest.mark.parametrize("option,value,kind", [
    ("temperature", "hot", "float"),
    ("num_ctx", "big", "integer"),
    ("stop", "END", "array of strings"),
    ("seed", True, "integer"),
])
def test_wrong_option_type_is_400_naming_the_option(server, option: str, value, kind: str) -> None:
    r = post(server, "/api/generate", json={"model": "tiny", "prompt": "hi", "options": {option: value}})
    assert r.status_code == 400
    assert error_of(r) == f'option "{option}" must be of type {kind}'


def test_unknown_and_legacy_options_are_ignored(server) -> None:
    r = post(server, "/api/generate", json={
        "model": "tiny", "prompt": "hi", "stream": False,
        "options": {"num_predict": 3, "mirostat": 1, "penalize_newline": True, "numa": False,
                    "not_an_option": "x"}})
    assert r.status_code == 200
    assert r.json()["eval_count"] == 3


def test_integral_float_options_are_truncated_like_ollama(server) -> None:
    r = post(server, "/api/generate", json={
        "model": "tiny", "prompt": "hi", "stream": False, "options": {"num_predict": 4.0}})
    assert r.status_code == 200
    assert r.json()["eval_count"] == 4


@pytest.mark.parametrize("keep_alive", ["3600", "soon", True])
def test_bad_keep_alive_is_400(server, keep_alive) -> None:
    r = post(server, "/api/generate", json={"model": "tiny", "prompt": "", "keep_alive": keep_alive})
    assert r.status_code == 400
    assert error_of(r)


def test_raw_with_system_is_400(server) -> None:
    r = post(server, "/api/generate", json={"model": "tiny", "prompt": "x", "raw": True, "system": "s"})
    assert (r.status_code, error_of(r)) == (400, "raw mode does not support template, system, or context")


def test_top_logprobs_out_of_range_is_400(server) -> None:
    r = post(server, "/api/chat", json={"model": "tiny", "messages": [], "top_logprobs": 21})
    assert (r.status_code, error_of(r)) == (400, "top_logprobs must be between 0 and 20")


def test_think_on_a_model_without_thinking_is_400(server) -> None:
    r = post(server, "/api/chat", json={"model": "tiny", "think": True,
                                        "messages": [{"role": "user", "content": "hi"}]})
    assert (r.status_code, error_of(r)) == (400, '"tiny" does not support thinking')
    r = post(server, "/api/generate", json={"model": "tiny", "prompt": "x", "think": "extreme"})
    assert r.status_code == 400 and "invalid think value" in error_of(r)


def test_input_longer_than_context_without_truncate_is_400(server) -> None:
    r = post(server, "/api/generate", json={
        "model": "tiny", "prompt": "hello world " * 200, "truncate": False, "stream": False,
        "options": {"num_ctx": 64}})
    assert (r.status_code, error_of(r)) == (400, "the input length exceeds the context length")


def test_input_longer_than_context_is_truncated_by_default(server) -> None:
    r = post(server, "/api/generate", json={
        "model": "tiny", "prompt": "hello world " * 200, "stream": False,
        "options": {"num_ctx": 64, "num_predict": 4}})
    assert r.status_code == 200
    body = r.json()
    assert body["prompt_eval_count"] < 64 and body["eval_count"] == 4


def test_unknown_path_and_wrong_method(server) -> None:
    r = httpx.get(server.url + "/api/nothing-here")
    assert (r.status_code, r.text) == (404, "404 page not found")
    r = httpx.get(server.url + "/api/generate")
    assert (r.status_code, r.text) == (405, "405 method not allowed")


@pytest.mark.parametrize("bad_id", [-1, 10**9])
def test_a_context_id_outside_the_vocabulary_fails_that_request_alone(server, bad_id: int) -> None:
    """Such an id would fail llama_decode for every stream sharing the step."""
    import concurrent.futures

    def neighbour() -> dict:
        return post(server, "/api/generate", json={
            "model": "tiny", "prompt": "a neighbour", "stream": False,
            "options": {"num_predict": 24, "temperature": 0}}).json()

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        running = pool.submit(neighbour)
        r = post(server, "/api/generate", json={"model": "tiny", "prompt": "x", "stream": False,
                                                "context": [1, bad_id]})
        other = running.result()
    assert r.status_code == 400
    assert f"token id {bad_id} is not in the model's vocabulary" in error_of(r)
    assert other["done_reason"] == "length" and other["eval_count"] == 24
