"""`format` → GBNF, bounded before llama.cpp sees it.

llama.cpp's grammar parser recurses once per nested group, in C: the schema converter writes
`maxLength: n` (and maxItems, and `{m,n}` in a pattern) as n nested optional groups, so a schema
with a large count overflows the runner's C stack, which no `except` catches. The runner also
compiles the grammar in its main loop. Hence limits on the schema (size, nesting, counts) and on
the grammar (size, group nesting), each a 400 naming what is too large.
"""

from __future__ import annotations

import json
import re
from typing import Any

from llama_cpp.llama_grammar import JSON_GBNF, json_schema_to_gbnf

MAX_SCHEMA_CHARS = 64 << 10
MAX_SCHEMA_DEPTH = 32
MAX_REPEAT = 500  # minLength, maxItems, a pattern's {m,n}: nested groups in the grammar
MAX_PATTERN_CHARS = 4096
MAX_GRAMMAR_CHARS = 1 << 20
# llama.cpp refuses (NULL) a little past 1,000 nested groups and overflows its stack well past
MAX_GRAMMAR_NESTING = 900

_COUNTS = ("minLength", "maxLength", "minItems", "maxItems", "minProperties", "maxProperties",
           "minContains", "maxContains")
_QUANTIFIER = re.compile(r"\{\s*(\d*)\s*(?:,\s*(\d*)\s*)?\}")


class InvalidFormat(ValueError):
    pass


def format_grammar(format_text: str) -> str:
    """Ollama's `format`: "json" (any JSON value) or a JSON schema → GBNF."""
    if format_text == "json":
        return JSON_GBNF
    if len(format_text) > MAX_SCHEMA_CHARS:
        raise InvalidFormat(
            f"invalid format: the JSON schema is larger than {MAX_SCHEMA_CHARS} bytes")
    try:
        schema = json.loads(format_text)
    except (ValueError, RecursionError) as e:
        raise InvalidFormat(f"invalid JSON schema in format: {e}") from e
    check_schema(schema)
    try:
        grammar = json_schema_to_gbnf(format_text)
    except Exception as e:  # the converter raises assorted errors on schemas it cannot handle
        raise InvalidFormat(f"invalid JSON schema in format: {e}") from e
    check_grammar(grammar)
    return grammar


def check_schema(schema: Any) -> None:
    """Walks the schema without recursion (its depth is what is being checked)."""
    todo: list[tuple[Any, int]] = [(schema, 1)]
    while todo:
        node, depth = todo.pop()
        if depth > MAX_SCHEMA_DEPTH:
            raise InvalidFormat(f"invalid format: the JSON schema is nested deeper than "
                                f"{MAX_SCHEMA_DEPTH} levels")
        if isinstance(node, list):
            todo.extend((item, depth + 1) for item in node)
            continue
        if not isinstance(node, dict):
            continue
        for key in _COUNTS:
            value = node.get(key)
            if isinstance(value, (int, float)) and not isinstance(value, bool) and (
                    not 0 <= value <= MAX_REPEAT):
                raise InvalidFormat(f"invalid format: {key} must be between 0 and {MAX_REPEAT}")
        ref = node.get("$ref")
        if isinstance(ref, str) and not ref.startswith("#"):
            raise InvalidFormat("invalid format: only local $ref (\"#/...\") is supported")
        pattern = node.get("pattern")
        if isinstance(pattern, str):
            check_pattern(pattern)
        todo.extend((value, depth + 1) for value in node.values())


def check_pattern(pattern: str) -> None:
    """A pattern's repetitions multiply when nested (`(a{0,9}){0,9}`): the converter writes
    their product as nested groups. Refuse a product over MAX_REPEAT, in one linear pass."""
    if len(pattern) > MAX_PATTERN_CHARS:
        raise InvalidFormat(f"invalid format: pattern longer than {MAX_PATTERN_CHARS} characters")
    stack = [1]  # the largest repeat product inside each open group
    last = 1  # the weight of the atom a quantifier would apply to
    i, n = 0, len(pattern)
    while i < n:
        c = pattern[i]
        if c == "\\":
            i, last = i + 2, 1
            continue
        if c == "[":
            i = _class_end(pattern, i)
            last = 1
            continue
        if c == "(":
            stack.append(1)
            last = 1
        elif c == ")" and len(stack) > 1:
            last = stack.pop()
            stack[-1] = max(stack[-1], last)
        elif c == "{" and (m := _QUANTIFIER.match(pattern, i)):
            counts = [int(g) for g in m.groups() if g]
            repeat = max(counts, default=1)
            if repeat > MAX_REPEAT or last * repeat > MAX_REPEAT:
                raise InvalidFormat(f"invalid format: pattern repeats more than {MAX_REPEAT} times")
            stack[-1] = max(stack[-1], last * repeat)
            i = m.end()
            continue
        else:
            last = 1
        i += 1


def _class_end(pattern: str, i: int) -> int:
    j = i + 1
    while j < len(pattern) and pattern[j] != "]":
        j += 2 if pattern[j] == "\\" else 1
    return j + 1


def check_grammar(grammar: str) -> None:
    """The converter's output, before llama.cpp parses it: its size and how deep its groups
    nest (outside quoted literals and character classes)."""
    if len(grammar) > MAX_GRAMMAR_CHARS:
        raise InvalidFormat("invalid format: the JSON schema makes too large a grammar")
    depth = deepest = 0
    i, n = 0, len(grammar)
    while i < n:
        c = grammar[i]
        if c in "\"[":
            close = "\"" if c == "\"" else "]"
            i += 1
            while i < n and grammar[i] != close:
                i += 2 if grammar[i] == "\\" else 1
        elif c == "#":
            while i < n and grammar[i] != "\n":
                i += 1
        elif c == "(":
            depth += 1
            deepest = max(deepest, depth)
        elif c == ")":
            depth -= 1
        i += 1
    if deepest > MAX_GRAMMAR_NESTING:
        raise InvalidFormat("invalid format: the JSON schema makes too deeply nested a grammar")
