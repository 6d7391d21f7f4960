"""Every `herd` subcommand and its arguments, with argparse alone.

A command names its implementation as "module:function" under herd.cli instead of importing it,
so building the parser (and `herd worker`, `herd serve`) loads neither the HTTP client stack
(httpx) nor rich; herd.cli.main imports the one module a command needs when it runs.
"""

from __future__ import annotations

import argparse
from typing import Any

# `herd show --<field>`: print only that field of /api/show's answer.
SHOW_FIELDS = ("modelfile", "parameters", "template", "system", "license")


def add_run_flags(parser: argparse.ArgumentParser) -> None:
    """`herd run`'s flags; herd.cli.run parses them again among the prompt's words."""
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


def _client_commands(sub: Any) -> None:
    def command(name: str, target: str, summary: str, **kwargs: Any) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = sub.add_parser(name, help=summary, **kwargs)
        parser.set_defaults(client_command=target)
        return parser

    # run: an answer or a chat, from a running server
    run = command("run", "run:cmd_run", "run a model: one answer, or a chat at >>>")
    add_run_flags(run)
    run.add_argument("model")
    run.add_argument("words", nargs=argparse.REMAINDER, metavar="PROMPT",
                     help="the prompt (else piped stdin, else a chat)")
    # list, show, ps, stop, cp, rm, create
    command("list", "models:cmd_list", "list models on the server", aliases=["ls"]).add_argument(
        "prefix", nargs="?", help="only names starting with this")
    show = command("show", "models:cmd_show", "show information for a model")
    show.add_argument("model")
    only = show.add_mutually_exclusive_group()
    for field in SHOW_FIELDS:
        only.add_argument(f"--{field}", action="store_true", help=f"show the model's {field}")
    command("ps", "models:cmd_ps", "list running models")
    command("stop", "models:cmd_stop", "stop a running model").add_argument("model")
    cp = command("cp", "models:cmd_copy", "copy a model")
    cp.add_argument("source")
    cp.add_argument("destination")
    command("rm", "models:cmd_delete", "remove models").add_argument(
        "models", nargs="+", metavar="model")
    create = command("create", "create:cmd_create", "create a model from a Modelfile")
    create.add_argument("model")
    create.add_argument("-f", "--file", help="Modelfile path (default: ./Modelfile)")
    create.add_argument("-q", "--quantize", help="quantize the model to this type (e.g. q4_K_M)")
    # pull, push
    for name, summary in (("pull", "pull a model from a registry"),
                          ("push", "push a model to a registry")):
        transfer = command(name, f"registry:cmd_{name}", summary)
        transfer.add_argument("model")
        transfer.add_argument("--insecure", action="store_true",
                              help="use an insecure registry (plain http)")
    # keygen: a CURVE key pair for the TCP links between gateways and workers
    command("keygen", "keys:cmd_keygen",
            "write a CURVE key pair: PATH.key (secret) and PATH.pub").add_argument(
        "path", help="where to write PATH.key and PATH.pub")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="herd", description="Ollama-compatible LLM server")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("serve", help="gateway + local worker node on OLLAMA_HOST")
    sub.add_parser("gateway", help="HTTP gateway only, connecting to HERD_WORKERS")
    w = sub.add_parser("worker", help="worker node only: starts runners on request")
    w.add_argument("--bind", default="", help="ZeroMQ endpoint, e.g. tcp://0.0.0.0:11435")
    w.add_argument("--exit-with-parent", action="store_true", help=argparse.SUPPRESS)
    _client_commands(sub)
    return parser
