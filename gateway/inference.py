"""One generation from the HTTP side: options → runner spec and sampling, lease a runner,
submit, relay the runner's text as NDJSON chunks (or one JSON object), abort on disconnect."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import msgspec
from aiohttp import web

from gateway.errors import BadRequest, HerdError
from gateway.http_io import NDJSON, json_response, ndjson_line
from gateway.request_stream import StreamFailed, Update
from gateway.state import GatewayState
from gateway.store import ModelEntry
from gateway.tool_calls import ToolCallParser, grouped, split
from protocol.api import ErrorBody, Logprob, Metrics, Options, ToolCall, TopLogprob
from protocol.durations import DurationError, keep_alive_ns
from protocol.config import Settings
from protocol.wire import (FinishReason, RequestOutput, RunnerSpec, SamplingParams, Submit,
                           TokenLogprob)

# Builds one response object: (piece, final output or None, metrics or None) → Struct
ChunkMaker = Callable[["Piece", RequestOutput | None, Metrics | None], Any]

_INT_SAMPLING = {"top_k", "repeat_last_n", "seed", "num_predict", "num_keep"}
DONE_REASONS = {FinishReason.STOP: "stop", FinishReason.LENGTH: "length"}


def format_text(value: str | dict[str, Any] | None) -> str:
    """Ollama's `format`: "" / null = free text, "json", or a JSON schema object."""
    if value is None or value == "":
        return ""
    if value == "json":
        return "json"
    if isinstance(value, dict):
        return msgspec.json.encode(value).decode()
    raise BadRequest(f'invalid format: "{value}"; expected "json" or a valid JSON Schema object')


def sampling_params(options: Options, format: str = "") -> SamplingParams:
    values: dict[str, Any] = {"format": format}
    for name in SamplingParams.__struct_fields__:
        value = getattr(options, name, None)
        if value is not None:
            values[name] = int(value) if name in _INT_SAMPLING else value
    return SamplingParams(**values)


def runner_spec(entry: ModelEntry, options: Options, settings: Settings) -> RunnerSpec:
    num_ctx = int(options.num_ctx) if options.num_ctx else settings.context_length
    if entry.context_length:
        num_ctx = min(num_ctx, entry.context_length)  # so equal effective contexts share a runner
    num_ctx = max(num_ctx, 4)
    num_batch = int(options.num_batch) if options.num_batch else settings.num_batch
    threads = int(options.num_thread) if options.num_thread else settings.num_threads
    gpu = int(options.num_gpu) if options.num_gpu is not None else -1
    parallel = settings.num_parallel
    key = (f"{entry.model_digest}|ctx={num_ctx}|par={parallel}|batch={num_batch}|gpu={gpu}"
           f"|thr={threads}|kv={settings.kv_cache_type}|fa={settings.flash_attention}")
    if entry.adapters:
        key += "|lora=" + ",".join(os.path.basename(a) for a in entry.adapters)
    return RunnerSpec(key=key, model_path=entry.model_path, num_ctx=num_ctx,
                      num_parallel=parallel, num_batch=num_batch, num_threads=threads,
                      num_gpu_layers=gpu, family=entry.config.model_family,
                      adapters=entry.adapters, kv_cache_type=settings.kv_cache_type,
                      flash_attention=settings.flash_attention)


def request_keep_alive(value: float | str | None, settings: Settings) -> int:
    try:
        return keep_alive_ns(value, settings.keep_alive_ns)
    except DurationError as e:
        raise BadRequest(str(e)) from e


def think_setting(think: bool | str | None, model_name: str, entry: ModelEntry) -> str:
    """The request's `think` for the runner: "" when absent, "true"/"false", or a level."""
    if isinstance(think, str) and think not in ("high", "medium", "low", "max"):
        raise BadRequest(f'invalid think value: "{think}" (must be "high", "medium", "low", '
                         '"max", true, or false)')
    if think and "thinking" not in entry.capabilities:
        raise BadRequest(f'"{model_name}" does not support thinking')
    if think is None:
        return ""
    if isinstance(think, bool):
        return "true" if think else "false"
    return think


async def load_only(state: GatewayState, entry: ModelEntry, options: Options,
                    keep_alive: int) -> int:
    """Empty prompt/messages: load the model (or unload it with keep_alive 0)."""
    if keep_alive == 0:
        await state.scheduler.unload_model(entry)
        return 0
    t0 = time.perf_counter_ns()
    spec = runner_spec(entry, options, state.settings)
    async with state.scheduler.lease(entry, spec, keep_alive):
        pass
    return time.perf_counter_ns() - t0


@dataclass(slots=True)
class Piece:
    """What one chunk carries: answer text or whole tool calls, and the log-probabilities of
    the tokens that arrived with it."""

    text: str = ""
    calls: list[ToolCall] | None = None
    logprobs: list[Logprob] | None = None
    thinking: str = ""


def api_logprobs(entries: list[TokenLogprob]) -> list[Logprob] | None:
    if not entries:
        return None
    return [Logprob(e.token, e.logprob, e.bytes,
                    [TopLogprob(t.token, t.logprob, t.bytes) for t in e.top] or None)
            for e in entries]


class Framing(Protocol):
    """How one generation is written: Ollama's NDJSON or OpenAI's server-sent events."""

    content_type: str

    def delta(self, piece: Piece) -> bytes: ...

    def end(self, final: RequestOutput, metrics: Metrics) -> bytes: ...

    def error(self, message: str) -> bytes: ...

    def whole(self, piece: Piece, final: RequestOutput, metrics: Metrics) -> Any: ...


class NdjsonFraming:
    """Ollama's native streams: one JSON object per line; the final one carries the metrics."""

    content_type = NDJSON

    def __init__(self, make_chunk: ChunkMaker) -> None:
        self.make_chunk = make_chunk

    def delta(self, piece: Piece) -> bytes:
        return ndjson_line(self.make_chunk(piece, None, None))

    def end(self, final: RequestOutput, metrics: Metrics) -> bytes:
        return ndjson_line(self.make_chunk(Piece(), final, metrics))

    def error(self, message: str) -> bytes:
        # Status is already 200: Ollama's clients read an error line as a failure.
        return ndjson_line(ErrorBody(message))

    def whole(self, piece: Piece, final: RequestOutput, metrics: Metrics) -> Any:
        return self.make_chunk(piece, final, metrics)


def _pieces(parser: ToolCallParser | None, update: Update, last: bool) -> list[Piece]:
    """The chunks to write for an update: reasoning first, then the text itself, or content
    and calls in order. The update's log-probabilities ride on its first chunk (on an empty
    one if the parser holds all the text back)."""
    text, logprobs = update.text, update.logprobs
    if parser is None:
        pieces = [Piece(text)] if text else []
    else:
        pieces = [Piece(p) if isinstance(p, str) else Piece(calls=p)
                  for p in grouped(parser.feed(text) + (parser.finish() if last else []))]
    if update.thinking:
        pieces.insert(0, Piece(thinking=update.thinking))
    if logprobs:
        if not pieces:
            pieces = [Piece()]
        pieces[0].logprobs = api_logprobs(logprobs)
    return pieces


async def _write(response: web.StreamResponse, framing: Framing, pieces: list[Piece]) -> None:
    for piece in pieces:
        await response.write(framing.delta(piece))


async def generate(request: web.Request, state: GatewayState, entry: ModelEntry,
                   options: Options, keep_alive: int, submit: Submit, stream: bool,
                   framing: Framing, tools: ToolCallParser | None = None) -> web.StreamResponse:
    """`tools`: the request offered tools, so calls in the answer are parsed out of its text."""
    t0 = time.perf_counter_ns()
    spec = runner_spec(entry, options, state.settings)
    async with state.scheduler.lease(entry, spec, keep_alive) as runner:
        load_ns = time.perf_counter_ns() - t0
        rs = await runner.client.submit(submit)
        model = entry.name.display
        try:
            try:
                # The first news decides the status: an error before any byte keeps its own.
                update = await rs.next()
            except StreamFailed as e:
                raise HerdError(str(e), e.status) from None
            state.metrics.first_output(model, (time.perf_counter_ns() - t0) / 1e9)
            metrics = lambda out: Metrics(  # noqa: E731
                total_duration=time.perf_counter_ns() - t0, load_duration=load_ns,
                prompt_eval_count=out.prompt_tokens, prompt_eval_duration=out.prompt_ns,
                eval_count=out.eval_tokens, eval_duration=out.eval_ns)
            if not stream:
                updates = [update]
                while updates[-1].final is None:
                    try:
                        updates.append(await rs.next())
                    except StreamFailed as e:
                        raise HerdError(str(e), e.status) from None
                final = updates[-1].final
                state.metrics.finished(model, final)
                whole = Piece("".join(u.text for u in updates),
                              logprobs=api_logprobs([lp for u in updates for lp in u.logprobs]),
                              thinking="".join(u.thinking for u in updates))
                if tools is not None:
                    whole.text, calls = split(tools.feed(whole.text) + tools.finish())
                    whole.calls = calls or None
                return json_response(framing.whole(whole, final, metrics(final)))
            response = web.StreamResponse(status=200, headers={"Content-Type": framing.content_type})
            await response.prepare(request)
            while True:
                final = update.final
                await _write(response, framing, _pieces(tools, update, final is not None))
                if final is not None:
                    state.metrics.finished(model, final)
                    await response.write(framing.end(final, metrics(final)))
                    break
                try:
                    update = await rs.next()
                except StreamFailed as e:
                    # Text held back as a possible call is still the answer's.
                    await _write(response, framing, _pieces(tools, Update(), True))
                    await response.write(framing.error(str(e)))
                    break
            await response.write_eof()
            return response
        finally:
            if not rs.finished:
                await runner.client.abort(rs.req_id)


async def render_only(state: GatewayState, entry: ModelEntry, options: Options, keep_alive: int,
                      submit: Submit) -> str:
    """`_debug_render_only`: the runner renders the prompt with the model's template."""
    submit.render_only = True
    spec = runner_spec(entry, options, state.settings)
    async with state.scheduler.lease(entry, spec, keep_alive) as runner:
        rs = await runner.client.submit(submit)
        parts: list[str] = []
        final = None
        while final is None:
            try:
                update = await rs.next()
            except StreamFailed as e:
                raise HerdError(str(e), e.status) from None
            parts.append(update.text)
            final = update.final
        return "".join(parts)
