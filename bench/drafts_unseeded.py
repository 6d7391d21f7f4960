"""`draft_num_predict: -1` on text that does not repeat its prompt: chat answers sampled at the
default temperature (0.8) through a real `herd serve` (throughput.py's scratch server), one and
eight streams (a round: the eight prompts, one or eight at a time), drafts where they pay (-1)
against off (0), the two alternating round by round; aggregate tok/s = the round's eval_count /
wall time, medians over the rounds.

Each request has a seed of its own, the same in both modes (speculation changes no seeded
answer), so the two modes generate the same text and their rates differ only by the drafting.
`--unseeded` leaves the seed out, as clients mostly do: answers then differ in length from round
to round, and an answer that ends early lowers its round's aggregate rate.

usage: python bench/drafts_unseeded.py [--model smollm2:135m|gemma3:270m] [--rounds 4] [--unseeded]
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
              draft: int, seed: int | None) -> tuple[int, str]:
    options = {} if seed is None else {"seed": seed}
    done = await chat(session, base, prompt, options, draft, model=model, tokens=TOKENS)
    return int(done["eval_count"]), done["message"]["content"]


async def main(model: str, rounds: int, seeded: bool) -> None:
    rates: dict[tuple[int, int], list[float]] = {}
    answers: dict[tuple[int, int, int], list[str]] = {}
    with tempfile.TemporaryDirectory() as tmp, \
            herd_server(8, None, pathlib.Path(tmp) / "herd.log", model=model) as server:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=900)) as session:
            await wait_ready(session, server)
            await one(session, server.base, model, "hi", 0, None)
            for n in (1, 8):
                for r in range(rounds):
                    for draft in ((-1, 0) if r % 2 == 0 else (0, -1)):
                        # All eight prompts every round: n at a time.
                        t0 = time.perf_counter()
                        done = []
                        for at in range(0, len(PROMPTS), n):
                            done += await asyncio.gather(*(
                                one(session, server.base, model, PROMPTS[(i + r) % len(PROMPTS)],
                                    draft, 1000 * r + i if seeded else None)
                                for i in range(at, at + n)))
                        rates.setdefault((n, draft), []).append(
                            sum(count for count, _ in done) / (time.perf_counter() - t0))
                        answers[(n, r, draft)] = [text for _, text in done]
    print(f"# bench/drafts_unseeded.py, {time.strftime('%Y-%m-%d %H:%M UTC')}, {model}, "
          f"{rounds} rounds x {TOKENS} tokens, {'seeded' if seeded else 'unseeded'}")
    for n in (1, 8):
        auto, off = (statistics.median(rates[(n, d)]) for d in (-1, 0))
        print(f"{n} streams: -1 {auto:.1f} tok/s, off {off:.1f} tok/s, {auto / off:.2f}x "
              f"(rounds {[round(x) for x in rates[(n, -1)]]} / {[round(x) for x in rates[(n, 0)]]})")
        if seeded:
            same = all(answers[(n, r, -1)] == answers[(n, r, 0)] for r in range(rounds))
            print(f"  answers with -1 = answers off: {'yes' if same else 'NO'}")


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2:135m")
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--unseeded", action="store_true")
    args = ap.parse_args()
    asyncio.run(main(args.model, args.rounds, not args.unseeded))
