"""How long the gateway's event loop stalls while it handles one big request.

A real `herd serve` with the tiny test model. A probe thread asks `GET /api/version` back to back
on one keep-alive connection, first with the server idle (the baseline), then while one big
request is in flight: a create with a ~100 kB Go template, a generate carrying a 64 MiB base64
image, a 64 MiB blob upload. Each figure is the probe latency while the big request ran, as a
ratio to the idle baseline (median, p99, max); a stall of the loop shows up as the max.

usage: python bench/event_loop.py [--image-mib 64] [--template-kib 100] [--repeats 3]
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import http.client
import json
import os
import pathlib
import statistics
import sys
import tempfile
import threading
import time

import httpx

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from support.herd_server import HerdServer  # noqa: E402
from support.tiny_models import write_tiny_llama  # noqa: E402


class Probe:
    """GET /api/version in a loop on its own connection until stopped; latencies in ms."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=600)
        while not self._stop.is_set():
            t0 = time.perf_counter()
            conn.request("GET", "/api/version")
            conn.getresponse().read()
            self.samples.append((time.perf_counter() - t0) * 1000)
            time.sleep(0.002)  # a client that asks often, not a flood that is itself the load
        conn.close()

    def __enter__(self) -> Probe:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def summary(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {"n": len(ordered), "median_ms": statistics.median(ordered),
            "p99_ms": ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))],
            "max_ms": ordered[-1]}


def go_template(kib: int) -> str:
    """A chat template of a realistic shape, repeated to the size asked."""
    block = ('{{- if .System }}<|system|>\n{{ .System }}<|end|>\n{{ end }}'
             '{{- range $i, $m := .Messages }}{{ if eq $m.Role "user" }}<|user|>\n{{ $m.Content }}'
             '<|end|>\n{{ else }}<|assistant|>\n{{ $m.Content }}<|end|>\n{{ end }}{{ end }}\n')
    return (block * (kib * 1024 // len(block) + 1))[:kib * 1024].rsplit("{{", 1)[0]


def timed(label: str, server: HerdServer, send, repeats: int) -> dict:
    walls, statuses = [], []
    with Probe(server.port) as probe:
        time.sleep(0.2)
        start = len(probe.samples)
        for _ in range(repeats):
            t0 = time.perf_counter()
            statuses.append(send())
            walls.append(time.perf_counter() - t0)
        during = probe.samples[start:]
    return {"scenario": label, "request_s": walls, "status": statuses, **summary(during)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--image-mib", type=int, default=64)
    parser.add_argument("--template-kib", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    work = pathlib.Path(tempfile.mkdtemp(prefix="herd-bench-loop-"))
    gguf = write_tiny_llama(work / "tiny.gguf", seed=0)
    image = base64.b64encode(os.urandom(args.image_mib * 3 // 4 << 20)).decode()
    image_body = json.dumps({"model": "tiny", "prompt": "what is this?", "stream": False,
                             "images": [image]}).encode()
    blob = os.urandom(args.image_mib << 20)
    blob_digest = "sha256:" + hashlib.sha256(blob).hexdigest()
    template = go_template(args.template_kib)
    rows = []
    with HerdServer(work / "srv") as server:
        server.create_model("tiny", gguf)
        client = httpx.Client(base_url=server.url, timeout=600)
        with Probe(server.port) as probe:
            time.sleep(3)
        baseline = summary(probe.samples)
        rows.append({"scenario": "idle", **baseline})

        def create() -> int:
            return client.post("/api/create", json={"model": "big-template", "from": "tiny",
                                                    "template": template,
                                                    "stream": False}).status_code

        def image_generate() -> int:
            return client.post("/api/generate", content=image_body,
                               headers={"Content-Type": "application/json"}).status_code

        def upload() -> int:
            client.request("DELETE", "/api/delete", json={"model": "never"})
            path = server.models_dir / "blobs" / blob_digest.replace(":", "-")
            path.unlink(missing_ok=True)
            return client.post(f"/api/blobs/{blob_digest}", content=blob).status_code

        rows.append(timed(f"create, {args.template_kib} kB Go template", server, create,
                          args.repeats))
        rows.append(timed(f"generate, {args.image_mib} MiB base64 image", server,
                          image_generate, args.repeats))
        rows.append(timed(f"blob upload, {args.image_mib} MiB", server, upload, args.repeats))
    print(f"{'scenario':38} {'probes':>6} {'median ms':>10} {'p99 ms':>8} {'max ms':>8} "
          f"{'x median':>9} {'x p99':>7} {'request s':>10} status")
    for row in rows:
        ratio = (f"{row['median_ms'] / baseline['median_ms']:9.1f} "
                 f"{row['p99_ms'] / baseline['p99_ms']:7.1f}")
        walls = ",".join(f"{w:.2f}" for w in row.get("request_s", [])) or "-"
        print(f"{row['scenario']:38} {row['n']:6d} {row['median_ms']:10.2f} {row['p99_ms']:8.2f} "
              f"{row['max_ms']:8.1f} {ratio} {walls:>10} {row.get('status', '')}")
    out = ROOT / "bench" / "out"
    out.mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    (out / f"event-loop-{stamp}.json").write_text(json.dumps(
        {"date": stamp, "loadavg": os.getloadavg(), "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
