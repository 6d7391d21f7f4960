"""Sampling inside the decode graph (llama_set_sampler), forced on for a CPU so that it is tested
here: the answers must be the very ones the C sampler chains give after the decode."""

from __future__ import annotations

import concurrent.futures
import pathlib

import httpx
import pytest

from herd.protocol.wire import FinishReason, RequestOutput, RunnerSpec, SamplingParams, Submit
from herd.worker.engine.batch import BatchEngine
from herd.worker.runner import device_sampling, load_engine

# Each kind of chain: fully in the graph, greedy, a prefix in the graph (typical_p is CPU-only),
# and chains that cannot go there at all (grammar, penalties).
_OPTIONS = [
    {"temperature": 0.9, "top_k": 40, "top_p": 0.9, "seed": 11},
    {"temperature": 0.0},
    {"temperature": 0.8, "typical_p": 0.7, "seed": 3},
    {"temperature": 0.8, "repeat_penalty": 1.3, "seed": 4},
    {"temperature": 1.0, "min_p": 0.05, "seed": 5},
]


def _answers(base_url: str) -> list[str]:
    def one(i: int) -> str:
        body = {"model": "tiny", "prompt": f"request {i} tells a story", "stream": False,
                "options": {**_OPTIONS[i % len(_OPTIONS)], "num_predict": 24}}
        if i == 5:
            body["format"] = "json"
        r = httpx.post(f"{base_url}/api/generate", json=body)
        assert r.status_code == 200, r.text
        return r.json()["response"]

    with concurrent.futures.ThreadPoolExecutor(6) as pool:  # several sequences per decode
        return list(pool.map(one, range(6)))


def test_device_sampling_gives_the_cpu_chains_answers(make_server) -> None:
    on = make_server(HERD_DEVICE_SAMPLING="on", OLLAMA_NUM_PARALLEL="6")
    off = make_server(HERD_DEVICE_SAMPLING="off", OLLAMA_NUM_PARALLEL="6")
    with_device, without = _answers(on.url), _answers(off.url)
    assert with_device == without
    assert len(set(with_device)) > 1


def _collecting_engine(path: pathlib.Path, **spec: int
                       ) -> tuple[BatchEngine, dict[int, list[RequestOutput]]]:
    """An engine on the tiny model and the outputs it emits, by request id."""
    outputs: dict[int, list[RequestOutput]] = {}

    def emit(_: bytes, outs: list[RequestOutput]) -> None:
        for o in outs:
            outputs.setdefault(o.req_id, []).append(o)

    _, engine = load_engine(RunnerSpec(key="t", model_digest="", **spec), emit, str(path))
    return engine, outputs


def test_engine_attaches_only_capable_chains(tiny_gguf: pathlib.Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HERD_DEVICE_SAMPLING", "on")
    engine, outputs = _collecting_engine(tiny_gguf, num_ctx=256, num_parallel=3)
    try:
        assert engine.device_sampling
        engine.submit(b"c", Submit(1, SamplingParams(temperature=0.7, seed=1, num_predict=6),
                                   raw_prompt="hello"))
        engine.submit(b"c", Submit(2, SamplingParams(num_predict=6, format="json"),
                                   raw_prompt="hello"))
        engine.submit(b"c", Submit(3, SamplingParams(num_predict=6, repeat_penalty=1.2),
                                   raw_prompt="hello"))
        engine.step()
        attached = {seq.req.req_id: seq.on_device for seq in engine._running}
        assert attached == {1: True, 2: False, 3: False}
        while engine.has_work:
            engine.step()
        assert all(outs[-1].finish != FinishReason.NONE and not outs[-1].error for outs in outputs.values())
        assert sorted(outputs) == [1, 2, 3]
    finally:
        engine.close()


def test_device_sampling_setting() -> None:
    spec = RunnerSpec(key="t", model_digest="x", num_ctx=16, num_parallel=1, num_gpu_layers=0)
    assert device_sampling(spec, {"HERD_DEVICE_SAMPLING": "on"})
    assert not device_sampling(spec, {"HERD_DEVICE_SAMPLING": "off"})
    # auto: never with every layer on the CPU
    assert not device_sampling(spec, {})


def test_padding_never_asks_a_graph_sampled_prefill_for_logits(
        tiny_gguf: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Five decoding streams make 5 logits rows, which the CPU padding rounds up to 8 by asking
    # the sixth sequence's prefill tokens for logits; that sequence's chain is in the graph,
    # and llama.cpp refuses a batch with more than one output for such a sequence.
    monkeypatch.setenv("HERD_DEVICE_SAMPLING", "on")
    engine, outputs = _collecting_engine(tiny_gguf, num_ctx=512, num_parallel=6)
    try:
        assert engine.device_sampling and engine._shaper.pads
        for req_id in range(5):
            engine.submit(b"c", Submit(req_id, SamplingParams(temperature=0.7, seed=req_id,
                                                              num_predict=12),
                                       raw_prompt=f"hello {req_id}"))
        engine.step()
        while any(seq.prefilling for seq in engine._running):
            engine.step()
        engine.submit(b"c", Submit(5, SamplingParams(temperature=0.7, seed=9, num_predict=4),
                                   raw_prompt="a much longer prompt " * 6))
        while engine.has_work:
            engine.step()
        assert sorted(outputs) == list(range(6))
        assert [outs[-1].error for outs in outputs.values()] == [""] * 6
    finally:
        engine.close()
