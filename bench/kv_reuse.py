"""Decode speed with and without KV-prefix reuse, in-process (no gateway): rounds of N concurrent
requests at temperature 0, rounds 1, 3, 4 with new prompts, 2 and 5 repeating the round before
(every slot's prefix cached), then a chat: turn 1 and turn 2 (turn 1's prompt and answer reused).
Requests are submitted in a shuffled order, as concurrent HTTP clients arrive.

Variants run side by side, each on its own context, interleaved round by round:
  before  the engine as committed at BEFORE_REV (batch in admission order, slot = the first
          with the longest shared prefix); before@REV takes it from another commit
  after   the engine as it is

usage: python bench/kv_reuse.py [--model-path PATH] [--streams 8] [--tokens 128] [--reps 2]
                                [--variants before,after] [--chat-streams 8,4] [--threads N]
"""

from __future__ import annotations

import argparse
import pathlib
import random
import statistics
import subprocess
import sys
import time
import types

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from herd.protocol.wire import ChatTurn, RequestOutput, RunnerSpec, SamplingParams, Submit  # noqa: E402
from herd.worker.runner import load_engine  # noqa: E402

BEFORE_REV = "51f3229"  # the engine before the fix (batch in admission order)

TOPICS = ["a lighthouse keeper", "a clockmaker", "a lost robot", "a dragon who bakes bread",
          "a submarine crew", "a desert caravan", "a haunted library", "a chess prodigy",
          "a mountain village", "a space station cook", "an old sailor", "a city of bridges",
          "a tiny beetle", "a violin maker", "a snowed-in train", "a secret garden",
          "a pirate radio DJ", "a volcano observatory", "a glass blower", "a runaway balloon",
          "a jungle cartographer", "a night-shift nurse", "a cloud farmer", "a river ferryman",
          "a museum guard", "a deep-sea diver", "a circus acrobat", "a beekeeper",
          "a comet hunter", "a cartoonist", "a lock picker", "a tea plantation"]


OLD_MODULES = {
    "protocol.wire": "herd.protocol.wire",
    "worker.chat_template": "herd.worker.templates.jinja",
    "worker.llama_model": "herd.worker.engine.llama",
    "worker.logprobs": "herd.worker.engine.logprobs",
    "worker.prompt": "herd.worker.engine.prompt",
    "worker.sampler": "herd.worker.engine.sampler",
    "worker.textstream": "herd.worker.engine.textstream",
    "worker.thinking": "herd.worker.engine.thinking",
}


def head_engine_class(rev: str = "51f3229"):
    """BatchEngine as committed at `rev` (before this change): batch in admission order, the
    first free slot with the longest shared prefix."""
    src = subprocess.run(["git", "-C", str(ROOT), "show", f"{rev}:worker/engine.py"],
                         check=True, capture_output=True, text=True).stdout
    # That engine predates the herd.* layout: point its imports at today's modules.
    for old, new in OLD_MODULES.items():
        src = src.replace(f"from {old} import", f"from {new} import")
    module = types.ModuleType("engine_before")
    sys.modules[module.__name__] = module  # dataclasses look their module up
    exec(compile(src, f"{rev}:worker/engine.py", "exec"), module.__dict__)
    return module.BatchEngine


def make_engine(path: str, streams: int, variant: str, threads: int = 0):
    outputs: dict[int, list[RequestOutput]] = {}

    def emit(_: bytes, outs: list[RequestOutput]) -> None:
        for o in outs:
            outputs.setdefault(o.req_id, []).append(o)

    spec = RunnerSpec(key=variant, model_digest="", num_ctx=2048, num_parallel=streams,
                      num_threads=threads)
    model, engine = load_engine(spec, emit, path)
    if variant.startswith("before"):
        cls = head_engine_class(variant.partition("@")[2] or BEFORE_REV)
        engine = cls(model, engine.ctx, engine.prompts.template, emit,
                     device_sampling=engine.device_sampling)
    return model, engine, outputs


def run_rounds(engines: dict, reqs: dict[str, list[Submit]], order_seed: float) -> dict:
    """One round on every variant at once: the engines step in turn, one step each, so a burst of
    load from elsewhere on the machine hits all of them alike. Each engine's clock runs only
    during its own steps; decode time starts once every request of the round has its first
    token."""
    state = {}
    for v, rs in reqs.items():
        engine, outputs = engines[v][1], engines[v][2]
        outputs.clear()
        order = list(rs)
        random.Random(order_seed).shuffle(order)
        for r in order:
            engine.submit(b"bench", r)
        engine._admit()
        # prompt tokens found in the slots' caches / all prompt tokens of the round
        cached = (f"{sum(len(seq.slot.tokens) for seq in engine._running)}/"
                  f"{sum(len(seq.prompt) for seq in engine._running)}")
        state[v] = {"clock": 0.0, "decode": 0.0, "steps": 0, "decoding": False, "cached": cached}
    active = [v for v in reqs]
    while active:
        for v in list(active):
            engine, st = engines[v][1], state[v]
            if not engine.has_work:
                active.remove(v)
                continue
            t = time.perf_counter()
            engine.step()
            dt = time.perf_counter() - t
            st["clock"] += dt
            st["steps"] += 1
            if st["decoding"]:
                st["decode"] += dt
            elif not engine._waiting and all(s.t_first for s in engine._running):
                st["decoding"] = True
    out = {}
    for v, rs in reqs.items():
        outputs, st = engines[v][2], state[v]
        finals = {rid: outs[-1] for rid, outs in outputs.items()}
        texts = {rid: "".join(o.text for o in outs) for rid, outs in outputs.items()}
        gen = sum(f.eval_tokens for f in finals.values())
        out[v] = {"tok_s": gen / max(st["decode"], 1e-9), "wall": st["clock"], "gen": gen,
                  "slowest_eval_s": max(f.eval_ns for f in finals.values()) / 1e9,
                  "texts": texts, "finals": finals,
                  "ms_per_step": 1000 * st["decode"] / max(st["steps"], 1),
                  "cached": st["cached"]}
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model-path", required=True)
    ap.add_argument("--streams", type=int, default=8)
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--variants", default="before,after")
    ap.add_argument("--chat-streams", default="8,4")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--threads", type=int, default=0,
                    help="llama.cpp threads (0: the runner's default, every CPU it may use); "
                         "1 keeps a machine shared with other load from stalling on barriers")
    args = ap.parse_args()
    variants = args.variants.split(",")
    engines = {v: make_engine(args.model_path, args.streams, v, args.threads) for v in variants}
    sampling = SamplingParams(temperature=0.0, num_predict=args.tokens)
    rng = random.Random(args.seed)
    topics = list(TOPICS)
    rng.shuffle(topics)
    plan = ["new", "same", "new", "new", "same"]
    results: dict[tuple[str, int, int], list[dict]] = {}
    next_id = [0]

    def prompts(k: int) -> list[str]:
        start = (k * args.streams) % len(topics)
        return [f"Write a long, detailed story about {topics[(start + i) % len(topics)]}. "
                f"Once upon a time" for i in range(args.streams)]

    for v in variants:  # warm-up: the first decodes of a context allocate its graphs
        next_id[0] += 1
        run_rounds(engines, {v: [Submit(next_id[0], SamplingParams(
            temperature=0.0, num_predict=16), raw_prompt="Hello")]}, 0.0)
    set_no = 0
    for rep in range(args.reps):
        current: list[str] = []
        for rnd, kind in enumerate(plan):
            if kind == "new":
                current = prompts(set_no)
                set_no += 1
            reqs = {}
            for v in variants:
                reqs[v] = []
                for p in current:
                    next_id[0] += 1
                    reqs[v].append(Submit(next_id[0], sampling, raw_prompt=p))
            res = run_rounds(engines, reqs, rng.random())
            for v in variants:
                res[v]["by_prompt"] = {p: res[v]["texts"][r.req_id]
                                       for p, r in zip(current, reqs[v])}
                results.setdefault((v, rnd, 0), []).append(res[v])
            line = " | ".join(f"{v} {res[v]['tok_s']:6.1f} ({res[v]['gen']} tok, "
                              f"{res[v]['ms_per_step']:.1f} ms/step, {res[v]['cached']} prompt tokens cached)"
                              for v in variants)
            print(f"rep {rep} round {rnd + 1} ({kind:4}): decode tok/s {line}", flush=True)
    # identical answers: a repeated round against the round it repeats, per variant
    for v in variants:
        same = all(results[(v, 1, 0)][i]["by_prompt"] == results[(v, 0, 0)][i]["by_prompt"]
                   and results[(v, 4, 0)][i]["by_prompt"] == results[(v, 3, 0)][i]["by_prompt"]
                   for i in range(args.reps))
        print(f"{v}: repeated rounds give the same text as the fresh ones: {same}")
    print()
    print("| round | prompts | " + " | ".join(f"{v} tok/s (median of {args.reps})"
                                             for v in variants) + " |")
    print("|---|---|" + "---|" * len(variants))
    for rnd, kind in enumerate(plan):
        cells = [f"{statistics.median(r['tok_s'] for r in results[(v, rnd, 0)]):.1f}"
                 for v in variants]
        print(f"| {rnd + 1} | {kind} | " + " | ".join(cells) + " |")
    # chat: turn 1, then turn 2 with turn 1's prompt and answer as its prefix
    for n_chat in (int(x) for x in args.chat_streams.split(",") if x):
        chat_res: dict[tuple[str, int], list[float]] = {}
        for rep in range(args.reps):
            qs = [f"Tell me about {t}." for t in rng.sample(TOPICS, args.streams)]
            # turn 1 on all slots; turn 2 continues n_chat of the chats (every other one if fewer)
            cont = list(range(args.streams))[::max(args.streams // n_chat, 1)][:n_chat]
            t1 = {}
            for v in variants:
                t1[v] = []
                for q in qs:
                    next_id[0] += 1
                    t1[v].append(Submit(next_id[0], sampling, messages=[ChatTurn("user", q)]))
            r1 = run_rounds(engines, t1, rng.random())
            t2 = {}
            for v in variants:
                t2[v] = []
                for i in cont:
                    next_id[0] += 1
                    answer = r1[v]["texts"][t1[v][i].req_id]
                    t2[v].append(Submit(next_id[0], sampling, messages=[
                        ChatTurn("user", qs[i]), ChatTurn("assistant", answer),
                        ChatTurn("user", "Now tell me more, with more detail.")]))
            r2 = run_rounds(engines, t2, rng.random())
            for v in variants:
                chat_res.setdefault((v, 1), []).append(r1[v]["tok_s"])
                chat_res.setdefault((v, 2), []).append(r2[v]["tok_s"])
            print(f"chat rep {rep} ({n_chat} of {args.streams} continue): " + " | ".join(
                f"{v} turn1 {r1[v]['tok_s']:6.1f} turn2 {r2[v]['tok_s']:6.1f} "
                f"({r2[v]['cached']} turn-2 prompt tokens cached)"
                for v in variants), flush=True)
        print(f"\n| chat, {args.streams} turn-1 / {n_chat} turn-2 streams | " +
              " | ".join(f"{v} tok/s" for v in variants) + " |")
        print("|---|" + "---|" * len(variants))
        for turn in (1, 2):
            print(f"| turn {turn} | " + " | ".join(
                f"{statistics.median(chat_res[(v, turn)]):.1f}" for v in variants) + " |")


if __name__ == "__main__":
    main()
