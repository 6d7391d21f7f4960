"""`draft_num_predict: -1` on text that does not repeat its prompt: unseeded chat answers at the
default temperature (0.8) through a real `herd serve` (throughput.py's scratch server), one and
eight streams, drafts where they pay (-1) against off (0), the two alternating round by round;
aggregate tok/s = the rounds' eval_count / wall time, medians over the rounds.

usage: python bench/drafts_unseeded.py [--model smollm2:135m|gemma3:270m] [--rounds 4]
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

from speculative_http import chat  # noqa: E402
from throughput import herd_server, wait_ready  # noqa: E402

PROMPTS = ["Write a story about a dragon.", "Explain how rain forms.", "Describe a city at night.",
           "Write a poem about the sea.", "Tell me about the history of bread.",
           "How do bees make honey?", "Write a letter to a friend.", "Describe your ideal garden."]
TOKENS = 128


async def one(session: aiohttp.ClientSession, base: str, model: str, prompt: str,
              draft: int) -> int:
    done = await chat(session, base, prompt, {}, draft, model=model, tokens=TOKENS)
    return int(done["eval_count"])


async def main(model: str, rounds: int) -> None:
    rates: dict[tuple[int, int], list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp, \
            herd_server(8, None, pathlib.Path(tmp) / "herd.log", model=model) as server:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=900)) as session:
            await wait_ready(session, server)
            await one(session, server.base, model, "hi", 0)
            for n in (1, 8):
                for r in range(rounds):
                    for draft in ((-1, 0) if r % 2 == 0 else (0, -1)):
                        t0 = time.perf_counter()
                        counts = await asyncio.gather(*(
                            one(session, server.base, model, PROMPTS[(i + r) % len(PROMPTS)], draft)
                            for i in range(n)))
                        rates.setdefault((n, draft), []).append(
                            sum(counts) / (time.perf_counter() - t0))
    print(f"# bench/drafts_unseeded.py, {time.strftime('%Y-%m-%d %H:%M UTC')}, {model}, "
          f"{rounds} rounds x {TOKENS} tokens")
    for n in (1, 8):
        auto, off = (statistics.median(rates[(n, d)]) for d in (-1, 0))
        print(f"{n} streams: -1 {auto:.1f} tok/s, off {off:.1f} tok/s, {auto / off:.2f}x "
              f"(rounds {[round(x) for x in rates[(n, -1)]]} / {[round(x) for x in rates[(n, 0)]]})")


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2:135m")
    ap.add_argument("--rounds", type=int, default=4)
    args = ap.parse_args()
    asyncio.run(main(args.model, args.rounds))
