"""Lexer and parser for Go text/template source: text and {{ actions }} → a small node tree."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any, Union


class TemplateError(ValueError):
    pass


@dataclass
class Operand:
    kind: str  # literal | dot | var | pipe | ident
    value: Any = None
    fields: list[str] = field(default_factory=list)
    text: str = ""


@dataclass
class Command:
    args: list[Operand]


@dataclass
class Pipeline:
    commands: list[Command]
    decl: list[str] = field(default_factory=list)
    assign: bool = False  # `$x = …` changes an existing variable; `$x := …` declares one


@dataclass
class TextNode:
    text: str


@dataclass
class Action:
    pipe: Pipeline


@dataclass
class Branch:
    kind: str  # if | with
    pipe: Pipeline
    body: list[Node] = field(default_factory=list)
    orelse: list[Node] = field(default_factory=list)


@dataclass
class RangeNode:
    pipe: Pipeline
    body: list[Node] = field(default_factory=list)
    orelse: list[Node] = field(default_factory=list)


Node = Union[TextNode, Action, Branch, RangeNode, str]  # str: "break" | "continue"

_COMMENT = re.compile(r"\s*/\*.*?\*/\s*", re.S)
_TOKEN = re.compile(r"""
    (?P<ws>\s+)
  | (?P<string>"(?:[^"\\\n]|\\.)*")
  | (?P<raw>`[^`]*`)
  | (?P<char>'(?:[^'\\]|\\.)+')
  | (?P<number>[-+]?(?:0[xX][0-9a-fA-F]+|\d+(?:\.\d*)?(?:[eE][-+]?\d+)?|\.\d+(?:[eE][-+]?\d+)?))
  | (?P<declare>:=)
  | (?P<assign>=)
  | (?P<var>\$[A-Za-z0-9_]*)
  | (?P<field>(?:\.[A-Za-z_][A-Za-z0-9_]*)+)
  | (?P<dot>\.)
  | (?P<ident>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<punct>[()|,])
""", re.X)
_WS = " \t\r\n"
# A request may bring its own template: parsing it must take bounded work and stack. Go's
# numbers are 64-bit; blocks and parentheses nested deeper than this are no real template.
MAX_NESTING = 100
_MAX_NUMBER_CHARS = 64
_INT64 = 1 << 63


@dataclass
class _ActionMatch:
    """One {{ action }}: where it starts and ends, its body, and its trim markers."""

    start: int
    end: int
    body: str
    trim_left: bool
    trim_right: bool


def _actions(source: str):
    """The actions in order, found with str.find: linear in the source (a lazy regex scanned to
    the end from every unclosed `{{`). An action ends at the first `}}`, as before."""
    pos = 0
    while (start := source.find("{{", pos)) >= 0:
        body_start = start + 2
        trim_left = (source.startswith("-", body_start) and body_start + 1 < len(source)
                     and source[body_start + 1] in _WS)
        if trim_left:
            body_start += 2
        end = source.find("}}", body_start)
        if end < 0:
            return  # the text left holds `{{`: parse_template reports the unclosed action
        trim_right = end - 2 >= body_start and source[end - 2] in _WS and source[end - 1] == "-"
        body = source[body_start:end - 2 if trim_right else end]
        yield _ActionMatch(start, end + 2, body, trim_left, trim_right)
        pos = end + 2


@dataclass
class _Tok:
    kind: str
    text: str


def _tokens(body: str) -> list[_Tok]:
    out: list[_Tok] = []
    pos = 0
    while pos < len(body):
        m = _TOKEN.match(body, pos)
        if m is None:
            raise TemplateError(f"template error: unexpected {body[pos]!r} in action")
        pos = m.end()
        kind = m.lastgroup or ""
        if kind != "ws":
            out.append(_Tok(kind, m.group()))
    return out


def _literal(tok: _Tok) -> Any:
    if tok.kind == "string":
        try:
            return json.loads(tok.text)
        except json.JSONDecodeError:
            raise TemplateError(f"template error: bad string {tok.text}") from None
    if tok.kind == "raw":
        return tok.text[1:-1]
    if tok.kind == "char":
        try:
            char = json.loads('"' + tok.text[1:-1] + '"')
        except json.JSONDecodeError:
            char = ""
        if len(char) != 1:
            raise TemplateError(f"template error: malformed character constant: {tok.text}")
        return ord(char)
    text = tok.text
    if len(text) > _MAX_NUMBER_CHARS:
        raise TemplateError(f"template error: illegal number syntax: {text[:20]}…")
    if text.lower().startswith(("0x", "-0x", "+0x")):
        number: int | float = int(text, 16)
    elif re.fullmatch(r"[-+]?\d+", text):
        number = int(text)
    else:
        number = float(text)
    if isinstance(number, int) and not -_INT64 <= number < _INT64:
        number = float(number)  # Go keeps an integer constant past int64 as a float
    if number in (float("inf"), float("-inf")):
        raise TemplateError(f"template error: illegal number syntax: {text}")
    return number


class _ActionParser:
    def __init__(self, toks: list[_Tok]) -> None:
        self.toks = toks
        self.i = 0
        self.depth = 0  # open parentheses

    def peek(self) -> _Tok | None:
        return self.toks[self.i] if self.i < len(self.toks) else None

    def take(self) -> _Tok:
        tok = self.peek()
        if tok is None:
            raise TemplateError("template error: unexpected end of action")
        self.i += 1
        return tok

    def pipeline(self, allow_two: bool = False) -> Pipeline:
        decl: list[str] = []
        assign = False
        # $x := …, $x = …, and (range) $i, $e := …
        j = self.i
        names: list[str] = []
        while j < len(self.toks) and self.toks[j].kind == "var" and "." not in self.toks[j].text:
            names.append(self.toks[j].text[1:])
            j += 1
            if j < len(self.toks) and self.toks[j].text == "," and allow_two and len(names) == 1:
                j += 1
                continue
            break
        if names and j < len(self.toks) and self.toks[j].kind in ("declare", "assign"):
            decl, assign = names, self.toks[j].kind == "assign"
            self.i = j + 1
        commands = [self.command()]
        while (tok := self.peek()) is not None and tok.text == "|":
            self.take()
            commands.append(self.command())
        return Pipeline(commands, decl, assign)

    def command(self) -> Command:
        args: list[Operand] = []
        while (tok := self.peek()) is not None and tok.text not in ("|", ")"):
            args.append(self.operand())
        if not args:
            raise TemplateError("template error: missing value for command")
        return Command(args)

    def operand(self) -> Operand:
        tok = self.take()
        if tok.kind in ("string", "raw", "char", "number"):
            op = Operand("literal", _literal(tok), text=tok.text)
        elif tok.kind == "ident":
            if tok.text in ("true", "false"):
                op = Operand("literal", tok.text == "true", text=tok.text)
            elif tok.text == "nil":
                op = Operand("literal", None, text=tok.text)
            else:
                op = Operand("ident", tok.text, text=tok.text)
        elif tok.kind == "dot":
            op = Operand("dot", text=".")
        elif tok.kind == "field":
            op = Operand("dot", fields=tok.text.split(".")[1:], text=tok.text)
        elif tok.kind == "var":
            name, *chain = tok.text[1:].split(".")
            op = Operand("var", name, text=tok.text)
            op.fields = chain
        elif tok.text == "(":
            self.depth += 1
            if self.depth > MAX_NESTING:
                raise TemplateError("template error: parentheses nested too deeply")
            inner = self.pipeline()
            self.depth -= 1
            if self.take().text != ")":
                raise TemplateError("template error: unclosed left paren")
            op = Operand("pipe", inner, text="(…)")
        else:
            raise TemplateError(f"template error: unexpected {tok.text!r} in operand")
        nxt = self.peek()
        if nxt is not None and nxt.kind == "field" and op.kind in ("pipe", "var"):
            self.take()
            op.fields += nxt.text.split(".")[1:]
        return op

    def done(self) -> None:
        if self.peek() is not None:
            raise TemplateError(f"template error: unexpected {self.peek().text!r} in action")  # type: ignore[union-attr]


def parse_template(source: str) -> list[Node]:
    root: list[Node] = []
    # Each open block: (node, the list being filled, closing keyword count for `else if` chains)
    stack: list[tuple[Branch | RangeNode, list[Node], int]] = []
    current = root
    pos = 0
    trim_next = False
    for m in _actions(source):
        text = source[pos:m.start]
        if trim_next:
            text = text.lstrip(_WS)
        if m.trim_left:
            text = text.rstrip(_WS)
        if text:
            current.append(TextNode(text))
        pos = m.end
        trim_next = m.trim_right
        body = m.body
        if _COMMENT.fullmatch(body):
            continue
        parser = _ActionParser(_tokens(body))
        head = parser.peek()
        keyword = head.text if head is not None and head.kind == "ident" else ""
        if keyword in ("if", "with", "range"):
            parser.take()
            pipe = parser.pipeline(allow_two=keyword == "range")
            parser.done()
            block: Branch | RangeNode = (RangeNode(pipe) if keyword == "range"
                                         else Branch(keyword, pipe))
            current.append(block)
            if len(stack) >= MAX_NESTING:
                raise TemplateError("template error: blocks nested too deeply")
            stack.append((block, current, 0))
            current = block.body
        elif keyword == "else":
            parser.take()
            if not stack:
                raise TemplateError("template error: unexpected {{else}}")
            block, parent, depth = stack[-1]
            if current is block.orelse:
                raise TemplateError("template error: {{else}} after {{else}}")
            nxt = parser.peek()
            if nxt is not None and nxt.text in ("if", "with") and isinstance(block, Branch):
                parser.take()
                pipe = parser.pipeline()
                parser.done()
                # `else if` is an if nested in the else list, closed by the same {{end}}
                inner = Branch(nxt.text, pipe)
                block.orelse.append(inner)
                stack[-1] = (block, parent, depth)
                if len(stack) >= MAX_NESTING:
                    raise TemplateError("template error: blocks nested too deeply")
                stack.append((inner, block.orelse, depth + 1))
                current = inner.body
            else:
                parser.done()
                current = block.orelse
        elif keyword == "end":
            parser.take()
            parser.done()
            if not stack:
                raise TemplateError("template error: unexpected {{end}}")
            while True:
                block, parent, depth = stack.pop()
                if depth == 0:
                    break
            current = parent
        elif keyword in ("break", "continue"):
            parser.take()
            parser.done()
            if not any(isinstance(b, RangeNode) for b, _, _ in stack):
                raise TemplateError(f"template error: {{{{{keyword}}}}} outside {{{{range}}}}")
            current.append(keyword)
        elif keyword in ("define", "template", "block"):
            raise TemplateError(f"template error: {{{{{keyword}}}}} is not supported")
        else:
            pipe = parser.pipeline()
            parser.done()
            current.append(Action(pipe))
    text = source[pos:]
    if "{{" in text:
        raise TemplateError("template error: unclosed action")
    if trim_next:
        text = text.lstrip(_WS)
    if text:
        current.append(TextNode(text))
    if stack:
        raise TemplateError("template error: unexpected EOF (missing {{end}})")
    return root


def cut_after_field(nodes: list[Node], name: str) -> tuple[list[Node], bool]:
    """Ollama's legacy-template trick, on the tree: keep everything up to and including the
    first action that prints `.name` (in document order, branches included), drop the rest."""
    out: list[Node] = []
    for node in nodes:
        if isinstance(node, Action):
            out.append(node)
            if any(name in arg.fields for cmd in node.pipe.commands for arg in cmd.args):
                return out, True
        elif isinstance(node, (Branch, RangeNode)):
            body, cut = cut_after_field(node.body, name)
            orelse: list[Node] = []
            if not cut:
                orelse, cut = cut_after_field(node.orelse, name)
            else:
                orelse = []
            copy = (Branch(node.kind, node.pipe, body, orelse) if isinstance(node, Branch)
                    else RangeNode(node.pipe, body, orelse))
            out.append(copy)
            if cut:
                return out, True
        else:
            out.append(node)
    return out, False
