"""Tool calls in a model's streamed answer, in the formats chat models are trained on:

- Hermes / Qwen2.5: `<tool_call>{"name": ..., "arguments": {...}}</tool_call>`, repeated;
- Mistral: `[TOOL_CALLS][{"name": ..., "arguments": {...}}]` or `[TOOL_CALLS]name[ARGS]{...}`;
- Llama 3.1: `<|python_tag|>{...}`, or the whole answer a bare JSON object
  `{"name": ..., "parameters"|"arguments": {...}}` (or a list of them).

Text outside a call streams on at once; only what could still be the start of a call is held
back. Each call comes out whole, with its arguments as an object. Text that looks like a call
but does not parse stays content, so nothing the model wrote is lost.
"""

from __future__ import annotations

import enum
import random
import re
import string
from collections.abc import Iterable
from typing import Any

import msgspec

from herd.protocol.api import ToolCall, ToolFunctionCall

OPEN_TAG = "<tool_call>"
CLOSE_TAG = "</tool_call>"
# Tags followed directly by JSON (or Mistral's `name[ARGS]{...}`), with no closing tag.
PREFIX_TAGS = ("[TOOL_CALLS]", "<|python_tag|>")
_TAGS = (OPEN_TAG, *PREFIX_TAGS)
_LONGEST_TAG = max(len(t) for t in _TAGS)
_NAMED_ARGS = re.compile(r"([A-Za-z_][\w.\-]*)\[ARGS\]")
_NAMED_ARGS_PREFIX = re.compile(r"[A-Za-z_][\w.\-]*(\[(A(R(G(S)?)?)?)?)?")
_ID_ALPHABET = string.ascii_lowercase + string.digits

Event = str | ToolCall


def new_call_id() -> str:
    return "call_" + "".join(random.choices(_ID_ALPHABET, k=8))


class _Mode(enum.Enum):
    LEAD = 0  # start of the answer or just after a call: whitespace, maybe a call
    TEXT = 1  # plain content, watching for a tag
    TAGGED = 2  # inside <tool_call> ... </tool_call>
    PREFIXED = 3  # after [TOOL_CALLS] / <|python_tag|>: JSON or name[ARGS] must follow
    COLLECT = 4  # reading one JSON value to its end


class _JsonScan:
    """Tracks strings and nesting through JSON text fed piece by piece, so a long call is
    scanned once and brackets or tags inside string values are not mistaken for structure."""

    def __init__(self, start: int = 0) -> None:
        self.pos = start
        self.depth = 0
        self.in_string = False
        self.escaped = False
        self.closed_at: int | None = None  # just past the first complete top-level value

    def advance(self, text: str, upto: int) -> None:
        i = self.pos
        while i < upto:
            c = text[i]
            i += 1
            if self.in_string:
                if self.escaped:
                    self.escaped = False
                elif c == "\\":
                    self.escaped = True
                elif c == '"':
                    self.in_string = False
            elif c == '"':
                self.in_string = True
            elif c in "{[":
                self.depth += 1
            elif c in "}]":
                self.depth -= 1
                if self.depth == 0 and self.closed_at is None:
                    self.closed_at = i
        self.pos = max(self.pos, upto)


def _bare_start(text: str) -> bool | None:
    """Whether stripped text opens a bare call (`{"` or `[{"`): True, False, or None (too short)."""
    if text[0] == "[":
        text = text[1:].lstrip()
        if not text:
            return None
    if text[0] != "{":
        return False
    text = text[1:].lstrip()
    return None if not text else text[0] == '"'


def _held_suffix(text: str) -> int:
    """Length of the longest tail of text that is a proper beginning of a tag."""
    for k in range(min(len(text), _LONGEST_TAG - 1), 0, -1):
        tail = text[-k:]
        if any(tag.startswith(tail) for tag in _TAGS):
            return k
    return 0


class ToolCallParser:
    """Feed it the answer's text deltas; it returns content strings and whole tool calls, in
    order. `finish()` flushes what was held back when the answer ends."""

    def __init__(self, tool_names: Iterable[str]) -> None:
        # A bare JSON answer counts as a call only when it names an offered tool: a JSON
        # answer that merely has a "name" field must stay content.
        self._names = frozenset(tool_names)
        self._buf = ""
        self._mode = _Mode.LEAD
        self._after_call = False  # whitespace (and `;`) between calls is not content
        self._bare_ok = True  # only a whole answer (or what follows a bare call) may be bare JSON
        self._giveback = ""  # the tag text consumed, returned as content if no call follows
        self._tagged = False  # the JSON being collected followed a tag (any name accepted)
        self._named = ""  # Mistral's name[ARGS]: the JSON being collected is the arguments
        self._scan: _JsonScan | None = None  # the JSON of the call being read
        self._index = 0

    def feed(self, text: str) -> list[Event]:
        self._buf += text
        out: list[Event] = []
        while self._step(out, final=False):
            pass
        return out

    def finish(self) -> list[Event]:
        out: list[Event] = []
        while self._step(out, final=True):
            pass
        if self._buf:
            out.append(self._buf)
            self._buf = ""
        return out

    # -- one state per method; each returns whether it made progress ------------------------

    def _step(self, out: list[Event], final: bool) -> bool:
        if self._mode is _Mode.LEAD:
            return self._lead(out, final)
        if self._mode is _Mode.TEXT:
            return self._text(out, final)
        if self._mode is _Mode.TAGGED:
            return self._tagged_call(out, final)
        if self._mode is _Mode.PREFIXED:
            return self._prefixed(out, final)
        return self._collect(out, final)

    def _lead(self, out: list[Event], final: bool) -> bool:
        stripped = self._buf.lstrip(" \t\r\n;" if self._after_call else None)
        if not stripped:
            if final:
                if not self._after_call:
                    out.append(self._buf)
                self._buf = ""
            elif self._after_call:
                self._buf = ""
            return False
        if self._after_call:
            self._buf = stripped
        waiting = any(tag.startswith(stripped) and tag != stripped for tag in _TAGS)
        if waiting and not final:
            return False
        if self._bare_ok and not any(stripped.startswith(tag) for tag in PREFIX_TAGS):
            opens = _bare_start(stripped)
            if opens is None and not final:
                return False
            if opens:
                self._start_collect("", tagged=False)
                return True
        self._mode = _Mode.TEXT
        self._after_call = self._bare_ok = False
        return True

    def _text(self, out: list[Event], final: bool) -> bool:
        found = [(i, tag) for tag in _TAGS if (i := self._buf.find(tag)) >= 0]
        if found:
            i, tag = min(found)
            if i:
                out.append(self._buf[:i])
            self._buf = self._buf[i + len(tag):]
            self._giveback = tag
            self._scan = None
            self._mode = _Mode.TAGGED if tag == OPEN_TAG else _Mode.PREFIXED
            return True
        keep = 0 if final else _held_suffix(self._buf)
        if len(self._buf) > keep:
            out.append(self._buf[:len(self._buf) - keep])
            self._buf = self._buf[len(self._buf) - keep:]
        return False

    def _tagged_call(self, out: list[Event], final: bool) -> bool:
        if self._scan is None:
            self._scan = _JsonScan()
        j = self._buf.find(CLOSE_TAG, self._scan.pos)
        while j >= 0:
            self._scan.advance(self._buf, j)
            if not self._scan.in_string:  # a closing tag inside an argument string is text
                break
            j = self._buf.find(CLOSE_TAG, j + 1)
        if j < 0 and not final:
            return False
        body, rest = (self._buf, "") if j < 0 else (self._buf[:j], self._buf[j + len(CLOSE_TAG):])
        calls = self._calls(body, tagged=True)
        if calls is None:
            out.append(OPEN_TAG + body + (CLOSE_TAG if j >= 0 else ""))
        self._buf = rest
        self._scan = None
        self._after_calls(out, calls, bare_ok=False)
        return True

    def _prefixed(self, out: list[Event], final: bool) -> bool:
        stripped = self._buf.lstrip()
        if stripped and stripped[0] in "{[":
            self._start_collect(self._giveback, tagged=True)
            return True
        named = _NAMED_ARGS.match(stripped)
        if named:
            self._buf = stripped[named.end():]
            self._start_collect(self._giveback + stripped[:named.end()], tagged=True,
                                name=named.group(1))
            return True
        if not final and (not stripped or _NAMED_ARGS_PREFIX.fullmatch(stripped)):
            return False
        out.append(self._giveback)
        self._mode = _Mode.TEXT
        self._after_call = self._bare_ok = False
        return True

    def _start_collect(self, giveback: str, *, tagged: bool, name: str = "") -> None:
        self._giveback, self._tagged, self._named = giveback, tagged, name
        self._scan = None
        self._mode = _Mode.COLLECT

    def _collect(self, out: list[Event], final: bool) -> bool:
        if self._scan is None:
            start = len(self._buf) - len(self._buf.lstrip())
            if start == len(self._buf):
                if not final:
                    return False
            elif self._buf[start] not in "{[":  # name[ARGS] not followed by JSON
                return self._give_up(out, 0)
            self._scan = _JsonScan(start)
        self._scan.advance(self._buf, len(self._buf))
        end = self._scan.closed_at
        if end is None:
            if final:
                return self._give_up(out, len(self._buf))
            return False
        text = self._buf[:end]
        if self._named:
            arguments = _arguments(_decode(text))
            calls = None if arguments is None else [(self._named, arguments)]
        else:
            calls = self._calls(text, tagged=self._tagged)
        if calls is None:
            return self._give_up(out, end)
        self._buf = self._buf[end:]
        self._after_calls(out, calls, bare_ok=True)
        return True

    def _give_up(self, out: list[Event], upto: int) -> bool:
        """What looked like a call is not one: it is content after all."""
        text = self._giveback + self._buf[:upto]
        if text:
            out.append(text)
        self._buf = self._buf[upto:]
        self._mode = _Mode.TEXT
        self._after_call = self._bare_ok = False
        return True

    def _after_calls(self, out: list[Event], calls: list[tuple[str, dict[str, Any]]] | None,
                     *, bare_ok: bool) -> None:
        if calls is None:
            self._mode = _Mode.TEXT
            self._after_call = self._bare_ok = False
            return
        for name, arguments in calls:
            out.append(ToolCall(function=ToolFunctionCall(name, arguments, self._index),
                                id=new_call_id()))
            self._index += 1
        self._mode = _Mode.LEAD
        self._after_call = True
        # Llama 3.1 may follow one bare call with another; after an explicit tag it must not.
        self._bare_ok = bare_ok and self._bare_ok
        self._giveback = ""

    def _calls(self, text: str, *, tagged: bool) -> list[tuple[str, dict[str, Any]]] | None:
        value = _decode(text)
        items = value if isinstance(value, list) else [value]
        calls = [self._call(item, tagged) for item in items]
        if not calls or any(c is None for c in calls):
            return None
        return calls  # type: ignore[return-value]

    def _call(self, item: Any, tagged: bool) -> tuple[str, dict[str, Any]] | None:
        if not isinstance(item, dict):
            return None
        if isinstance(item.get("function"), dict):  # OpenAI's shape
            item = item["function"]
        name = item.get("name")
        if not isinstance(name, str) or not name:
            return None
        if not tagged and name not in self._names:
            return None
        if "arguments" in item:
            arguments = _arguments(item["arguments"])
        elif "parameters" in item:
            arguments = _arguments(item["parameters"])
        else:
            arguments = {} if tagged else None
        return None if arguments is None else (name, arguments)


_NOT_JSON = object()


def _decode(text: str) -> Any:
    try:
        return msgspec.json.decode(text)
    except msgspec.DecodeError:
        return _NOT_JSON


def _arguments(value: Any) -> dict[str, Any] | None:
    """Arguments as an object; some models write them as a JSON string."""
    if isinstance(value, str):
        value = _decode(value) if value.strip() else {}
    return value if isinstance(value, dict) else None


def split(events: Iterable[Event]) -> tuple[str, list[ToolCall]]:
    """All content and all calls of a whole answer."""
    text: list[str] = []
    calls: list[ToolCall] = []
    for event in events:
        if isinstance(event, str):
            text.append(event)
        else:
            calls.append(event)
    return "".join(text), calls


def grouped(events: list[Event]) -> list[str | list[ToolCall]]:
    """Adjacent content merged and adjacent calls batched, order kept: one chunk each."""
    out: list[str | list[ToolCall]] = []
    for event in events:
        if isinstance(event, str):
            if not event:
                continue
            if out and isinstance(out[-1], str):
                out[-1] += event
            else:
                out.append(event)
        elif out and isinstance(out[-1], list):
            out[-1].append(event)
        else:
            out.append([event])
    return out
