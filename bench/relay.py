"""The gateway's relay ceiling: tokens/s a gateway relays per CPU-second of its own process.

A synthetic worker node and runner (this process, real ZeroMQ sockets, the real wire protocol)
answer every Submit with tokens as fast as they can, one EngineStep per step holding every
running request's delta. A real `herd gateway` relays them to concurrent HTTP streaming clients.
The gateway's CPU time comes from /proc, so the figure is per gateway core whatever else runs.

usage: python bench/relay.py [--streams 32] [--tokens 2000] [--tokens-per-delta 1]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import pathlib
import signal
import subprocess
import sys
import tempfile
import threading
import time

import aiohttp
import zmq

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from herd.protocol.wire import (EngineStep, FinishReason, LoadModel, ModelLoaded, RequestOutput,  # noqa: E402
                           Submit, WireCodec)
from tiny_models import write_tiny_llama  # noqa: E402


def synthetic_node(node_ep: str, runner_ep: str, tokens_per_delta: int, stop: threading.Event) -> None:
    """Answers LoadModel with the synthetic runner; the runner streams 'tok ' deltas."""
    ctx = zmq.Context.instance()
    node, runner = ctx.socket(zmq.ROUTER), ctx.socket(zmq.ROUTER)
    runner.setsockopt(zmq.SNDHWM, 0)  # as the real runner: never drop a step
    node.bind(node_ep)
    runner.bind(runner_ep)
    codec = WireCodec()
    poller = zmq.Poller()
    poller.register(node, zmq.POLLIN)
    poller.register(runner, zmq.POLLIN)
    active: dict[bytes, dict[int, int]] = {}  # gateway -> req_id -> tokens left
    text = "tok " * tokens_per_delta
    while not stop.is_set():
        events = dict(poller.poll(0 if active else 100))
        if node in events:
            gw, kind, payload = node.recv_multipart()
            msg = codec.decode(kind, payload)
            if isinstance(msg, LoadModel):
                node.send_multipart([gw, *codec.encode(ModelLoaded(
                    msg.request_id, msg.spec.key, runner_ep, 1, 0, 4096))])
        while runner in events:
            try:
                gw, kind, payload = runner.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                break
            msg = codec.decode(kind, payload)
            if isinstance(msg, Submit):
                active.setdefault(gw, {})[msg.req_id] = msg.sampling.num_predict
        for gw, reqs in list(active.items()):
            outputs = []
            for req_id, left in list(reqs.items()):
                n = min(left, tokens_per_delta)
                left -= n
                if left <= 0:
                    outputs.append(RequestOutput(req_id, text, FinishReason.LENGTH, 1, 1, n, 1))
                    del reqs[req_id]
                else:
                    outputs.append(RequestOutput(req_id, text))
                    reqs[req_id] = left
            if outputs:
                runner.send_multipart([gw, *codec.encode(EngineStep(outputs))])
            if not reqs:
                del active[gw]


def cpu_seconds(pid: int) -> float:
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def run_clients(url: str, streams: int, tokens: int) -> tuple[int, int]:
    """(tokens received, NDJSON lines received): a slow reader gets merged deltas."""
    async def one(session: aiohttp.ClientSession, i: int) -> tuple[int, int]:
        received = lines = 0
        async with session.post(url + "/api/generate", json={
                "model": "relay", "prompt": f"p{i}", "options": {"num_predict": tokens}}) as r:
            async for line in r.content:
                chunk = json.loads(line)
                received += chunk["response"].count("tok ")
                lines += 1
        return received, lines

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=600)) as session:
        results = await asyncio.gather(*(one(session, i) for i in range(streams)))
    return sum(r[0] for r in results), sum(r[1] for r in results)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--streams", type=int, default=32)
    ap.add_argument("--tokens", type=int, default=2000)
    ap.add_argument("--tokens-per-delta", type=int, default=1)
    args = ap.parse_args()
    work = pathlib.Path(tempfile.mkdtemp(prefix="herd-relay-"))
    node_ep, runner_ep = f"ipc://{work}/node.sock", f"ipc://{work}/runner.sock"
    stop = threading.Event()
    threading.Thread(target=synthetic_node, args=(node_ep, runner_ep, args.tokens_per_delta, stop),
                     daemon=True).start()
    port = 20000 + os.getpid() % 20000
    env = {**os.environ, "OLLAMA_HOST": f"127.0.0.1:{port}", "OLLAMA_MODELS": str(work / "models"),
           "HERD_WORKERS": node_ep, "HERD_DEFAULT_MODEL": "", "HERD_RUN_DIR": str(work / "run"),
           "OLLAMA_NUM_PARALLEL": str(args.streams), "HERD_LOG_LEVEL": "WARNING"}
    gateway = subprocess.Popen([sys.executable, "-m", "herd.cli", "gateway"], cwd=ROOT, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        import httpx

        for _ in range(200):
            try:
                httpx.get(url + "/", timeout=1)
                break
            except httpx.HTTPError:
                time.sleep(0.05)
        gguf = write_tiny_llama(work / "relay.gguf")
        with open(gguf, "rb") as f:
            import hashlib

            data = f.read()
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        httpx.post(f"{url}/api/blobs/{digest}", content=data)
        httpx.post(url + "/api/create", json={"model": "relay", "files": {"r.gguf": digest}, "stream": False})
        asyncio.run(run_clients(url, 2, 50))  # warm-up: load + connections
        cpu0, t0 = cpu_seconds(gateway.pid), time.perf_counter()
        received, lines = asyncio.run(run_clients(url, args.streams, args.tokens))
        cpu1, t1 = cpu_seconds(gateway.pid), time.perf_counter()
    finally:
        gateway.send_signal(signal.SIGTERM)
        gateway.wait(10)
        stop.set()
    wall, cpu = t1 - t0, cpu1 - cpu0
    print(f"streams={args.streams} tokens/stream={args.tokens} tokens/delta={args.tokens_per_delta}")
    print(f"relayed {received} tokens in {wall:.2f} s: {received / wall:,.0f} tok/s wall, "
          f"gateway CPU {cpu:.2f} s -> {received / cpu:,.0f} tok/s per gateway core")
    print(f"{lines} NDJSON lines ({received / max(lines, 1):.1f} tokens per line after merging), "
          f"{lines / cpu:,.0f} lines/s per gateway core")


if __name__ == "__main__":
    main()
