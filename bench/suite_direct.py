"""Direct llama-cpp-python workloads for bench/suite.py, each run in its own subprocess.

    python bench/suite_direct.py {decode|ttft|embed} --model-path PATH [--tokens N] [--reps R]

Prints one JSON object as its last stdout line. It runs in a child process (like
throughput.py's direct worker) so the suite's parent never loads llama.cpp and the direct side
has exited before any server is timed."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import msgspec

sys.path.insert(0, str(Path(__file__).resolve().parent))
from suite_texts import embed_texts, long_prompt  # noqa: E402
from throughput import (DIRECT_CTX, DIRECT_THREADS, GPU_LAYERS, TEMPERATURE, TOP_K,  # noqa: E402
                        TOP_P, WARMUP_PROMPT, WARMUP_TOKENS, direct_one, prompt_for)

TTFT_TOKENS = 4  # only the first token matters; a few more keep every peer on the same path


def load(model_path: str, **kw):
    from llama_cpp import Llama

    return Llama(model_path, n_ctx=DIRECT_CTX, n_threads=DIRECT_THREADS, verbose=False,
                 n_gpu_layers=GPU_LAYERS, **kw)


def decode(model_path: str, tokens: int, reps: int) -> dict:
    """Single-stream decode rate: (tokens - 1) / (last token - first token), like the servers."""
    llm = load(model_path)
    direct_one(llm, WARMUP_PROMPT, seed=0, tokens=WARMUP_TOKENS)
    rates = []
    for rep in range(reps):
        t0 = time.perf_counter()
        s = direct_one(llm, prompt_for(rep), seed=rep, tokens=tokens)
        wall = time.perf_counter() - t0
        rates.append((s.tokens - 1) / (wall - s.ttft_s) if wall > s.ttft_s else 0.0)
    return {"decode_tok_s": rates}


def first_token_s(llm, prompt: str) -> float:
    # reset() drops llama-cpp-python's remembered prompt so nothing is reused from the last run.
    llm.reset()
    t0 = time.perf_counter()
    for chunk in llm.create_completion(prompt, max_tokens=TTFT_TOKENS, temperature=TEMPERATURE,
                                       top_k=TOP_K, top_p=TOP_P, seed=0, stream=True):
        if chunk["choices"][0]["text"]:
            return time.perf_counter() - t0
    return time.perf_counter() - t0  # EOS straight away: the prefill is still what was timed


def ttft(model_path: str, reps: int) -> dict:
    llm = load(model_path)
    first_token_s(llm, "Warm-up. " + long_prompt(99))  # one-off allocations of a big batch
    times = [first_token_s(llm, long_prompt(k)) for k in range(reps)]
    return {"ttft_s": times, "prompt_tokens": len(llm.tokenize(long_prompt(0).encode()))}


def embed(model_path: str, reps: int) -> dict:
    from llama_cpp import LLAMA_POOLING_TYPE_MEAN

    # Mean pooling gives one vector per text, as Herd does for a generative model.
    llm = load(model_path, embedding=True, pooling_type=LLAMA_POOLING_TYPE_MEAN)
    texts = embed_texts()
    llm.embed(texts[:8])
    walls = []
    for _ in range(reps):
        t0 = time.perf_counter()
        out = llm.embed(texts)
        walls.append(time.perf_counter() - t0)
        assert len(out) == len(texts)
    return {"texts": len(texts), "wall_s": walls, "texts_s": len(texts) / min(walls)}


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=["decode", "ttft", "embed"])
    p.add_argument("--model-path", required=True)
    p.add_argument("--tokens", type=int, default=128)
    p.add_argument("--reps", type=int, default=3)
    a = p.parse_args()
    if a.mode == "decode":
        out = decode(a.model_path, a.tokens, a.reps)
    elif a.mode == "ttft":
        out = ttft(a.model_path, a.reps)
    else:
        out = embed(a.model_path, a.reps)
    print(msgspec.json.encode(out).decode())
    return 0


if __name__ == "__main__":
    sys.exit(main())
