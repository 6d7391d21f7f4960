"""The gateway's own CPU per streamed token: what relaying costs beside the runner.

A real `herd serve` (throughput.py's scratch server, its default model), N concurrent streaming
/api/generate requests, and the CPU time of the gateway process alone (not its worker node or
runner) over each round, divided by the tokens the round streamed. On a 2-core host every
millisecond of it is taken from the cores llama.cpp's threads decode on.

usage: python bench/gateway_cpu.py [--streams 1,8] [--tokens 400] [--rounds 3]
To compare two versions of the gateway, run it on each checkout, one after the other.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import pathlib
import sys
import tempfile
import time

import aiohttp

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

from throughput import generate_body, herd_server, wait_ready  # noqa: E402


def process_cpu_s(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def stream_one(session: aiohttp.ClientSession, base: str, body: dict) -> int:
    async with session.post(f"{base}/api/generate", json=body) as resp:
        resp.raise_for_status()
        async for line in resp.content:
            chunk = json.loads(line)
            if chunk.get("done"):
                return int(chunk.get("eval_count", 0))
    return 0


async def measure(streams: list[int], tokens: int, rounds: int) -> None:
    with tempfile.TemporaryDirectory() as tmp, \
            herd_server(max(streams), None, pathlib.Path(tmp) / "herd.log") as server:
        timeout = aiohttp.ClientTimeout(total=900)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            await wait_ready(session, server)
            await stream_one(session, server.base, generate_body(0, 8))  # load, warm
            print("streams | round | tokens | tok/s  | gateway CPU ms/token")
            for n in streams:
                for r in range(rounds):
                    bodies = [generate_body(1000 * r + i + 1, tokens) for i in range(n)]
                    cpu0, t0 = process_cpu_s(server.proc.pid), time.perf_counter()
                    counts = await asyncio.gather(*(stream_one(session, server.base, b)
                                                    for b in bodies))
                    wall = time.perf_counter() - t0
                    cpu = process_cpu_s(server.proc.pid) - cpu0
                    total = sum(counts)
                    print(f"{n:7d} | {r + 1:5d} | {total:6d} | {total / wall:6.1f} | "
                          f"{1000 * cpu / max(total, 1):.3f}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--streams", default="1,8")
    ap.add_argument("--tokens", type=int, default=400)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    asyncio.run(measure([int(s) for s in args.streams.split(",")], args.tokens, args.rounds))


if __name__ == "__main__":
    main()
