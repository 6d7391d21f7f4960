"""Speculative decoding through the HTTP API: throughput.py's `herd serve` (gemma3 270M), every
workload of bench/speculative.py as one /api/chat request of 120 tokens with
`draft_num_predict` 0 (off), -1 (where it pays) and 8 (forced), the order alternating from one
repeat to the next; medians of the final chunks' eval rate (eval_count / eval_duration).

`--sampled` sends every workload at temperature 0.8 without a seed instead (what a client that
sets no options gets): the answers then differ from run to run, and are not compared.

usage: python bench/speculative_http.py [--repeats 3] [--model gemma3:270m|smollm2:135m]
                                        [--sampled]
"""

from __future__ import annotations

import argparse
import asyncio
import pathlib
import statistics
import sys
import tempfile
import time

import aiohttp

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

from speculative import WORKLOADS  # noqa: E402
from throughput import MODEL, herd_server, wait_ready  # noqa: E402

MODES = {"off": 0, "auto": -1, "forced": 8}
TOKENS = 120


async def chat(session: aiohttp.ClientSession, base: str, message: str, options: dict,
               draft: int, model: str = MODEL, tokens: int = TOKENS) -> dict:
    """One /api/chat answer of `tokens` tokens with `draft_num_predict` = draft: its last chunk."""
    body = {"model": model, "messages": [{"role": "user", "content": message}], "stream": False,
            "options": {"num_predict": tokens, **options, "draft_num_predict": draft}}
    async with session.post(f"{base}/api/chat", json=body) as resp:
        resp.raise_for_status()
        return await resp.json()


SAMPLED = {"temperature": 0.8}


async def main(repeats: int, model: str, sampled: bool) -> None:
    rates: dict[tuple[str, str], list[float]] = {}
    texts: dict[tuple[str, str], set[str]] = {}
    t0 = time.time()
    with tempfile.TemporaryDirectory() as tmp, \
            herd_server(1, None, pathlib.Path(tmp) / "herd.log", model=model) as server:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=600)) as session:
            await wait_ready(session, server)
            await chat(session, server.base, "hi", {}, 0, model=model)  # load and warm
            for r in range(repeats):
                for name, (_, message, options) in WORKLOADS.items():
                    options = SAMPLED if sampled else options
                    modes = list(MODES) if r % 2 == 0 else list(reversed(MODES))
                    for mode in modes:
                        done = await chat(session, server.base, message, options, MODES[mode],
                                          model=model)
                        rates.setdefault((name, mode), []).append(
                            done["eval_count"] / done["eval_duration"] * 1e9)
                        texts.setdefault((name, mode), set()).add(done["message"]["content"])
    print(f"# bench/speculative_http.py, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime(t0))}, "
          f"{model}, {repeats} repeats x {TOKENS} tokens, one stream"
          f"{', all at temperature 0.8 unseeded' if sampled else ''}")
    print("| workload | kind | off tok/s | auto tok/s | auto/off | forced tok/s | forced/off |"
          " auto answers = off's |")
    print("|---|---|---|---|---|---|---|---|")
    for name, (kind, _, _) in WORKLOADS.items():
        off, auto, forced = (statistics.median(rates[(name, m)]) for m in MODES)
        same = "n/a" if sampled else "yes" if texts[(name, "auto")] == texts[(name, "off")] else "NO"
        print(f"| {name} | {kind} | {off:.1f} | {auto:.1f} | {auto / off:.2f}x | {forced:.1f} | "
              f"{forced / off:.2f}x | {same} |")


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--model", default=MODEL)
    ap.add_argument("--sampled", action="store_true")
    args = ap.parse_args()
    asyncio.run(main(args.repeats, args.model, args.sampled))
