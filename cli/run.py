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
from typing import Any

from herd.cli.chat import chat_loop
from herd.cli.client import HerdClient
from herd.cli.commands import add_run_flags
from herd.cli.common import CliError
from herd.cli.registry import pull_model
from herd.cli.session import THINK_VALUES, Session, stream_answer
from herd.protocol.api import GenerateRequest, Message, ShowResponse
from herd.protocol.durations import DurationError, parse_go_duration
from herd.protocol.names import InvalidName, parse_name


def load_model(client: HerdClient, session: Session) -> None:
    """/api/generate without a prompt: loads the model (ollama does this before `>>> `)."""
    client.generate(GenerateRequest(model=session.model, keep_alive=session.keep_alive,
                                    think=session.think))


def show_or_pull(client: HerdClient, model: str, insecure: bool) -> ShowResponse:
    """The model's /api/show; a model the server lacks is pulled first, as `ollama run` does."""
    try:
        return client.show(model)
    except CliError as e:
        if e.status != 404 or not _is_registry_name(model):
            raise
    pull_model(client, model, insecure)
    return client.show(model)


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
    with HerdClient() as client:
        show = show_or_pull(client, args.model, args.insecure)
        if interactive:
            load_model(client, session)
            return chat_loop(client, session, show)
        if not prompt:  # nothing to ask: load the model, like `echo -n | ollama run m`
            load_model(client, session)
            return 0
        answer = stream_answer(client, session, [Message(role="user", content=prompt)], "\n")
    return 130 if answer is None else 0


def parse_prompt_args(args: argparse.Namespace) -> None:
    """Flags may come between and after the prompt's words, as with ollama (cobra); argparse
    only mixes them with positionals in parse_intermixed_args, which subparsers cannot use,
    so the words after MODEL are parsed again here."""
    parser = argparse.ArgumentParser(prog="herd run MODEL")
    add_run_flags(parser)
    parser.add_argument("prompt", nargs="*")
    tokens = [f"--think-level={t.partition('=')[2]}" if t.startswith("--think=") else t
              for t in args.words]
    parser.parse_intermixed_args(tokens, namespace=args)
