"""Splits a thinking model's answer into its reasoning (`<think>…</think>`) and its content.

The reasoning is the block at the very start of the answer. When the prompt itself opened the
block (DeepSeek-R1's template ends with `<think>`), the answer starts inside it. A tag split
across tokens is held back until it is whole; text that only looked like the start of a tag
is released as it was.
"""

from __future__ import annotations

import enum

OPEN = "<think>"
CLOSE = "</think>"


class _State(enum.Enum):
    LEAD = 0  # nothing but whitespace yet: the block may still open
    THINKING = 1
    AFTER = 2  # the block closed: whitespace before the content is dropped
    CONTENT = 3


class ThinkingSplitter:
    def __init__(self, *, opened_by_prompt: bool = False) -> None:
        self._state = _State.THINKING if opened_by_prompt else _State.LEAD
        self._held = ""

    @property
    def closed(self) -> bool:
        """The block is over (or the answer never opened one): content comes next."""
        return self._state in (_State.AFTER, _State.CONTENT)

    @property
    def undecided(self) -> bool:
        """Nothing but whitespace (or a part of `<think>`) yet: the block may still open."""
        return self._state is _State.LEAD

    def feed(self, text: str) -> tuple[str, str]:
        """→ (thinking, content) that are safe to emit now."""
        thinking: list[str] = []
        content: list[str] = []
        text = self._held + text
        self._held = ""
        while text:
            if self._state is _State.LEAD:
                stripped = text.lstrip()
                if not stripped:
                    self._held = text
                    break
                if stripped.startswith(OPEN):
                    self._state, text = _State.THINKING, stripped[len(OPEN):]
                elif OPEN.startswith(stripped):
                    self._held = text
                    break
                else:
                    self._state = _State.CONTENT
            elif self._state is _State.THINKING:
                end = text.find(CLOSE)
                if end >= 0:
                    thinking.append(text[:end])
                    self._state, text = _State.AFTER, text[end + len(CLOSE):]
                    continue
                keep = _partial_suffix(text, CLOSE)
                thinking.append(text[:len(text) - keep])
                self._held = text[len(text) - keep:]
                break
            elif self._state is _State.AFTER:
                text = text.lstrip()
                if text:
                    self._state = _State.CONTENT
            else:
                content.append(text)
                break
        return "".join(thinking), "".join(content)

    def finish(self) -> tuple[str, str]:
        """The end of the answer: whatever was held back goes where it was heading."""
        held, self._held = self._held, ""
        if self._state is _State.THINKING:
            return held, ""
        if self._state is _State.LEAD and held.strip():
            return "", held
        return "", ""


def may_open(text: str) -> bool:
    """Whether an answer that starts with `text` may still open a thinking block."""
    stripped = text.lstrip()
    return not stripped or stripped.startswith(OPEN) or OPEN.startswith(stripped)


def _partial_suffix(text: str, tag: str) -> int:
    """Length of the longest end of `text` that is a proper start of `tag`."""
    for n in range(min(len(tag) - 1, len(text)), 0, -1):
        if text.endswith(tag[:n]):
            return n
    return 0
