"""One generation from the HTTP side: lease a runner, submit, relay the runner's text through
a dialect's framing (NDJSON chunks, server-sent events, or one JSON object), abort on
disconnect."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from aiohttp import web

from herd.gateway.cluster.affinity import signature
from herd.gateway.cluster.request_stream import Update
from herd.gateway.errors import HerdError, StreamFailed
from herd.gateway.http.io import NDJSON, json_response, ndjson_line
from herd.gateway.pipeline.tool_calls import ToolCallParser, grouped, split
from herd.gateway.state import GatewayState
from herd.gateway.store.models import ModelEntry
from herd.protocol.api import ErrorBody, Logprob, Metrics, ToolCall, TopLogprob
from herd.protocol.wire import FinishReason, RequestOutput, RunnerSpec, Submit, TokenLogprob

# Builds one response object: (piece, final output or None, metrics or None) → Struct
ChunkMaker = Callable[["Piece", RequestOutput | None, Metrics | None], Any]

DONE_REASONS = {FinishReason.STOP: "stop", FinishReason.LENGTH: "length"}


async def load_only(state: GatewayState, entry: ModelEntry, spec: RunnerSpec,
                    keep_alive: int) -> int:
    """Empty prompt/messages: load the model (or unload it with keep_alive 0)."""
    if keep_alive == 0:
        await state.scheduler.unload_model(entry)
        return 0
    t0 = time.perf_counter_ns()
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


async def relay(request: web.Request, state: GatewayState, entry: ModelEntry,
                spec: RunnerSpec, keep_alive: int, submit: Submit, stream: bool,
                framing: Framing, tools: ToolCallParser | None = None) -> web.StreamResponse:
    """Leases a runner, submits, and writes what comes back through the dialect's framing.
    `tools`: the request offered tools, so calls in the answer are parsed out of its text."""
    t0 = time.perf_counter_ns()
    # Requests that start alike go to the replica whose KV cache holds that start.
    async with state.scheduler.lease(entry, spec, keep_alive, signature(submit)) as runner:
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


async def render_only(state: GatewayState, entry: ModelEntry, spec: RunnerSpec,
                      keep_alive: int, submit: Submit) -> str:
    """`_debug_render_only`: the runner renders the prompt with the model's template."""
    submit.render_only = True
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
