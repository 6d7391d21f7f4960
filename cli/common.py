"""What every `herd` client command shares: the server connection, its errors, and progress.

The commands (herd.cli.models, client_create, client_registry) reach the server at
OLLAMA_HOST as `ollama` does; the long ones (create, pull, push) follow a status stream and show
it with ProgressDisplay.
"""

from __future__ import annotations

import ipaddress
import os
import re
from urllib.parse import urlsplit

import httpx
import msgspec
from rich.console import Console, RenderableType
from rich.progress import (BarColumn, Progress, ProgressColumn, SpinnerColumn, Task, TaskID,
                           TextColumn)
from rich.table import Column, Table
from rich.text import Text

DEFAULT_PORT = 11434
# No read timeout: a create that quantizes a large model can go minutes between lines.
_TIMEOUT = httpx.Timeout(None, connect=10.0)
_DIGEST = re.compile(r"(sha256:[0-9a-f]{12})[0-9a-f]{52}")


class CliError(Exception):
    """Printed as `Error: <message>` with exit status 1, like the ollama CLI."""


class StreamLine(msgspec.Struct):
    """A line of a status stream (/api/create, pull, push: a status or an error), or an
    error body."""

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


def server_client() -> httpx.Client:
    return httpx.Client(base_url=base_url(os.environ.get("OLLAMA_HOST", "")), timeout=_TIMEOUT)


def check_response(response: httpx.Response) -> httpx.Response:
    if response.is_success:
        return response
    response.read()
    try:
        message = msgspec.json.decode(response.content, type=StreamLine).error
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


class ProgressDisplay:
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

    def __enter__(self) -> ProgressDisplay:
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


def follow_status_stream(response: httpx.Response, display: ProgressDisplay,
                         cut_off: str) -> None:
    """Shows a streamed reply's statuses until "success"; an error line, or a stream that ends
    without "success" (raised with `cut_off`), is a CliError."""
    check_response(response)
    status = ""
    for raw in response.iter_lines():
        if not raw.strip():
            continue
        line = msgspec.json.decode(raw, type=StreamLine)
        if line.error is not None:
            raise CliError(line.error)
        status = line.status
        if status != "success":
            display.update(status, line.total, line.completed)
    if status != "success":
        raise CliError(cut_off)
