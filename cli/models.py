"""`herd list|show|ps|stop|cp|rm|create`: the ollama CLI's model-management commands, over HTTP.

They talk to a running server at OLLAMA_HOST exactly as `ollama` does, through HerdClient, so
they work the same against a remote Herd (or an Ollama); nothing here touches the model store
directly. `create` lives in herd.cli.create, `run` in herd.cli.run, the arguments of every
command in herd.cli.commands.
"""

from __future__ import annotations

import argparse
from datetime import datetime, timezone
from typing import Any

from herd.cli.client import HerdClient
from herd.cli.commands import SHOW_FIELDS
from herd.cli.common import CliError, human_bytes
from herd.protocol.api import GenerateRequest, ShowResponse


def human_duration(seconds: float) -> str:
    if seconds < 1:
        return "Less than a second"
    if seconds < 60:
        return "1 second" if int(seconds) == 1 else f"{int(seconds)} seconds"
    minutes = int(seconds // 60)
    if minutes < 60:
        return "About a minute" if minutes == 1 else f"{minutes} minutes"
    hours = round(seconds / 3600)
    if hours == 1:
        return "About an hour"
    for below, hours_per, unit in ((48, 1, "hours"), (24 * 14, 24, "days"),
                                   (24 * 60, 24 * 7, "weeks"), (24 * 365 * 2, 24 * 30, "months")):
        if hours < below:
            return f"{hours // hours_per} {unit}"
    return f"{int(seconds // (3600 * 24 * 365))} years"


def human_time(timestamp: str, now: datetime | None = None) -> str:
    try:
        then = datetime.fromisoformat(timestamp)
    except ValueError:
        return timestamp
    if then.tzinfo is None:
        then = then.replace(tzinfo=timezone.utc)
    delta = ((now or datetime.now(timezone.utc)) - then).total_seconds()
    return f"{human_duration(-delta)} from now" if delta < 0 else f"{human_duration(delta)} ago"


def _table(rows: list[list[str]], indent: str = "") -> list[str]:
    """Left-aligned columns four spaces apart, like the tablewriter setup ollama uses."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))] if rows else []
    return [indent + "    ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip()
            for row in rows]


def cmd_list(args: argparse.Namespace) -> int:
    with HerdClient() as client:
        tags = client.list()
    prefix = (args.prefix or "").lower()
    rows = [["NAME", "ID", "SIZE", "MODIFIED"]]
    rows += [[m.name, m.digest.removeprefix("sha256:")[:12], human_bytes(m.size),
              human_time(m.modified_at)] for m in tags.models if m.name.lower().startswith(prefix)]
    print("\n".join(_table(rows)))
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    with HerdClient() as client:
        show = client.show(args.model)
    field = next((name for name in SHOW_FIELDS if getattr(args, name)), None)
    if field is None:
        print(show_summary(show), end="")
        return 0
    value = getattr(show, field) or ""
    # ollama prints system and template verbatim, the others with a newline.
    print(value, end="" if field in ("system", "template") and value.endswith("\n") else "\n")
    return 0


def _first_lines(text: str, keep: int = 2) -> list[list[str]]:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return [[line] for line in lines[:keep]] + ([["..."]] if len(lines) > keep else [])


def show_summary(show: ShowResponse) -> str:
    info: dict[str, Any] = show.model_info
    arch = str(info.get("general.architecture", show.details.family or ""))
    parameters = show.details.parameter_size or str(info.get("general.parameter_count", ""))
    model = [["architecture", arch], ["parameters", parameters],
             ["context length", str(info.get(f"{arch}.context_length", ""))],
             ["embedding length", str(info.get(f"{arch}.embedding_length", ""))],
             ["quantization", show.details.quantization_level]]
    sections: list[tuple[str, list[list[str]]]] = [
        ("Model", [row for row in model if row[1]]),
        ("Capabilities", [[capability] for capability in show.capabilities]),
        ("Parameters", [(line.split(None, 1) + [""])[:2]
                        for line in (show.parameters or "").splitlines() if line.strip()]),
        ("System", _first_lines(show.system or "")),
        ("License", _first_lines(show.license or "")),
    ]
    out: list[str] = []
    for header, rows in sections:
        if rows:
            out += [f"  {header}", *_table(rows, indent="    "), ""]
    return "\n".join(out) + "\n"


def processor(size: int, size_vram: int) -> str:
    """Where a loaded model sits, as `ollama ps` says it."""
    if size_vram == 0:
        return "100% CPU"
    if size_vram == size:
        return "100% GPU"
    if size_vram > size or size == 0:
        return "Unknown"
    cpu = round((size - size_vram) / size * 100)
    return f"{cpu}%/{100 - cpu}% CPU/GPU"


def until(expires_at: str, now: datetime | None = None) -> str:
    """The UNTIL column: when the idle timer unloads the model."""
    now = now or datetime.now(timezone.utc)
    try:
        then = datetime.fromisoformat(expires_at)
    except ValueError:
        return expires_at
    if then.tzinfo is None:
        then = then.replace(tzinfo=timezone.utc)
    if then <= now:
        return "Stopping..."
    if (then - now).days > 20 * 365:  # a negative keep_alive: loaded for good
        return "Forever"
    return human_time(expires_at, now)


def cmd_ps(args: argparse.Namespace) -> int:
    with HerdClient() as client:
        ps = client.ps()
    rows = [["NAME", "ID", "SIZE", "PROCESSOR", "CONTEXT", "UNTIL"]]
    rows += [[m.name, m.digest.removeprefix("sha256:")[:12], human_bytes(m.size),
              processor(m.size, m.size_vram), str(m.context_length), until(m.expires_at)]
             for m in ps.models]
    print("\n".join(_table(rows)))
    return 0


def cmd_stop(args: argparse.Namespace) -> int:
    """Unloads the model: /api/generate with no prompt and keep_alive 0, like `ollama stop`."""
    with HerdClient() as client:
        try:
            client.generate(GenerateRequest(model=args.model, keep_alive=0))
        except CliError as e:
            if "not found" in str(e):
                raise CliError(f'couldn\'t find model "{args.model}" to stop') from None
            raise
    return 0


def cmd_copy(args: argparse.Namespace) -> int:
    with HerdClient() as client:
        client.copy(args.source, args.destination)
    print(f"copied '{args.source}' to '{args.destination}'")
    return 0


def cmd_delete(args: argparse.Namespace) -> int:
    with HerdClient() as client:
        for name in args.models:
            client.delete(name)
            print(f"deleted '{name}'")
    return 0
