"""`herd list|show|cp|rm|create`: the ollama CLI's model-management commands, over HTTP.

They talk to a running server at OLLAMA_HOST exactly as `ollama` does, so they work the same
against a remote Herd (or an Ollama); nothing here touches the model store directly.
"""

from __future__ import annotations

import argparse
import hashlib
import ipaddress
import os
import pathlib
import re
import sys
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from typing import Any
from urllib.parse import urlsplit

import httpx
import msgspec
from rich.console import Console, RenderableType
from rich.progress import (BarColumn, Progress, ProgressColumn, SpinnerColumn, Task, TaskID,
                           TextColumn)
from rich.table import Column, Table
from rich.text import Text

from gateway.modelfile import Modelfile, ModelfileError, parse_modelfile
from protocol.api import CreateRequest, ShowResponse, TagsResponse

DEFAULT_PORT = 11434
_CHUNK = 1 << 20
# No read timeout: a create that quantizes a large model can go minutes between lines.
_TIMEOUT = httpx.Timeout(None, connect=10.0)
_PATH_PREFIXES = ("./", "../", "/", "~")
_DIGEST = re.compile(r"(sha256:[0-9a-f]{12})[0-9a-f]{52}")


class CliError(Exception):
    """Printed as `Error: <message>` with exit status 1, like the ollama CLI."""


class _StreamLine(msgspec.Struct):
    """A line of /api/create's NDJSON (a status or an error), or an error body."""

    status: str = ""
    error: str | None = None
    total: int | None = None
    completed: int | None = None


def base_url(value: str) -> str:
    """OLLAMA_HOST as a URL to connect to: [scheme://]host[:port][/path], 0.0.0.0 → 127.0.0.1."""
    value = value.strip().strip("\"'").strip()
    scheme, port = "http", DEFAULT_PORT
    if "://" in value:
        scheme, value = value.split("://", 1)
        scheme = scheme.lower()
        port = {"http": 80, "https": 443}.get(scheme, DEFAULT_PORT)
    hostport, _, path = value.partition("/")
    host: str | None
    try:
        host = str(ipaddress.ip_address(hostport))  # a bare IPv6 address has no port
    except ValueError:
        parts = urlsplit(f"//{hostport}")
        host = parts.hostname
        try:
            port = parts.port or port
        except ValueError:
            raise CliError(f"invalid OLLAMA_HOST {value!r}") from None
    # A server listening on every interface is reached through loopback.
    if not host or host in ("0.0.0.0", "::"):
        host = "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    path = path.strip("/")
    return f"{scheme}://{host}:{port}" + (f"/{path}" if path else "")


def _client() -> httpx.Client:
    return httpx.Client(base_url=base_url(os.environ.get("OLLAMA_HOST", "")), timeout=_TIMEOUT)


def _check(response: httpx.Response) -> httpx.Response:
    if response.is_success:
        return response
    response.read()
    try:
        message = msgspec.json.decode(response.content, type=_StreamLine).error
    except msgspec.DecodeError:
        message = None
    raise CliError(message or response.text.strip() or f"HTTP {response.status_code}")


def human_bytes(size: int) -> str:
    """Decimal units; one decimal below 10 unless whole: "253 MB", "1.2 GB", "2 GB"."""
    for unit, scale in (("TB", 10**12), ("GB", 10**9), ("MB", 10**6), ("KB", 10**3)):
        if size >= scale:
            value = size / scale
            if value >= 10 or value == int(value):
                return f"{int(value)} {unit}"
            return f"{value:.1f} {unit}"
    return f"{size} B"


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
    with _client() as client:
        tags = msgspec.json.decode(_check(client.get("/api/tags")).content, type=TagsResponse)
    prefix = (args.prefix or "").lower()
    rows = [["NAME", "ID", "SIZE", "MODIFIED"]]
    rows += [[m.name, m.digest.removeprefix("sha256:")[:12], human_bytes(m.size),
              human_time(m.modified_at)] for m in tags.models if m.name.lower().startswith(prefix)]
    print("\n".join(_table(rows)))
    return 0


_SHOW_FIELDS = ("modelfile", "parameters", "template", "system", "license")


def cmd_show(args: argparse.Namespace) -> int:
    with _client() as client:
        response = _check(client.post("/api/show", json={"model": args.model}))
    show = msgspec.json.decode(response.content, type=ShowResponse)
    field = next((name for name in _SHOW_FIELDS if getattr(args, name)), None)
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


def cmd_copy(args: argparse.Namespace) -> int:
    with _client() as client:
        _check(client.post("/api/copy",
                           json={"source": args.source, "destination": args.destination}))
    print(f"copied '{args.source}' to '{args.destination}'")
    return 0


def cmd_delete(args: argparse.Namespace) -> int:
    with _client() as client:
        for name in args.models:
            _check(client.request("DELETE", "/api/delete", json={"model": name}))
            print(f"deleted '{name}'")
    return 0


class _SizedColumn(ProgressColumn):
    """Bar, percentage and bytes, shown only by the phases that report sizes."""

    def __init__(self) -> None:
        super().__init__()
        self.bar = BarColumn(bar_width=30)

    def render(self, task: Task) -> RenderableType:
        if not task.fields.get("sized"):
            return Text("")
        grid = Table.grid(padding=(0, 1))
        grid.add_row(self.bar.render(task), Text(
            f"{task.percentage:3.0f}%  {human_bytes(int(task.completed))}"
            f"/{human_bytes(int(task.total or 0))}"))
        return grid


class _Display:
    """Progress on stderr: a spinner line per phase and a bar when a phase reports a size.

    When stderr is not a terminal (logs, pipes) each phase is printed once as a plain line.
    """

    def __init__(self) -> None:
        # soft_wrap: a digest must stay on one line when stderr is not a terminal.
        self.console = Console(stderr=True, soft_wrap=True)
        self.live = self.console.is_terminal
        # markup off: a status is server text, a "[" in it is not rich markup.
        text = TextColumn("{task.description}", markup=False,
                          table_column=Column(ratio=1, no_wrap=True, overflow="ellipsis"))
        self.progress = Progress(SpinnerColumn(finished_text=" "), text, _SizedColumn(),
                                 console=self.console)
        self.current: TaskID | None = None
        self.text = ""
        self.total = 1.0  # the current phase's size; 1 for a phase without one

    def __enter__(self) -> _Display:
        if self.live:
            self.progress.start()
        return self

    def __exit__(self, error: type[BaseException] | None, *exc: object) -> None:
        if error is None:  # a failed phase stays unfinished on screen
            self._finish_current()
        if self.live:
            self.progress.stop()

    def _finish_current(self) -> None:
        if self.current is not None:
            self.progress.update(self.current, total=self.total, completed=self.total)

    def update(self, text: str, total: int | None = None, completed: int | None = None) -> None:
        if text != self.text:
            self._finish_current()
            self.text = text
            # Long digests would squeeze the bar out; logs keep them whole.
            shown = _DIGEST.sub(r"\1", text) if self.live else text
            self.current = self.progress.add_task(shown, total=None, sized=False)
            self.total = 1.0
            if not self.live:
                self.console.print(text, highlight=False, markup=False)
        if total is not None and self.current is not None:
            self.total = float(total)
            self.progress.update(self.current, total=total, completed=completed or 0, sized=True)


def _sha256(path: pathlib.Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return f"sha256:{digest.hexdigest()}"


def _upload(client: httpx.Client, path: pathlib.Path, display: _Display) -> str:
    """Put the file in the server's blob store unless it is there already; return its digest."""
    digest = _sha256(path)
    head = client.head(f"/api/blobs/{digest}")
    if head.status_code != 404:  # 200: the server has it already
        _check(head)
        return digest
    size = path.stat().st_size
    text = f"copying file {digest}"

    def body() -> Iterator[bytes]:
        sent = 0
        with path.open("rb") as f:
            while chunk := f.read(_CHUNK):
                sent += len(chunk)
                display.update(text, total=size, completed=sent)
                yield chunk

    display.update(text, total=size, completed=0)
    _check(client.post(f"/api/blobs/{digest}", content=body(),
                       headers={"Content-Length": str(size)}))
    return digest


def _local_path(value: str, base: pathlib.Path) -> pathlib.Path | None:
    """The file or folder a FROM/ADAPTER value names, relative to the Modelfile, if it exists."""
    path = base / pathlib.Path(value).expanduser()
    if path.exists():
        return path
    if value.startswith(_PATH_PREFIXES):
        raise CliError(f"{value}: no such file or directory")
    return None


def _model_files(path: pathlib.Path) -> dict[str, pathlib.Path]:
    """What a FROM path uploads: the file itself, or a folder's safetensors model (else GGUF)."""
    if path.is_file():
        return {path.name: path}
    files = sorted(p for p in path.iterdir() if p.is_file())
    if any(p.suffix == ".safetensors" for p in files):
        # As ollama: weights, every JSON (config, tokenizer*, generation config) and the
        # SentencePiece model that older tokenizers ship instead of tokenizer.json.
        chosen = [p for p in files
                  if p.suffix in (".safetensors", ".json") or p.name == "tokenizer.model"]
    else:
        chosen = [p for p in files if p.suffix == ".gguf"]
    if not chosen:
        raise CliError(f"no safetensors or GGUF files found in {path}")
    return {p.relative_to(path).as_posix(): p for p in chosen}


def _read_modelfile(option: str | None) -> tuple[str, pathlib.Path]:
    path = pathlib.Path(option or "Modelfile")
    if option is None and not path.exists():  # like ollama: no Modelfile means "this folder"
        return "FROM .\n", pathlib.Path.cwd()
    return path.read_text(encoding="utf-8"), path.resolve().parent


def build_request(name: str, mf: Modelfile, base: pathlib.Path, quantize: str,
                  upload: Callable[[dict[str, pathlib.Path]], dict[str, str]]) -> CreateRequest:
    """The JSON /api/create body for a Modelfile, its local paths turned into uploaded blobs."""
    # Every path is checked before the first upload, so a typo fails fast.
    source = _local_path(mf.from_, base)
    files = _model_files(source) if source else None
    adapters: dict[str, pathlib.Path] = {}
    for value in mf.adapters:
        path = _local_path(value, base)
        if path is None:
            raise CliError(f"{value}: no such file or directory")
        adapters.update(_model_files(path))
    parameters = msgspec.to_builtins(mf.parameters)  # set fields only: Options omits defaults
    return CreateRequest(
        model=name,
        from_="" if files else mf.from_,
        files=upload(files) if files else None,
        adapters=upload(adapters) if adapters else None,
        template=mf.template, system=mf.system, license=mf.licenses or None,
        parameters=parameters or None, messages=mf.messages or None,
        quantize=quantize, stream=True)


def cmd_create(args: argparse.Namespace) -> int:
    text, base = _read_modelfile(args.file)
    try:  # parsed here, like ollama, so the server only ever sees the JSON form
        mf = parse_modelfile(text)
    except ModelfileError as e:
        raise CliError(str(e)) from None
    with _client() as client, _Display() as display:
        def upload(files: dict[str, pathlib.Path]) -> dict[str, str]:
            display.update("gathering model components")
            return {name: _upload(client, path, display) for name, path in files.items()}

        request = build_request(args.model, mf, base, args.quantize or "", upload)
        body = msgspec.json.encode(request)
        with client.stream("POST", "/api/create", content=body,
                           headers={"Content-Type": "application/json"}) as response:
            _check(response)
            status = ""
            for raw in response.iter_lines():
                if not raw.strip():
                    continue
                line = msgspec.json.decode(raw, type=_StreamLine)
                if line.error is not None:
                    raise CliError(line.error)
                status = line.status
                if status != "success":
                    display.update(status, line.total, line.completed)
            if status != "success":  # the stream broke off: the model may not exist
                raise CliError("the server closed the connection before the create finished")
    print("success")
    return 0


def add_commands(sub: Any) -> None:
    """Register the subcommands on `herd`'s subparsers; each sets `client_command`."""
    def command(name: str, run: Callable[[argparse.Namespace], int], summary: str,
                **kwargs: Any) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = sub.add_parser(name, help=summary, **kwargs)
        parser.set_defaults(client_command=run)
        return parser

    command("list", cmd_list, "list models on the server", aliases=["ls"]).add_argument(
        "prefix", nargs="?", help="only names starting with this")
    show = command("show", cmd_show, "show information for a model")
    show.add_argument("model")
    only = show.add_mutually_exclusive_group()
    for field in _SHOW_FIELDS:
        only.add_argument(f"--{field}", action="store_true", help=f"show the model's {field}")
    cp = command("cp", cmd_copy, "copy a model")
    cp.add_argument("source")
    cp.add_argument("destination")
    command("rm", cmd_delete, "remove models").add_argument("models", nargs="+", metavar="model")
    create = command("create", cmd_create, "create a model from a Modelfile")
    create.add_argument("model")
    create.add_argument("-f", "--file", help="Modelfile path (default: ./Modelfile)")
    create.add_argument("-q", "--quantize", help="quantize the model to this type (e.g. q4_K_M)")


def run(args: argparse.Namespace) -> int:
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
