"""Probe: the cost of one decode step (one token for each of 8 sequences) as a function of the
order of the tokens in the llama_batch and of which sequence ids take part, on a split (one
stream per sequence) and a unified KV cache. No engine: LlamaContext + llama_decode alone.

usage: python bench/ubatch_probe.py [--model-path PATH] [--reps 30] [--ctx-tokens 64]
"""

from __future__ import annotations

import argparse
import pathlib
import random
import statistics
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import llama_cpp as L  # noqa: E402

from herd.worker.engine.llama import LlamaContext, LlamaModel  # noqa: E402


def ubatches_split_equal(seq_ids: list[int]) -> int:
    """How many ubatches llama.cpp's split_equal(sequential=true) makes of one token per seq."""
    left, n = list(seq_ids), 0
    while left:
        taken, last = [], None
        for s in left:
            if last is None or s == last + 1:
                taken.append(s)
                last = s
        left = [s for s in left if s not in taken]
        n += 1
    return n


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model-path", required=True)
    ap.add_argument("--reps", type=int, default=30)
    ap.add_argument("--ctx-tokens", type=int, default=64)
    args = ap.parse_args()
    model = LlamaModel(args.model_path)
    n_seq = 8
    ctxs = {}
    for unified in (False, True):
        ctxs[unified] = LlamaContext(model, n_ctx_seq=2048, n_seq=n_seq, n_batch=512, n_threads=2,
                                     kv_unified=unified)
    batch = L.llama_batch_init(512, 0, 1)
    pos = {u: [0] * n_seq for u in ctxs}

    def decode(unified: bool, seqs: list[int], ntok: int = 1) -> float:
        ctx = ctxs[unified]
        n = 0
        for s in seqs:
            for _ in range(ntok):
                batch.token[n] = 100 + (pos[unified][s] % 50)
                batch.pos[n] = pos[unified][s]
                batch.n_seq_id[n] = 1
                batch.seq_id[n][0] = s
                batch.logits[n] = True
                pos[unified][s] += 1
                n += 1
        batch.n_tokens = n
        t = time.perf_counter()
        assert L.llama_decode(ctx.ptr, batch) == 0
        return time.perf_counter() - t

    for u in ctxs:  # a prompt's worth of context in every sequence
        for s in range(n_seq):
            decode(u, [s], args.ctx_tokens)
    rng = random.Random(0)
    orders = {
        "0..7 in order": list(range(8)),
        "7..0 reversed": list(range(7, -1, -1)),
        "random permutation": None,
        "4 seqs 0..3": [0, 1, 2, 3],
        "4 seqs 0,2,4,6 (gaps)": [0, 2, 4, 6],
    }
    times: dict[tuple[str, bool], list[float]] = {(k, u): [] for k in orders for u in ctxs}
    for _ in range(args.reps):  # interleaved: every variant once per rep
        for name, order in orders.items():
            for u in ctxs:
                seqs = order if order is not None else rng.sample(range(8), 8)
                times[(name, u)].append(decode(u, seqs))
    print(f"{'tokens in the batch':<24} | ubatches (split) | split KV ms | unified KV ms")
    for name, order in orders.items():
        nub = ubatches_split_equal(order) if order is not None else "3-5"
        print(f"{name:<24} | {str(nub):>16} | {1000 * statistics.median(times[(name, False)]):11.2f}"
              f" | {1000 * statistics.median(times[(name, True)]):13.2f}")
    L.llama_batch_free(batch)


if __name__ == "__main__":
    main()
