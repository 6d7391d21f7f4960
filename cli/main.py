"""The `herd` command. Client commands (run, list, show, ps, stop, cp, rm, create, pull, push)
talk to a server over HTTP through herd.cli.client; `serve`, `gateway` and `worker` start server
roles. Each command's module is imported only when it runs: a client never loads the server
stack, and a worker never loads the HTTP client stack (httpx) or rich."""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Callable

from herd.cli.commands import build_parser
from herd.cli.common import CliError


def _client(args: argparse.Namespace) -> int:
    try:
        module, _, name = args.client_command.partition(":")
        command: Callable[[argparse.Namespace], int] = getattr(
            importlib.import_module(f"herd.cli.{module}"), name)
        return command(args)
    except CliError as e:  # HerdClient turns every HTTP failure into one
        message = str(e)
    except FileExistsError as e:  # herd keygen never overwrites a key
        message = f"{e.filename} already exists"
    except OSError as e:  # a Modelfile or model file that cannot be read
        message = f"{e.filename}: {e.strerror}" if e.filename else str(e)
    except KeyboardInterrupt:
        return 130
    print(f"Error: {message}", file=sys.stderr)
    return 1


def _server_role(args: argparse.Namespace) -> int:
    from herd.gateway import server
    from herd.protocol.config import log_level, settings_from_env

    logging.basicConfig(level=log_level(os.environ),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = settings_from_env()
    if args.command == "serve":
        return server.serve(settings)
    if args.command == "gateway":
        return server.gateway(settings)
    return server.worker(settings, args.bind, args.exit_with_parent)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if hasattr(args, "client_command"):
        return _client(args)
    return _server_role(args)


if __name__ == "__main__":
    sys.exit(main())
