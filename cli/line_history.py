"""`herd run`'s input history, kept where ollama keeps it: ~/.ollama/history, the last 100
lines, so the up arrow brings back what was typed in earlier chats — unless OLLAMA_NOHISTORY is
set (any value Go's ParseBool does not read as false, as ollama reads it)."""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

HISTORY_LIMIT = 100
_FALSE = {"0", "f", "F", "false", "FALSE", "False"}


def history_file(environ: Mapping[str, str] = os.environ) -> str | None:
    """The file to read and write, or None when history must not be kept on disk."""
    value = environ.get("OLLAMA_NOHISTORY", "").strip().strip("\"'")
    if value and value not in _FALSE:
        return None
    return os.path.join(os.path.expanduser("~"), ".ollama", "history")


@contextmanager
def persistent_history(path: str | None) -> Iterator[None]:
    """Loads the history into readline for the chat and saves it after (owner-only: prompts
    can be private). Without readline or without a path it only gives line editing."""
    try:
        import readline
    except ImportError:
        yield
        return
    if path:
        try:
            readline.read_history_file(path)
        except OSError:  # none yet, or unreadable: start empty
            pass
    readline.set_history_length(HISTORY_LIMIT)
    try:
        yield
    finally:
        if path:
            try:
                os.makedirs(os.path.dirname(path), exist_ok=True)
                readline.write_history_file(path)
                os.chmod(path, 0o600)
            except OSError:
                pass
