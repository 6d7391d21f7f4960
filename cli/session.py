"""A `herd run` conversation: what every request carries (Session) and one answer streamed to
stdout as it comes (stream_answer), shared by the one-shot `herd run MODEL PROMPT`
(herd.cli.run) and the chat at `>>> ` (herd.cli.chat)."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Any

from herd.cli.client import HerdClient
from herd.cli.common import CliError
from herd.protocol.api import AssistantMessage, ChatChunk, ChatRequest, Message, Metrics, Options

# ollama's readline colours: thinking is shown grey, its header and footer bold.
GREY, BOLD, RESET = "\033[38;5;245m", "\033[1m", "\033[0m"
THINK_VALUES = {"true": True, "false": False, "high": "high", "medium": "medium", "low": "low"}


@dataclass
class Session:
    """What every request of a `herd run` carries; the chat loop changes it with /set."""

    model: str
    format: str | dict[str, Any] | None = None
    keep_alive: str | None = None
    think: bool | str | None = None
    hide_thinking: bool = False
    verbose: bool = False
    system: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    history: list[Message] = field(default_factory=list)

    def chat_request(self, messages: list[Message]) -> ChatRequest:
        system = [Message(role="system", content=self.system)] if self.system else []
        return ChatRequest(model=self.model, messages=system + messages, format=self.format,
                           options=Options(**self.options) if self.options else None,
                           keep_alive=self.keep_alive, think=self.think)


def go_duration(ns: int) -> str:
    """Go's time.Duration.String(): "0s", "850µs", "12.5ms", "1.234s", "1m2.5s", "1h0m0s"."""
    def fraction(value: int, scale: int, digits: int) -> str:
        whole, rest = divmod(value, scale)
        decimals = f"{rest:0{digits}d}".rstrip("0")
        return f"{whole}.{decimals}" if decimals else str(whole)

    sign, u = ("-" if ns < 0 else ""), abs(ns)
    if u == 0:
        return "0s"
    if u < 1_000:
        return f"{sign}{u}ns"
    if u < 1_000_000:
        return f"{sign}{fraction(u, 1_000, 3)}µs"
    if u < 1_000_000_000:
        return f"{sign}{fraction(u, 1_000_000, 6)}ms"
    seconds, nanos = divmod(u, 1_000_000_000)
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    text = fraction(seconds * 1_000_000_000 + nanos, 1_000_000_000, 9) + "s"
    if hours or minutes:
        text = f"{minutes}m{text}"
    if hours:
        text = f"{hours}h{text}"
    return sign + text


def metrics_summary(m: Metrics | ChatChunk) -> str:
    """`--verbose`'s lines, as ollama's Metrics.Summary prints them."""
    lines = []
    if m.total_duration > 0:
        lines.append(f"total duration:       {go_duration(m.total_duration)}")
    if m.load_duration > 0:
        lines.append(f"load duration:        {go_duration(m.load_duration)}")
    if m.prompt_eval_count > 0:
        lines.append(f"prompt eval count:    {m.prompt_eval_count} token(s)")
    if m.prompt_eval_duration > 0:
        rate = m.prompt_eval_count / (m.prompt_eval_duration / 1e9)
        lines.append(f"prompt eval duration: {go_duration(m.prompt_eval_duration)}")
        lines.append(f"prompt eval rate:     {rate:.2f} tokens/s")
    if m.eval_count > 0:
        lines.append(f"eval count:           {m.eval_count} token(s)")
    if m.eval_duration > 0:
        rate = m.eval_count / (m.eval_duration / 1e9)
        lines.append(f"eval duration:        {go_duration(m.eval_duration)}")
        lines.append(f"eval rate:            {rate:.2f} tokens/s")
    return "".join(line + "\n" for line in lines)


class AnswerPrinter:
    """Writes an answer as it streams in; thinking comes first, grey on a terminal, between
    "Thinking..." and "...done thinking.", unless hidden."""

    def __init__(self, hide_thinking: bool, styled: bool) -> None:
        self.hide_thinking = hide_thinking
        self.styled = styled
        self.parts: list[str] = []
        self.thinking = False  # inside the thinking block on screen
        self.at_line_start = True

    @property
    def content(self) -> str:
        return "".join(self.parts)

    def _write(self, text: str) -> None:
        if text:
            sys.stdout.write(text)
            self.at_line_start = text.endswith("\n")

    def feed(self, delta: AssistantMessage) -> None:
        if delta.thinking and not self.hide_thinking:
            if not self.thinking:
                self.thinking = True
                self._write(f"{GREY}{BOLD}Thinking...\n{RESET}{GREY}" if self.styled
                            else "Thinking...\n")
            self._write(delta.thinking)
        if delta.content:
            if self.thinking:
                self._close_thinking()
            self.parts.append(delta.content)
            self._write(delta.content)
        sys.stdout.flush()

    def _close_thinking(self) -> None:
        self.thinking = False
        if not self.at_line_start:
            self._write("\n")
        self._write(f"{GREY}{BOLD}...done thinking.\n\n{RESET}" if self.styled
                    else "...done thinking.\n\n")

    def finish(self, trailer: str) -> None:
        if self.thinking and self.styled:
            sys.stdout.write(RESET)  # an answer cut off while thinking leaves no grey behind
        self.thinking = False
        sys.stdout.write(trailer)
        sys.stdout.flush()


def stream_answer(client: HerdClient, session: Session, messages: list[Message],
                  trailer: str) -> str | None:
    """Streams one /api/chat answer to stdout and returns its text; None when Ctrl-C stopped
    it (the client closes the connection, which aborts the answer in the server)."""
    printer = AnswerPrinter(session.hide_thinking, sys.stdout.isatty())
    try:
        final = client.chat(session.chat_request(messages),
                            lambda chunk: printer.feed(chunk.message))
    except KeyboardInterrupt:
        printer.finish("\n")
        return None
    if final is None or not final.done:
        printer.finish("\n")
        raise CliError("the server closed the connection before the answer finished")
    printer.finish(trailer)
    if session.verbose:
        sys.stderr.write(metrics_summary(final))
        sys.stderr.flush()
    return printer.content
