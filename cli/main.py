"""The `herd` command. Client commands (run, list, show, ps, stop, cp, rm, create, pull, push)
talk to a server over HTTP; `serve`, `gateway` and `worker` start server roles, imported only
when asked for, so a client never loads the server stack and a worker never loads the HTTP one."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable

import httpx

from herd.cli import models, registry, run
from herd.cli.common import CliError, base_url


def _client(args: argparse.Namespace) -> int:
    command: Callable[[argparse.Namespace], int] = args.client_command
    try:
        return command(args)
    except CliError as e:
        message = str(e)
    except httpx.ConnectError:
        url = base_url(os.environ.get("OLLAMA_HOST", ""))
        message = f"could not connect to a server at {url}, is it running?"
    except httpx.HTTPError as e:
        message = str(e) or type(e).__name__
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
    parser = argparse.ArgumentParser(prog="herd", description="Ollama-compatible LLM server")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("serve", help="gateway + local worker node on OLLAMA_HOST")
    sub.add_parser("gateway", help="HTTP gateway only, connecting to HERD_WORKERS")
    w = sub.add_parser("worker", help="worker node only: starts runners on request")
    w.add_argument("--bind", default="", help="ZeroMQ endpoint, e.g. tcp://0.0.0.0:11435")
    w.add_argument("--exit-with-parent", action="store_true", help=argparse.SUPPRESS)
    run.add_commands(sub)  # run: an answer or a chat, from a running server
    models.add_commands(sub)  # list, show, ps, stop, cp, rm, create
    registry.add_commands(sub)  # pull, push
    args = parser.parse_args(argv)
    if hasattr(args, "client_command"):
        return _client(args)
    return _server_role(args)


if __name__ == "__main__":
    sys.exit(main())
