"""`herd run MODEL [PROMPT...]`: a model's answer streamed to stdout, like `ollama run`.

With a prompt (arguments, piped stdin, or both) it prints one /api/chat answer and exits; with
neither, on a terminal, it starts the chat at `>>> ` (herd.cli.chat). A model that is not
on the server is pulled first, as ollama does. Ctrl-C during an answer closes the HTTP stream,
which aborts the sequence in the runner.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from typing import Any

import httpx
import msgspec

from herd.cli.common import CliError, check_response, server_client
from herd.cli.registry import pull_model
from herd.protocol.names import InvalidName, parse_name
from herd.protocol.api import (
    ChatRequest,
    GenerateRequest,
    Message,
    Metrics,
    Options,
    ShowResponse,
)
from herd.protocol.durations import DurationError, parse_go_duration

# ollama's readline colours: thinking is shown grey, its header and footer bold.
GREY, BOLD, RESET = "\033[38;5;245m", "\033[1m", "\033[0m"
THINK_VALUES = {"true": True, "false": False, "high": "high", "medium": "medium", "low": "low"}
_JSON = {"Content-Type": "application/json"}


class Delta(msgspec.Struct):
    """What a chunk's `message` adds to the answer (role and tool calls are not shown)."""

    content: str = ""
    thinking: str | None = None


class ChatLine(Metrics):
    """A line of /api/chat's stream: a delta, the final chunk with its metrics, or an error."""

    message: Delta = msgspec.field(default_factory=Delta)
    done: bool = False
    error: str | None = None


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


def metrics_summary(m: Metrics) -> str:
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

    def feed(self, delta: Delta) -> None:
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


def stream_answer(client: httpx.Client, session: Session, messages: list[Message],
                  trailer: str) -> str | None:
    """Streams one /api/chat answer to stdout and returns its text; None when Ctrl-C stopped
    it (leaving the `with` closes the connection, which aborts the answer in the server)."""
    body = msgspec.json.encode(session.chat_request(messages))
    printer = AnswerPrinter(session.hide_thinking, sys.stdout.isatty())
    final: ChatLine | None = None
    try:
        with client.stream("POST", "/api/chat", content=body, headers=_JSON) as response:
            check_response(response)
            for raw in response.iter_lines():
                if not raw.strip():
                    continue
                line = msgspec.json.decode(raw, type=ChatLine)
                if line.error is not None:
                    raise CliError(line.error)
                printer.feed(line.message)
                if line.done:
                    final = line
    except KeyboardInterrupt:
        printer.finish("\n")
        return None
    if final is None:
        printer.finish("\n")
        raise CliError("the server closed the connection before the answer finished")
    printer.finish(trailer)
    if session.verbose:
        sys.stderr.write(metrics_summary(final))
        sys.stderr.flush()
    return printer.content


def load_model(client: httpx.Client, session: Session) -> None:
    """/api/generate without a prompt: loads the model (ollama does this before `>>> `)."""
    body = GenerateRequest(model=session.model, keep_alive=session.keep_alive,
                           think=session.think)
    check_response(client.post("/api/generate", content=msgspec.json.encode(body),
                               headers=_JSON))


def show_or_pull(client: httpx.Client, model: str, insecure: bool) -> ShowResponse:
    """The model's /api/show; a model the server lacks is pulled first, as `ollama run` does."""
    response = client.post("/api/show", json={"model": model})
    if response.status_code == 404 and _is_registry_name(model):
        pull_model(model, insecure)
        response = client.post("/api/show", json={"model": model})
    return msgspec.json.decode(check_response(response).content, type=ShowResponse)


def _is_registry_name(model: str) -> bool:
    try:
        parse_name(model)
    except InvalidName:
        return False
    return True


def read_prompt(words: list[str]) -> tuple[str, bool]:
    """The prompt and whether to chat interactively. Like ollama, piped stdin comes first and
    the arguments follow, joined by a space; the chat needs a terminal on both ends."""
    parts = list(words)
    interactive = not parts and sys.stdin.isatty() and sys.stdout.isatty()
    if not sys.stdin.isatty():
        piped = sys.stdin.read()
        if piped:
            parts.insert(0, piped)
    return " ".join(parts), interactive


def parse_format(value: str | None) -> str | dict[str, Any] | None:
    """`--format json`, or a JSON schema object as ollama passes it through."""
    if not value:
        return None
    if value.lstrip().startswith("{"):
        try:
            schema = json.loads(value)
        except ValueError as e:
            raise CliError(f"invalid --format: {e}") from None
        return schema if isinstance(schema, dict) else None
    return value


def parse_think(value: str | None) -> bool | str | None:
    if value is None:
        return None
    if value not in THINK_VALUES:
        raise CliError(f'invalid value for --think: "{value}" '
                       "(must be true, false, high, medium, or low)")
    return THINK_VALUES[value]


def cmd_run(args: argparse.Namespace) -> int:
    parse_prompt_args(args)
    keep_alive = args.keepalive or None
    if keep_alive is not None:
        try:
            parse_go_duration(keep_alive)
        except DurationError as e:
            raise CliError(str(e)) from None
    session = Session(model=args.model, format=parse_format(args.format), keep_alive=keep_alive,
                      think=parse_think(args.think), hide_thinking=args.hidethinking,
                      verbose=args.verbose)
    prompt, interactive = read_prompt(args.prompt)
    with server_client() as client:
        show = show_or_pull(client, args.model, args.insecure)
        if interactive:
            from herd.cli.chat import chat_loop

            load_model(client, session)
            return chat_loop(client, session, show)
        if not prompt:  # nothing to ask: load the model, like `echo -n | ollama run m`
            load_model(client, session)
            return 0
        answer = stream_answer(client, session, [Message(role="user", content=prompt)], "\n")
    return 130 if answer is None else 0


def _add_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--verbose", action="store_true", help="show timings for each answer")
    parser.add_argument("--format", help="response format: json, or a JSON schema")
    parser.add_argument("--keepalive", metavar="DURATION",
                        help="how long to keep the model loaded (e.g. 5m)")
    think = parser.add_mutually_exclusive_group()
    # Like ollama's flag: a bare --think is true; a level goes after "=" (--think=high), so
    # `--think why is ...` keeps "why" in the prompt.
    think.add_argument("--think", action="store_const", const="true",
                       help="enable thinking; --think=LEVEL for high, medium or low")
    think.add_argument("--think-level", dest="think", help=argparse.SUPPRESS)
    think.add_argument("--nothink", dest="think", action="store_const", const="false",
                       help="disable thinking")
    parser.add_argument("--hidethinking", action="store_true", help="do not show thinking")
    parser.add_argument("--insecure", action="store_true",
                        help="use an insecure registry when the model must be pulled")


def parse_prompt_args(args: argparse.Namespace) -> None:
    """Flags may come between and after the prompt's words, as with ollama (cobra); argparse
    only mixes them with positionals in parse_intermixed_args, which subparsers cannot use,
    so the words after MODEL are parsed again here."""
    parser = argparse.ArgumentParser(prog="herd run MODEL")
    _add_flags(parser)
    parser.add_argument("prompt", nargs="*")
    tokens = [f"--think-level={t.partition('=')[2]}" if t.startswith("--think=") else t
              for t in args.words]
    parser.parse_intermixed_args(tokens, namespace=args)


def add_commands(sub: Any) -> None:
    """Register `run` on `herd`'s subparsers (dispatched by client_cli.run)."""
    run = sub.add_parser("run", help="run a model: one answer, or a chat at >>>")
    run.set_defaults(client_command=cmd_run)
    _add_flags(run)
    run.add_argument("model")
    run.add_argument("words", nargs=argparse.REMAINDER, metavar="PROMPT",
                     help="the prompt (else piped stdin, else a chat)")
