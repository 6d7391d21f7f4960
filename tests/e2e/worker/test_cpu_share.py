"""Two models decoding at once on one host's cores share them (herd.worker.cpu_share): the
node's board shows both runners working, each with its part of the cores, and the runner's
llama.cpp contexts take the count it reads there."""

from __future__ import annotations

import concurrent.futures
import os
import pathlib
import time

import httpx
import llama_cpp as L

from herd.protocol.wire import RunnerSpec
from herd.worker.cpu_share import CpuBoard, CpuShare
from herd.worker.runner import Runner, load_engine
from support.herd_server import HerdServer, wait_until


def _board(srv: HerdServer) -> bytes:
    (path,) = srv.run_dir.glob("cpu-board-*")
    return path.read_bytes()


def test_two_models_at_once_split_the_cores(tmp_path: pathlib.Path, tiny_gguf: pathlib.Path,
                                            tiny_gguf_no_template: pathlib.Path) -> None:
    cores = len(os.sched_getaffinity(0))
    with HerdServer(tmp_path, env={"OLLAMA_NUM_PARALLEL": "1"}) as srv:
        srv.create_model("a", tiny_gguf)
        srv.create_model("b", tiny_gguf_no_template)
        for name in ("a", "b"):  # both loaded before either starts its answer
            assert httpx.post(srv.url + "/api/generate", json={"model": name}).status_code == 200
        assert not any(_board(srv))  # loaded and idle: nobody holds a share

        def answer(name: str) -> int:
            r = httpx.post(srv.url + "/api/generate", json={
                "model": name, "prompt": "go", "stream": False, "raw": True,
                "options": {"num_predict": 3000, "temperature": 1.0, "seed": 1}})
            assert r.status_code == 200, r.text
            return r.json()["eval_count"]

        seen: list[list[int]] = []
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            answers = [pool.submit(answer, name) for name in ("a", "b")]
            while not all(f.done() for f in answers):
                marks = [b for b in _board(srv) if b]
                if len(marks) == 2:
                    seen.append(marks)
                time.sleep(0.005)  # a busy poll would take a core from the runners it watches
            assert [f.result() for f in answers]
        assert seen, "the two answers never overlapped"
        # Each runner's byte is the thread count it set; a share is written right after the
        # other runner's mark is seen, so the split settles within a step.
        assert any(sum(marks) <= max(cores, 2) for marks in seen), sorted(set(map(tuple, seen)))
        assert wait_until(lambda: not any(_board(srv)))


def test_the_runner_sets_its_contexts_to_its_share(tmp_path: pathlib.Path,
                                                  tiny_gguf: pathlib.Path) -> None:
    spec = RunnerSpec(key="t", model_digest="", num_ctx=128, num_parallel=2, num_threads=4)
    board = CpuBoard(str(tmp_path / "board"))
    runner = Runner(spec, f"ipc://{tmp_path}/r.sock", f"ipc://{tmp_path}/e.sock",
                    str(tiny_gguf), [], cpu_board=board.path, cpu_slot=board.take())
    runner.cpu = CpuShare(board.path, runner.cpu_slot, cores=4, cap=4)
    other = CpuShare(board.path, board.take(), cores=4, cap=4)
    _, engine = load_engine(spec, lambda *_: None, str(tiny_gguf))
    try:
        runner.model = engine.model
        embedder = runner._embedder()
        runner._share_cores(engine, True)
        assert L.llama_n_threads(engine.ctx.ptr) == 4
        other.update(True)
        runner._share_cores(engine, True)
        assert [L.llama_n_threads(ctx) for ctx in (engine.ctx.ptr, embedder.ctx)] == [2, 2]
        assert L.llama_n_threads_batch(engine.ctx.ptr) == 2
        other.update(False)
        runner._share_cores(engine, False)  # idle: the contexts are left as they are
        assert L.llama_n_threads(engine.ctx.ptr) == 2
        runner._share_cores(engine, True)
        assert L.llama_n_threads(engine.ctx.ptr) == 4
    finally:
        embedder.close()
        engine.close()
        runner.sock.close()
        runner.events.close()
        board.close()
