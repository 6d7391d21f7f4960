"""A per-request mailbox between the ZeroMQ reader and one HTTP response.

Deltas that arrive while the client is still writing the previous chunk are merged, so a slow
client costs one write per wake-up, not one per token.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from herd.gateway.errors import StreamFailed
from herd.protocol.wire import FinishReason, RequestOutput, TokenLogprob


MAX_CHUNK_CHARS = 64 * 1024


@dataclass(slots=True)
class Update:
    """What arrived since the last look: answer text, reasoning, token log-probabilities and,
    at the end, the final output."""

    text: str = ""
    thinking: str = ""
    logprobs: list[TokenLogprob] = field(default_factory=list)
    final: RequestOutput | None = None


class RequestStream:
    __slots__ = ("req_id", "_parts", "_thinking", "_logprobs", "_final", "_error", "_status",
                 "_event")

    def __init__(self, req_id: int) -> None:
        self.req_id = req_id
        self._parts: list[str] = []
        self._thinking: list[str] = []
        self._logprobs: list[TokenLogprob] = []
        self._final: RequestOutput | None = None
        self._error = ""
        self._status = 500
        self._event = asyncio.Event()

    @property
    def finished(self) -> bool:
        return self._final is not None or bool(self._error)

    def feed(self, output: RequestOutput) -> None:
        if output.text:
            self._parts.append(output.text)
        if output.logprobs:
            self._logprobs += output.logprobs
        if output.thinking:
            self._thinking.append(output.thinking)
        if output.finish == FinishReason.ERROR:
            self.fail(output.error or "generation failed", output.error_status or 500)
        elif output.finish != FinishReason.NONE:
            self._final = output
        self._event.set()

    def fail(self, message: str, status: int = 500) -> None:
        if not self.finished:
            self._error = message
            self._status = status
        self._event.set()

    async def next(self) -> Update:
        """Waits for news: everything since the last call and, at the end, the final output.

        Raises StreamFailed when the runner reported an error or went away.
        """
        await self._event.wait()
        self._event.clear()
        text, thinking = "".join(self._parts), "".join(self._thinking)
        self._parts.clear()
        self._thinking.clear()
        logprobs, self._logprobs = self._logprobs, []
        if len(text) > MAX_CHUNK_CHARS or len(thinking) > MAX_CHUNK_CHARS:
            # Merged text for a client far behind stays in lines clients can read (aiohttp's
            # reader refuses lines over 512 KiB); the rest comes with the next call.
            self._parts.append(text[MAX_CHUNK_CHARS:])
            self._thinking.append(thinking[MAX_CHUNK_CHARS:])
            self._event.set()
            return Update(text[:MAX_CHUNK_CHARS], thinking[:MAX_CHUNK_CHARS], logprobs)
        if self._error:
            if not text and not thinking and not logprobs:
                raise StreamFailed(self._error, self._status)
            self._event.set()  # the text first; the error on the next call, without waiting
            return Update(text, thinking, logprobs)
        return Update(text, thinking, logprobs, self._final)
