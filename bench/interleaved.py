"""Herd beside llama-server with the rounds interleaved: issue 13 §2's table, with its spread.

    .venv/bin/python bench/interleaved.py [--rounds 5] [--streams 1,4,8,16] [--tokens 128]
                                          [--model-path PATH] [--quiet-wait 3]

bench/suite.py measures each peer alone, one after the other; on this shared 2-core machine
the same server's figure moves by 10-15 % from one run to the next (background load, CPU
boost, page cache), which is as much as the gaps it is meant to show. Here both servers are up
at once on the same GGUF (the one not being measured idles: no request, no CPU worth counting;
its CPU is recorded to show it), and every round runs every workload on both sides, the side
that goes first alternating from one workload to the next and from one round to the next, so
drifting load hits both alike. A workload is bench/suite.py's: n streams at once, raw
completions of --tokens tokens at temperature 0.8 / top_k 40 / top_p 0.9, seeds = stream
number; first with prompts no side has seen (a tag per round), then the same prompts again
(every slot's prefix cached). Each round is one sample; the table gives each side's median,
the median of the per-round Herd / llama-server ratios and the rounds Herd was ahead in.
A round disturbed by other programs (suite.py's Meter) is flagged, not dropped.
Writes bench/out/interleaved-<date>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import os
import statistics
import sys
import time
from pathlib import Path

import aiohttp
import msgspec

sys.path.insert(0, str(Path(__file__).resolve().parent))
from suite import (CTX_PER_SLOT, NOISY_CORES, SERVER_THREADS, Meter, aggregate,  # noqa: E402
                   machine, tree_cpu_by_name, versions, wait_quiet, warm_up)
from suite_peers import HerdClient, OpenAIClient, herd, llama_server, wait_ready  # noqa: E402
from throughput import OUT_DIR, default_model_path  # noqa: E402

SIDES = ("herd", "llama-server")


class Sample(msgspec.Struct):
    round: int
    side: str
    workload: str          # "1 new", "1 again", ...; "decode" is the 1-stream request's decode rate
    tok_s: float
    other_cores: float | None
    idle_peer_cpu_s: float  # CPU the side not measured spent meanwhile


def _cpu(pid: int) -> float:
    return sum(tree_cpu_by_name(pid).values())


async def one_side(client: HerdClient | OpenAIClient, n: int, tokens: int, tag: str,
                   quiet_wait: float) -> list[tuple[str, float, float | None]]:
    """The cold round and its repeat; for one stream also the decode rate of its request."""
    out = []
    for kind in ("new", "again"):
        await asyncio.to_thread(wait_quiet, quiet_wait)
        meter = Meter()
        rate, streams = await aggregate(client, n, tokens, tag)
        other = meter.other_cores()
        out.append((f"{n} {kind}", rate, other))
        if n == 1 and kind == "new":
            out.append(("decode", streams[0].decode_tok_s, other))
    return out


async def run(args: argparse.Namespace, model_path: str, logs: str) -> list[Sample]:
    par = max(args.streams)
    timeout = aiohttp.ClientTimeout(total=None, sock_read=300)
    samples: list[Sample] = []
    with contextlib.ExitStack() as stack:
        servers = {"herd": stack.enter_context(herd(par, CTX_PER_SLOT, Path(f"{logs}-herd.log"),
                                                    model_path)),
                   "llama-server": stack.enter_context(llama_server(
                       model_path, par, CTX_PER_SLOT, SERVER_THREADS,
                       Path(f"{logs}-llama-server.log")))}
        # llama-server (cpp-httplib) drops idle keep-alive connections: fresh ones for it.
        async with aiohttp.ClientSession(timeout=timeout) as hs, aiohttp.ClientSession(
                timeout=timeout, connector=aiohttp.TCPConnector(force_close=True)) as ls:
            clients = {"herd": HerdClient(hs, servers["herd"].base),
                       "llama-server": OpenAIClient(ls, servers["llama-server"].base, "/health")}
            for side in SIDES:
                await wait_ready(hs if side == "herd" else ls, servers[side],
                                 clients[side].ready_path)
                await warm_up(clients[side])
            turn = 0
            for r in range(args.rounds):
                for n in args.streams:
                    order = SIDES if turn % 2 == 0 else SIDES[::-1]
                    turn += 1
                    for side in order:
                        idle = next(s for s in SIDES if s != side)
                        idle_cpu0 = _cpu(servers[idle].proc.pid)
                        got = await one_side(clients[side], n, args.tokens,
                                             f"Round {r} batch {n}. ", args.quiet_wait)
                        idle_cpu = round(_cpu(servers[idle].proc.pid) - idle_cpu0, 2)
                        for workload, rate, other in got:
                            samples.append(Sample(r, side, workload, round(rate, 2), other,
                                                  idle_cpu))
                print(f"  round {r + 1}/{args.rounds} done", file=sys.stderr, flush=True)
    return samples


def table(samples: list[Sample], streams: list[int]) -> str:
    rows = ["| workload | Herd tok/s (median) | llama-server | ratio of medians | median of "
            "round ratios (min–max) | rounds Herd ahead | disturbed rounds |",
            "|---|---|---|---|---|---|---|"]
    workloads = ["decode"] + [f"{n} {k}" for n in streams for k in ("new", "again")]
    names = {"decode": "1 stream, decode rate of the request"}
    for w in workloads:
        by = {s: {x.round: x for x in samples if x.side == s and x.workload == w} for s in SIDES}
        rounds = sorted(set(by["herd"]) & set(by["llama-server"]))
        if not rounds:
            continue
        h = [by["herd"][r].tok_s for r in rounds]
        p = [by["llama-server"][r].tok_s for r in rounds]
        ratios = [a / b for a, b in zip(h, p) if b]
        noisy = sum(1 for r in rounds if any((by[s][r].other_cores or 0.0) >= NOISY_CORES
                                             for s in SIDES))
        n, kind = (w.split() + [""])[:2]
        label = names.get(w, f"{n} stream{'s' if n != '1' else ''}, "
                             f"{'new prompts' if kind == 'new' else 'same prompts again'}")
        rows.append(f"| {label} | {statistics.median(h):.1f} | {statistics.median(p):.1f} | "
                    f"**{statistics.median(h) / statistics.median(p):.2f}x** | "
                    f"{statistics.median(ratios):.2f}x ({min(ratios):.2f}–{max(ratios):.2f}) | "
                    f"{sum(x > 1 for x in ratios)} of {len(ratios)} | {noisy} |")
    return "\n".join(rows)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--streams", default="1,4,8,16")
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--model-path", default="")
    ap.add_argument("--quiet-wait", type=float, default=3.0,
                    help="seconds to wait for a quiet machine before each measurement")
    args = ap.parse_args()
    args.streams = [int(x) for x in args.streams.split(",")]
    model_path = args.model_path or default_model_path()
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%d-%H%M%S")
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    logs = str(OUT_DIR / f"interleaved-{stamp}")
    load0, t0 = os.getloadavg(), time.perf_counter()
    samples = asyncio.run(run(args, model_path, logs))
    report = {"date": stamp, "model_path": model_path, "rounds": args.rounds,
              "tokens": args.tokens, "machine": machine(), "versions": versions(),
              "loadavg_before": load0, "loadavg_after": os.getloadavg(),
              "duration_s": round(time.perf_counter() - t0, 1),
              "max_idle_peer_cpu_s": max(s.idle_peer_cpu_s for s in samples),
              "samples": samples}
    Path(f"{logs}.json").write_bytes(msgspec.json.encode(report))
    print(f"# bench/interleaved.py, {stamp} UTC, {Path(model_path).name}, {args.rounds} rounds "
          f"x {args.tokens} tokens, load average {load0[0]:.2f} before / "
          f"{os.getloadavg()[0]:.2f} after, {report['duration_s']:.0f} s; the idle side used at "
          f"most {report['max_idle_peer_cpu_s']} CPU s during the other's turn")
    print(table(samples, args.streams))
    print(f"wrote {logs}.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
