"""Soak: 16 concurrent streams through two gateways and two workers (TCP on loopback) for a
while, one worker killed and restarted halfway. Every request must end either with its final
line or with an explicit error (never cut off silently); gateway and worker memory should stay
flat. Prints the outcome counts and the RSS curve.

    .venv/bin/python bench/soak.py [--minutes 10] [--streams 16]
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
import tempfile
import threading
import time
from collections import Counter

import httpx

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from support.herd_server import HerdServer, free_port  # noqa: E402
from support.tiny_models import write_tiny_llama  # noqa: E402


def rss_mib(pid: int) -> float:
    try:
        for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def stream_once(url: str, i: int) -> str:
    """'ok', 'error' (an error line or an error status) or 'lost' (cut off without a word)."""
    body = {"model": "tiny", "prompt": f"soak {i}", "options": {"num_predict": 64}}
    try:
        with httpx.stream("POST", url + "/api/generate", json=body, timeout=120) as r:
            if r.status_code != 200:
                return "error"
            last = None
            for line in r.iter_lines():
                if line.strip():
                    last = json.loads(line)
            if last is None:
                return "lost"
            if "error" in last:
                return "error"
            return "ok" if last.get("done") else "lost"
    except httpx.HTTPError:
        return "lost"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--streams", type=int, default=16)
    args = ap.parse_args()
    work = pathlib.Path(tempfile.mkdtemp(prefix="herd-soak-"))
    gguf = write_tiny_llama(work / "tiny.gguf")
    models = work / "models"
    endpoints = [f"tcp://127.0.0.1:{free_port()}" for _ in range(2)]
    workers = [HerdServer(work / f"w{i}", models_dir=models, command=("worker", "--bind", ep))
               for i, ep in enumerate(endpoints)]
    for w in workers:
        w.start()
    gateways = [HerdServer(work / f"g{i}", models_dir=models, command=("gateway",),
                           env={"HERD_WORKERS": ",".join(endpoints)}) for i in range(2)]
    for g in gateways:
        g.start()
    gateways[0].create_model("tiny", gguf)
    outcomes: Counter[str] = Counter()
    stop = time.monotonic() + args.minutes * 60
    lock = threading.Lock()

    def client(n: int) -> None:
        i = 0
        while time.monotonic() < stop:
            result = stream_once(gateways[(n + i) % 2].url, i)
            with lock:
                outcomes[result] += 1
            i += 1

    threads = [threading.Thread(target=client, args=(n,)) for n in range(args.streams)]
    for t in threads:
        t.start()
    start = time.monotonic()
    restarted = False
    print("t_s  " + "  ".join(f"gw{i}_MiB" for i in range(2)) + "  " +
          "  ".join(f"node{i}_MiB" for i in range(2)) + "  ok/error/lost")
    while any(t.is_alive() for t in threads):
        time.sleep(10)
        elapsed = time.monotonic() - start
        if not restarted and elapsed > args.minutes * 30:
            workers[0].process.kill()
            workers[0].process.wait()
            workers[0].process = None
            workers[0].start()
            restarted = True
            print(f"{elapsed:5.0f}  worker 0 killed and restarted")
        with lock:
            counts = f"{outcomes['ok']}/{outcomes['error']}/{outcomes['lost']}"
        mem = [rss_mib(g.process.pid) for g in gateways] + [
            rss_mib(w.process.pid) if w.process else 0.0 for w in workers]
        print(f"{elapsed:5.0f}  " + "  ".join(f"{m:8.1f}" for m in mem) + f"  {counts}",
              flush=True)
    for server in gateways + workers:
        server.stop()
    print(f"requests: {sum(outcomes.values())}, ok {outcomes['ok']}, ended with an error "
          f"{outcomes['error']}, lost without an error {outcomes['lost']}")


if __name__ == "__main__":
    main()
