"""A BatchEngine on a GGUF in this process, for the engine tests (no runner, no ZeroMQ)."""

from __future__ import annotations

import contextlib
import pathlib
from collections.abc import Iterator

from herd.protocol.wire import RunnerSpec
from herd.worker.engine.batch import BatchEngine
from herd.worker.runner import load_engine


@contextlib.contextmanager
def engine_on(model: pathlib.Path, *, num_ctx: int, num_parallel: int,
              draft: pathlib.Path | None = None) -> Iterator[BatchEngine]:
    spec = RunnerSpec(key="t", model_digest="", num_ctx=num_ctx, num_parallel=num_parallel)
    engine = load_engine(spec, lambda *_: None, str(model), draft_path=str(draft or ""))[1]
    try:
        yield engine
    finally:
        engine.close()
