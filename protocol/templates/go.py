"""A port of the part of Go's text/template that Ollama's TEMPLATE layers use.

Actions, pipelines, `if`/`else if`/`with`/`range` (with `break`/`continue`), variables with Go's
scoping, `{{-`/`-}}` trimming, comments, and the builtin functions plus Ollama's `json`,
`currentDate` and `yesterdayDate`. Data is plain Python values; struct-like values are dicts
whose keys are either the Go field name (`Messages`) or its JSON name (`tool_calls`).
`define`/`template`/`block` are refused at parse time: no Ollama template needs them.
"""

from __future__ import annotations

import datetime
import html
import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from herd.protocol.templates.go_parse import (Action, Branch, Command, Node, Operand, Pipeline,
                                        RangeNode, TemplateError, TextNode, cut_after_field,
                                        parse_template)

__all__ = ["GoJSON", "GoTemplate", "TemplateError", "MISSING", "go_json"]


class _Missing:
    """Go's zero value for a key absent from a map: prints as <no value>, is false."""

    def __repr__(self) -> str:
        return "<no value>"


MISSING = _Missing()


class GoJSON(dict):
    """A struct whose Go type has a String() method that marshals it to JSON (Ollama's Tool and
    tool-call arguments): printing it gives JSON, fields still read like a struct's."""


def go_json(value: Any) -> str:
    # encoding/json escapes HTML characters and line separators unless told otherwise.
    text = json.dumps(_norm(value), ensure_ascii=False, separators=(",", ":"))
    for raw, escaped in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"),
                         ("\u2028", "\\u2028"), ("\u2029", "\\u2029")):
        text = text.replace(raw, escaped)
    return text


MAX_OUTPUT_CHARS = 16 << 20
MAX_RANGE_STEPS = 1_000_000
# The runner renders in its main loop, between engine steps: a render that runs longer than this
# stalls every stream on the model, so it fails its request instead.
MAX_RENDER_SECONDS = 2.0


class _Break(Exception):
    pass


class _Continue(Exception):
    pass


def truth(value: Any) -> bool:
    if value is None or value is MISSING:
        return False
    if isinstance(value, (bool, int, float, str, list, tuple, dict)):
        return bool(value)
    return True


def go_print(value: Any) -> str:
    """fmt.Sprint for the values templates print."""
    if value is MISSING:
        return "<no value>"
    if value is None:
        return "<nil>"
    if isinstance(value, GoJSON):
        return go_json(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            return "NaN" if value != value else ("+Inf" if value > 0 else "-Inf")
        return repr(value) if value != int(value) or abs(value) >= 1e21 else str(int(value))
    if isinstance(value, (list, tuple)):
        return "[" + " ".join(go_print(v) for v in value) + "]"
    if isinstance(value, dict):
        return "map[" + " ".join(f"{go_print(k)}:{go_print(v)}" for k, v in sorted(value.items())) + "]"
    return str(value)


def _json_name(go_name: str) -> str:
    # ToolCalls → tool_calls, ToolCallID → tool_call_id: Ollama's structs use snake_case tags.
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", go_name.replace("ID", "Id")).lower()


def field_of(value: Any, name: str) -> Any:
    if isinstance(value, dict):
        if name in value:
            return value[name]
        return value.get(_json_name(name), MISSING)
    if value is None or value is MISSING:
        raise TemplateError(f"nil pointer evaluating .{name}")
    raise TemplateError(f"can't evaluate field {name} in type {type(value).__name__}")


# -- functions -----------------------------------------------------------------------------

def _eq(a: Any, *others: Any) -> bool:
    if not others:
        raise TemplateError("missing argument for comparison")
    return any(_norm(a) == _norm(b) for b in others)


def _norm(v: Any) -> Any:
    return None if v is MISSING else v


def _compare(op: Callable[[Any, Any], bool]) -> Callable[[Any, Any], bool]:
    def compare(a: Any, b: Any) -> bool:
        try:
            return op(_norm(a), _norm(b))
        except TypeError as e:
            raise TemplateError(f"incompatible types for comparison: {e}") from None
    return compare


def _length(v: Any) -> int:
    if isinstance(v, (str, list, tuple, dict)):
        return len(v)
    if v is None or v is MISSING:
        return 0
    raise TemplateError(f"len of type {type(v).__name__}")


def _index(v: Any, *keys: Any) -> Any:
    for k in keys:
        try:
            v = v.get(k, MISSING) if isinstance(v, dict) else v[k]
        except (IndexError, TypeError, KeyError):
            raise TemplateError(f"index out of range: {k}") from None
    return v


def _slice(v: Any, *bounds: int) -> Any:
    if len(bounds) > 2:
        raise TemplateError("too many slice indexes")
    start = bounds[0] if bounds else 0
    end = bounds[1] if len(bounds) > 1 else _length(v)
    if not 0 <= start <= end <= _length(v):
        raise TemplateError(f"slice index out of range: {start}:{end}")
    return v[start:end]


def _printf(fmt: str, *args: Any) -> str:
    values = iter(args)

    def verb(m: re.Match[str]) -> str:
        if m.group(0) == "%%":
            return "%"
        v = next(values, MISSING)
        if m.group(1) == "q":
            return json.dumps(go_print(v))
        if m.group(1) == "d" and isinstance(v, (int, float)):
            return str(int(v))
        return go_print(v)

    return re.sub(r"%%|%[-+# 0-9.]*([vsdqtfg])", verb, fmt)


def _and(*args: Any) -> Any:
    for a in args:
        if not truth(a):
            return a
    return args[-1]


def _or(*args: Any) -> Any:
    for a in args:
        if truth(a):
            return a
    return args[-1]


FUNCTIONS: dict[str, Callable[..., Any]] = {
    "and": _and, "or": _or, "not": lambda v: not truth(v),
    "eq": _eq, "ne": lambda a, b: not _eq(a, b),
    "lt": _compare(lambda a, b: a < b), "le": _compare(lambda a, b: a <= b),
    "gt": _compare(lambda a, b: a > b), "ge": _compare(lambda a, b: a >= b),
    "len": _length, "index": _index, "slice": _slice,
    "print": lambda *a: "".join(go_print(v) for v in a),
    "println": lambda *a: " ".join(go_print(v) for v in a) + "\n",
    "printf": _printf, "html": lambda *a: html.escape("".join(go_print(v) for v in a)),
    "json": go_json,
    "currentDate": lambda: datetime.date.today().strftime("%Y-%m-%d"),
    "yesterdayDate": lambda: (datetime.date.today() - datetime.timedelta(days=1)).strftime("%Y-%m-%d"),
}


# -- execution -----------------------------------------------------------------------------

@dataclass
class _State:
    out: list[str]
    scopes: list[dict[str, Any]] = field(default_factory=list)
    size: int = 0  # characters written so far
    steps: int = 0  # range iterations so far
    deadline: float = 0.0  # time.monotonic() past which the render fails

    def write(self, text: str) -> None:
        # A request may bring its own template: one that loops or grows without end must fail
        # the request, not hold the runner.
        self.size += len(text)
        if self.size > MAX_OUTPUT_CHARS:
            raise TemplateError("template error: output exceeds the limit")
        self.out.append(text)

    def step(self) -> None:
        self.steps += 1
        if self.steps > MAX_RANGE_STEPS:
            raise TemplateError("template error: too many range iterations")
        self.check_time()

    def check_time(self) -> None:
        if time.monotonic() > self.deadline:
            raise TemplateError("template error: rendering took too long")

    def lookup(self, name: str) -> Any:
        for scope in reversed(self.scopes):
            if name in scope:
                return scope[name]
        raise TemplateError(f"undefined variable: ${name}")

    def assign(self, name: str, value: Any) -> None:
        for scope in reversed(self.scopes):
            if name in scope:
                scope[name] = value
                return
        raise TemplateError(f"undefined variable: ${name}")


class GoTemplate:
    def __init__(self, source: str) -> None:
        self.source = source
        self.root = parse_template(source)

    def uses(self, field_name: str) -> bool:
        """Whether `.Name` appears anywhere (Ollama checks for .Messages, .Tools, .Suffix)."""
        return re.search(rf"\.{field_name}\b", self.source) is not None

    def render(self, data: Any, *, cut_after: str = "") -> str:
        """With `cut_after`, the template ends right after the first action that prints that
        field (Ollama renders the last legacy turn up to .Response; the model writes the rest)."""
        nodes = cut_after_field(self.root, cut_after)[0] if cut_after else self.root
        state = _State(out=[], scopes=[{"": data}],
                       deadline=time.monotonic() + MAX_RENDER_SECONDS)
        try:
            self._run(nodes, data, state)
        except (_Break, _Continue):
            raise TemplateError("break or continue outside range") from None
        except RecursionError:
            raise TemplateError("template nesting too deep") from None
        return "".join(state.out)

    def _run(self, nodes: list[Node], dot: Any, st: _State) -> None:
        for node in nodes:
            if isinstance(node, TextNode):
                st.write(node.text)
            elif isinstance(node, Action):
                value = self._pipeline(node.pipe, dot, st)
                if not node.pipe.decl:
                    st.write(go_print(value))
            elif isinstance(node, Branch):
                self._branch(node, dot, st)
            elif isinstance(node, RangeNode):
                self._range(node, dot, st)
            elif node == "break":
                raise _Break()
            elif node == "continue":
                raise _Continue()

    def _scoped(self, nodes: list[Node], dot: Any, st: _State,
                bindings: dict[str, Any] | None = None) -> None:
        st.scopes.append(dict(bindings or {}))
        try:
            self._run(nodes, dot, st)
        finally:
            st.scopes.pop()

    def _branch(self, node: Branch, dot: Any, st: _State) -> None:
        st.scopes.append({})
        try:
            value = self._pipeline(node.pipe, dot, st)
            if truth(value):
                self._run(node.body, value if node.kind == "with" else dot, st)
            elif node.orelse:
                self._run(node.orelse, dot, st)
        finally:
            st.scopes.pop()

    def _range(self, node: RangeNode, dot: Any, st: _State) -> None:
        st.scopes.append({})
        try:
            value = self._pipeline(node.pipe, dot, st, declare=False)
            if isinstance(value, dict):
                items = [(k, value[k]) for k in sorted(value)]
            elif isinstance(value, (list, tuple, str)):
                items = list(enumerate(value))
            elif isinstance(value, int) and not isinstance(value, bool):
                items = [(i, i) for i in range(min(value, MAX_RANGE_STEPS + 1))]
            elif value is None or value is MISSING:
                items = []
            else:
                raise TemplateError(f"range can't iterate over {go_print(value)}")
            if not items:
                if node.orelse:
                    self._run(node.orelse, dot, st)
                return
            for key, elem in items:
                st.step()
                bindings: dict[str, Any] = {}
                if len(node.pipe.decl) == 1:
                    bindings[node.pipe.decl[0]] = elem
                elif len(node.pipe.decl) == 2:
                    bindings[node.pipe.decl[0]] = key
                    bindings[node.pipe.decl[1]] = elem
                try:
                    self._scoped(node.body, elem, st, bindings)
                except _Break:
                    break
                except _Continue:
                    continue
        finally:
            st.scopes.pop()

    def _pipeline(self, pipe: Pipeline, dot: Any, st: _State, declare: bool = True) -> Any:
        value: Any = MISSING
        for i, command in enumerate(pipe.commands):
            value = self._command(command, dot, st, value if i else None, piped=i > 0)
        if declare and pipe.decl:
            if pipe.assign:
                st.assign(pipe.decl[0], value)
            else:
                st.scopes[-1][pipe.decl[0]] = value
        return value

    def _command(self, cmd: Command, dot: Any, st: _State, piped_value: Any, piped: bool) -> Any:
        head = cmd.args[0]
        if head.kind == "ident":
            fn = FUNCTIONS.get(head.value)
            if fn is None:
                raise TemplateError(f'function "{head.value}" not defined')
            args = [self._operand(a, dot, st) for a in cmd.args[1:]]
            if piped:
                args.append(piped_value)
            st.check_time()
            try:
                result = fn(*args)
            except TemplateError:
                raise
            except (TypeError, ValueError, OverflowError) as e:
                raise TemplateError(f"wrong arguments for {head.value}: {e}") from None
            # A value is kept in a variable and printed again: printf doubling it in a range
            # must stop at the output limit, not at the machine's memory.
            if isinstance(result, str) and len(result) > MAX_OUTPUT_CHARS:
                raise TemplateError("template error: output exceeds the limit")
            return result
        if len(cmd.args) > 1 or piped:
            raise TemplateError(f"can't give argument to non-function {head.text}")
        return self._operand(head, dot, st)

    def _operand(self, op: Operand, dot: Any, st: _State) -> Any:
        if op.kind == "literal":
            value = op.value
        elif op.kind == "dot":
            value = dot
        elif op.kind == "var":
            value = st.lookup(op.value)
        elif op.kind == "pipe":
            value = self._pipeline(op.value, dot, st)
        elif op.kind == "ident":
            fn = FUNCTIONS.get(op.value)
            if fn is None:
                raise TemplateError(f'function "{op.value}" not defined')
            value = fn()
        else:
            raise TemplateError(f"unexpected operand {op.text}")
        for name in op.fields:
            value = field_of(value, name)
        return value

