"""End to end on the real gemma3:270m (the optional base model), imported from its PyPI package."""

from __future__ import annotations

import threading

import httpx
import pytest

from support.herd_server import HerdServer

pytestmark = pytest.mark.gemma


@pytest.fixture(scope="module")
def gemma(tmp_path_factory: pytest.TempPathFactory):
    srv = HerdServer(tmp_path_factory.mktemp("gemma"), default_model="gemma3:270m")
    with srv:
        yield srv


def test_default_model_is_imported_once(gemma, tmp_path) -> None:
    (m,) = httpx.get(gemma.url + "/api/tags").json()["models"]
    assert m["name"] == "gemma3:270m"
    assert m["details"]["family"] == "gemma3"
    assert m["details"]["quantization_level"] == "Q4_K_M"
    assert m["details"]["parameter_size"] == "268.10M"
    manifest = gemma.models_dir / "manifests/registry.ollama.ai/library/gemma3/270m"
    before = manifest.stat().st_mtime_ns
    again = HerdServer(tmp_path / "again", models_dir=gemma.models_dir, default_model="gemma3:270m")
    with again:
        assert [x["name"] for x in httpx.get(again.url + "/api/tags").json()["models"]] == ["gemma3:270m"]
    assert manifest.stat().st_mtime_ns == before


def test_chat_streams_text_with_the_builtin_gemma_template(gemma) -> None:
    client = gemma.client()
    chunks = list(client.chat(model="gemma3:270m", stream=True, options={"num_predict": 32, "seed": 1},
                              messages=[{"role": "system", "content": "You are terse."},
                                        {"role": "user", "content": "Name three colours."}]))
    text = "".join(c.message.content for c in chunks)
    final = chunks[-1]
    assert text.strip()
    assert "<start_of_turn>" not in text and "<end_of_turn>" not in text
    assert final.done and final.done_reason in ("stop", "length")
    assert 0 < final.eval_count <= 32
    assert final.prompt_eval_count > 10


def test_greedy_generate_is_identical_streamed_or_not(gemma) -> None:
    client = gemma.client()
    opts = {"temperature": 0, "num_predict": 24}
    whole = client.generate(model="gemma3:270m", prompt="The capital of France is", raw=True, options=opts)
    streamed = "".join(c.response for c in client.generate(
        model="gemma3:270m", prompt="The capital of France is", raw=True, options=opts, stream=True))
    assert whole.response == streamed
    assert whole.response.strip()


def test_four_clients_chat_at_once(gemma) -> None:
    results: dict[int, int] = {}
    errors: list[BaseException] = []

    def chat(i: int) -> None:
        try:
            r = gemma.client().chat(model="gemma3:270m", options={"num_predict": 16, "seed": i},
                                    messages=[{"role": "user", "content": f"Say something about number {i}."}])
            results[i] = r.eval_count
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=chat, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert not errors
    assert sorted(results) == [0, 1, 2, 3]
    assert all(0 < n <= 16 for n in results.values())


def test_multi_turn_chat_keeps_history(gemma) -> None:
    client = gemma.client()
    history = [{"role": "user", "content": "My name is Ada. Remember it."}]
    first = client.chat(model="gemma3:270m", messages=history, options={"num_predict": 16, "temperature": 0})
    history += [{"role": "assistant", "content": first.message.content},
                {"role": "user", "content": "What is my name?"}]
    second = client.chat(model="gemma3:270m", messages=history, options={"num_predict": 16, "temperature": 0})
    assert second.prompt_eval_count > first.prompt_eval_count + first.eval_count - 1
    assert second.message.content.strip()
