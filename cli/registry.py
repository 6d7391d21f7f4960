"""`herd pull` and `herd push`: /api/pull and /api/push with a progress bar per layer."""

from __future__ import annotations

import argparse

from herd.cli.client import HerdClient
from herd.cli.progress import ProgressDisplay
from herd.protocol.api import TransferRequest


def pull_model(client: HerdClient, model: str, insecure: bool = False) -> None:
    """The pull of `herd pull`, without its "success" line (`herd run` pulls with it)."""
    with ProgressDisplay() as display:
        client.pull(TransferRequest(model=model, insecure=insecure), display.status)


def cmd_pull(args: argparse.Namespace) -> int:
    with HerdClient() as client:
        pull_model(client, args.model, args.insecure)
    print("success")
    return 0


def cmd_push(args: argparse.Namespace) -> int:
    with HerdClient() as client, ProgressDisplay() as display:
        client.push(TransferRequest(model=args.model, insecure=args.insecure), display.status)
    print("success")
    return 0
