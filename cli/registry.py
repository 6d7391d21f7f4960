"""`herd pull` and `herd push`: /api/pull and /api/push with a progress bar per layer."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

import msgspec

from herd.cli.common import ProgressDisplay, follow_status_stream, server_client
from herd.protocol.api import TransferRequest


def transfer(path: str, model: str, insecure: bool) -> None:
    """Runs a pull or push with its progress on stderr; a failure is a CliError."""
    body = msgspec.json.encode(TransferRequest(model=model, insecure=insecure))
    with server_client() as client, ProgressDisplay() as display:
        with client.stream("POST", path, content=body,
                           headers={"Content-Type": "application/json"}) as response:
            follow_status_stream(response, display,
                                 "the server closed the connection before the transfer finished")


def pull_model(model: str, insecure: bool = False) -> None:
    """The pull of `herd pull`, without its "success" line (`herd run` pulls with it)."""
    transfer("/api/pull", model, insecure)


def _transfer(path: str, args: argparse.Namespace) -> int:
    transfer(path, args.model, args.insecure)
    print("success")
    return 0


def cmd_pull(args: argparse.Namespace) -> int:
    return _transfer("/api/pull", args)


def cmd_push(args: argparse.Namespace) -> int:
    return _transfer("/api/push", args)


def add_commands(sub: Any) -> None:
    """Register `pull` and `push` on `herd`'s subparsers (dispatched by client_cli.run)."""
    commands: list[tuple[str, Callable[[argparse.Namespace], int], str]] = [
        ("pull", cmd_pull, "pull a model from a registry"),
        ("push", cmd_push, "push a model to a registry"),
    ]
    for name, run, summary in commands:
        parser = sub.add_parser(name, help=summary)
        parser.set_defaults(client_command=run)
        parser.add_argument("model")
        parser.add_argument("--insecure", action="store_true",
                            help="use an insecure registry (plain http)")
