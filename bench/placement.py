"""Placement under a simulated cluster: the real Scheduler (placement, replicas, affinity,
queueing) against synthetic nodes and runners that stream tokens at a fixed rate.

Prints, against a naive policy (first device with room, one runner per model) measured in the
same run: throughput, p50/p99 queue wait and device utilisation under a bursty trace; the
aggregate of a busy model on two free devices against one runner; and how one placement
decision's cost grows from 8 to 512 simulated devices.

    .venv/bin/python bench/placement.py [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import time
from dataclasses import dataclass
from types import SimpleNamespace

ROOT = __import__("pathlib").Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from herd.gateway.cluster import loader as loader_module  # noqa: E402
from herd.gateway.cluster.scheduler import Scheduler  # noqa: E402
from herd.gateway.placement.estimate import rough_estimate  # noqa: E402
from herd.gateway.placement.fit import (ALL_LAYERS, DoesNotFit, NodeView, Placement,  # noqa: E402
                                        place)
from herd.protocol.config import Settings  # noqa: E402
from herd.protocol.wire import RunnerSpec, SamplingParams, Submit  # noqa: E402
from support.fake_cluster import GiB, FakeCluster, devices  # noqa: E402

# Real GGUF sizes (q4_K_M files of common open models, bytes/1e9) and how often each is asked.
MODEL_SIZES_GB = [0.3, 0.8, 1.3, 2.0, 2.0, 3.4, 4.7, 4.7, 4.9, 5.4, 8.1, 9.1, 14.8, 19.9, 40.0]


def fake_entry(name: str) -> SimpleNamespace:
    display = SimpleNamespace(display=name)
    return SimpleNamespace(name=display, model_digest=name, manifest_digest=name, details=None)


@dataclass
class Trace:
    arrivals: list[tuple[float, str, int]]  # (time s, model, tokens)


def bursty_trace(models: list[str], seconds: float, rate: float, seed: int) -> Trace:
    rng = random.Random(seed)
    weights = [1 / (i + 1) for i in range(len(models))]  # Zipf popularity
    arrivals, t = [], 0.0
    while t < seconds:
        t += rng.expovariate(rate)
        arrivals.append((t, rng.choices(models, weights)[0], rng.randint(64, 256)))
    for _ in range(int(seconds / 4)):  # bursts: one model gets many requests at once
        at, model = rng.uniform(0, seconds), rng.choice(models[:6])
        arrivals += [(at + rng.uniform(0, 0.2), model, rng.randint(64, 256)) for _ in range(24)]
    return Trace(sorted(arrivals))


def naive_place(est, nodes, **_):
    """First node and device with room; the host when no GPU has any."""
    for node in nodes:
        for device in node.gpus:
            if device.free >= est.total:
                return Placement(node.name, [device.id], [est.total], ALL_LAYERS,
                                 size=est.total, size_vram=est.total)
    raise DoesNotFit(est.total, 0)


async def run_trace(cluster_devices: dict, trace: Trace, sizes: dict[str, int], *,
                    naive: bool, step_s: float, parallel: int) -> dict:
    # Loads read the weights at 4 GB/s (a fast NVMe): a replica takes a while to come up.
    cluster = FakeCluster(cluster_devices, step_s=step_s, load_bytes_per_s=4e9,
                          script=lambda s: ["x"] * s.sampling.num_predict)
    settings = Settings(num_parallel=parallel, max_queue=10_000, run_dir="/tmp",
                        max_replicas=1 if naive else 0, max_loaded_models=1000,
                        max_loaded_per_gpu=False, keep_alive_ns=60 * 10**9)
    original = loader_module.place
    loader_module.place = naive_place if naive else original
    try:
        sched = Scheduler(settings, cluster.connect_node, cluster.connect_runner)
        await sched.connect(list(cluster_devices))
        entries = {m: fake_entry(m) for m in sizes}
        for model, size in sizes.items():
            sched.loader._estimates[model] = rough_estimate(model, size, n_seq=parallel)
        waits: list[float] = []
        tokens = 0
        failures = 0
        start = time.perf_counter()

        async def one(at: float, model: str, n: int) -> None:
            nonlocal tokens, failures
            await asyncio.sleep(max(at - (time.perf_counter() - start), 0))
            spec = RunnerSpec(key=model, model_key=model, model_digest=model, num_ctx=2048,
                              num_parallel=parallel)
            t0 = time.perf_counter()
            try:
                async with sched.lease(entries[model], spec, settings.keep_alive_ns) as r:
                    waits.append(time.perf_counter() - t0)
                    stream = await r.client.submit(Submit(id(object()), SamplingParams(num_predict=n)))
                    while (await stream.next()).final is None:
                        pass
                    tokens += n
            except Exception:
                failures += 1

        busy_samples: list[float] = []

        async def sample() -> None:
            gpus = sum(1 for devs in cluster_devices.values() for d in devs if d.is_gpu)
            while True:
                await asyncio.sleep(0.1)
                used = {(r.node.endpoint, d) for r in sched.loaded if r.refs for d in r.devices}
                busy_samples.append(len(used) / gpus)

        # Every model loaded once first: the trace measures queueing, not cold loads.
        await asyncio.gather(*(one(0.0, model, 1) for model in sizes))
        waits.clear()
        tokens = 0
        start = time.perf_counter()
        sampler = asyncio.create_task(sample())
        await asyncio.gather(*(one(*a) for a in trace.arrivals))
        elapsed = time.perf_counter() - start
        sampler.cancel()
        waits.sort()
        return {"throughput": tokens / elapsed, "p50": statistics.median(waits),
                "p99": waits[int(len(waits) * 0.99) - 1], "util": statistics.mean(busy_samples),
                "failures": failures, "requests": len(waits), "runners": len(cluster.loads)}
    finally:
        loader_module.place = original


def mixed_cluster(n_nodes: int, per_node: int) -> dict:
    sizes = [24, 48, 80, 40]
    return {f"node{i}": devices(**{f"cuda_{j}": sizes[(i + j) % len(sizes)] * GiB
                                   for j in range(per_node)}, cpu=1 * GiB)
            for i in range(n_nodes)}


def decision_cost(n_devices: int, repeats: int) -> float:
    per_node = 8
    views = [NodeView(f"n{i}", list(devs), 0) for i, devs in
             enumerate(mixed_cluster(max(n_devices // per_node, 1), per_node).values())]
    est = rough_estimate("m", 30 * GiB)
    t0 = time.perf_counter()
    for _ in range(repeats):
        place(est, views)
    return (time.perf_counter() - t0) / repeats


async def two_devices(step_s: float) -> tuple[float, float]:
    one_model = {"busy": int(4 * GiB)}
    trace = Trace([(0.0, "busy", 256) for _ in range(64)])
    cluster = {"node": devices(cuda_0=8 * GiB, cuda_1=8 * GiB, cpu=1 * GiB)}
    one = await run_trace(cluster, trace, one_model, naive=True, step_s=step_s, parallel=4)
    two = await run_trace(cluster, trace, one_model, naive=False, step_s=step_s, parallel=4)
    return one["throughput"], two["throughput"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--seconds", type=float, default=20.0)
    args = ap.parse_args()
    seconds = 6.0 if args.quick else args.seconds
    step_s = 0.01  # 100 tokens/s per stream
    one, two = asyncio.run(two_devices(step_s))
    print(f"busy model, one runner: {one:,.0f} tok/s; two free devices: {two:,.0f} tok/s "
          f"= {two / one:.2f}x (target >= 1.9)")
    rng = random.Random(1)
    sizes = {f"m{i}": int(rng.choice(MODEL_SIZES_GB) * 1e9) for i in range(32)}
    trace = bursty_trace(list(sizes), seconds, rate=4.0, seed=2)
    cluster = mixed_cluster(4, 8)
    print(f"trace: {len(trace.arrivals)} requests over {seconds:.0f} s, 32 models, "
          f"4 nodes x 8 GPUs (24/40/48/80 GiB)")
    herd = asyncio.run(run_trace(cluster, trace, sizes, naive=False, step_s=step_s, parallel=4))
    naive = asyncio.run(run_trace(cluster, trace, sizes, naive=True, step_s=step_s, parallel=4))
    for name, r in (("herd", herd), ("naive", naive)):
        print(f"{name:6s} throughput {r['throughput']:8,.0f} tok/s  p50 wait {r['p50'] * 1e3:7.1f} ms"
              f"  p99 wait {r['p99'] * 1e3:8.1f} ms  busy GPUs {r['util']:.1%}  runners "
              f"{r['runners']}  failed {r['failures']}")
    print(f"p99 wait herd/naive = {herd['p99'] / naive['p99']:.2f} (target <= 0.5); "
          f"throughput herd/naive = {herd['throughput'] / naive['throughput']:.2f}x")
    for n in (8, 32, 128, 512):
        cost = decision_cost(n, 200 if n <= 128 else 50)
        print(f"one placement decision at {n:3d} devices: {cost * 1e6:8.1f} us")


if __name__ == "__main__":
    main()
