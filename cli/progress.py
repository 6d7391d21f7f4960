"""Progress of the long commands (create, pull, push) on stderr, drawn with rich.

Only those commands import this module: rich costs a noticeable share of a command's start-up.
"""

from __future__ import annotations

import re

from rich.console import Console, RenderableType
from rich.progress import (BarColumn, Progress, ProgressColumn, SpinnerColumn, Task, TaskID,
                           TextColumn)
from rich.table import Column, Table
from rich.text import Text

from herd.cli.common import human_bytes
from herd.protocol.api import StatusChunk

_DIGEST = re.compile(r"(sha256:[0-9a-f]{12})[0-9a-f]{52}")


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

    def status(self, chunk: StatusChunk) -> None:
        """A line of a status stream (HerdClient.create, pull, push); "success" ends it and is
        printed by the command itself."""
        if chunk.status != "success":
            self.update(chunk.status, chunk.total, chunk.completed)
