"""Ollama's Modelfile: parse it (old-style /api/create), render it (/api/show), validate params.

Parsing follows Ollama's parser/parser.go closely enough that Modelfiles written for Ollama parse
the same way here; the one extension is backslash escapes (\\" and \\\\) inside "..." values, which
lets the renderer quote any string so that render → parse is lossless.
"""

from __future__ import annotations

import math
import re
from typing import Any

import msgspec
from msgspec import Struct

from herd.protocol.api import OPTION_TYPE_NAMES, Message, Options

# Removed from Ollama in 2025; old Modelfiles and clients still send them, so they must not fail.
LEGACY_PARAMETERS = frozenset({
    "mirostat", "mirostat_tau", "mirostat_eta", "tfs_z", "penalize_newline", "numa", "low_vram",
    "f16_kv", "logits_all", "vocab_only", "use_mlock",
})

INSTRUCTIONS = ("FROM", "PARAMETER", "TEMPLATE", "SYSTEM", "ADAPTER", "LICENSE", "MESSAGE",
                "REQUIRES", "DRAFT")
MESSAGE_ROLES = ("system", "user", "assistant")

# Go's strconv.ParseBool, which Ollama uses for PARAMETER booleans.
_GO_TRUE = frozenset({"1", "t", "T", "TRUE", "true", "True"})
_GO_FALSE = frozenset({"0", "f", "F", "FALSE", "false", "False"})

_INT_TEXT = re.compile(r"[+-]?\d+")
# Plain decimal notation only: Python's float() would also take "1_0", "inf" and "nan".
_FLOAT_TEXT = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
_TOKEN = re.compile(r"[^ \t\n]+")
_PARAM_NAME = re.compile(r"[A-Za-z0-9_]+")
_WS = re.compile(r"[ \t]+")
# Like Ollama, a heredoc ends only at """ that closes its line, so """ mid-line is content.
_HEREDOC_END = re.compile(r'"""[ \t]*(?:\n|$)')
_QUOTE_END = re.compile(r"[ \t]*(?:\n|$)")
_SEMVER = re.compile(r"\d+(?:\.\d+){0,2}(?:-[0-9A-Za-z.-]+)?(?:\+[0-9A-Za-z.-]+)?")



class ModelfileError(ValueError):
    """Carries the line so callers can show Ollama's "(line N): ..." text or the bare message."""

    def __init__(self, msg: str, line: int | None = None) -> None:
        super().__init__(f"(line {line}): {msg}" if line else msg)
        self.msg = msg
        self.line = line


class Modelfile(Struct):
    from_: str = msgspec.field(name="from")
    parameters: Options = msgspec.field(default_factory=Options)
    template: str | None = None
    system: str | None = None
    adapters: list[str] = msgspec.field(default_factory=list)
    licenses: list[str] = msgspec.field(default_factory=list)
    messages: list[Message] = msgspec.field(default_factory=list)
    requires: str | None = None
    more_from: list[str] = msgspec.field(default_factory=list)  # later FROMs: a projector
    draft: str | None = None  # a draft model for speculative decoding: a path, blob or model


# ---------------------------------------------------------------------------------------------
# Parameter typing, shared by PARAMETER lines and /api/create's JSON "parameters".

def option_kind(name: str) -> str:
    return OPTION_TYPE_NAMES.get(name, "integer")


def _check_known(name: str, line: int | None) -> bool:
    """False for legacy names (to be dropped); raises for names Options does not have."""
    if name in LEGACY_PARAMETERS:
        return False
    if name not in Options.__struct_fields__:
        raise ModelfileError(f"unknown parameter '{name}'", line)
    return True


def _parse_parameter_text(name: str, text: str, line: int) -> Any:
    kind = option_kind(name)
    if kind == "array of strings":
        return text
    if kind == "boolean":
        if text in _GO_TRUE:
            return True
        if text in _GO_FALSE:
            return False
        raise ModelfileError(f"invalid bool value '{text}' for parameter '{name}'", line)
    if kind == "float":
        value = float(text) if _FLOAT_TEXT.fullmatch(text) else math.nan
        if not math.isfinite(value):
            raise ModelfileError(f"invalid float value '{text}' for parameter '{name}'", line)
        return value
    if not _INT_TEXT.fullmatch(text):
        raise ModelfileError(f"invalid int value '{text}' for parameter '{name}'", line)
    return int(text)


def _coerce_json(name: str, value: object) -> Any:
    kind = option_kind(name)
    if kind == "array of strings":
        if isinstance(value, list) and all(isinstance(item, str) for item in value):
            return list(value)
        if isinstance(value, str):
            return [value]
        raise ModelfileError(f"invalid value {_show(value)} for parameter '{name}': "
                             "expected a string or an array of strings")
    if kind == "boolean":
        if isinstance(value, bool):
            return value
        raise ModelfileError(f"invalid bool value {_show(value)} for parameter '{name}'")
    # bool is an int subclass in Python but never a number in JSON.
    number = not isinstance(value, bool) and isinstance(value, int | float)
    if kind == "float":
        if number and math.isfinite(value):  # type: ignore[arg-type]
            return float(value)  # type: ignore[arg-type]
        raise ModelfileError(f"invalid float value {_show(value)} for parameter '{name}'")
    if number and (isinstance(value, int) or float(value).is_integer()):  # type: ignore[arg-type]
        return int(value)  # type: ignore[call-overload]
    raise ModelfileError(f"invalid int value {_show(value)} for parameter '{name}'")


def _show(value: object) -> str:
    try:
        return msgspec.json.encode(value).decode()
    except (TypeError, ValueError, OverflowError):
        return repr(value)


def options_from_mapping(values: dict[str, object]) -> Options:
    """Validate /api/create's "parameters" object; legacy keys are dropped, null means unset."""
    fields: dict[str, Any] = {}
    for name, value in values.items():
        if not _check_known(name, None) or value is None:
            continue
        fields[name] = _coerce_json(name, value)
    return Options(**fields)


# ---------------------------------------------------------------------------------------------
# Parsing.

def _read_value(text: str, pos: int, line: int, what: str) -> tuple[str, int]:
    """Read the value starting at pos; return it and the offset just past its line."""
    if text.startswith('"""', pos):
        end = _HEREDOC_END.search(text, pos + 3)
        if end is None:
            raise ModelfileError(f'unterminated """ value for {what}', line)
        return text[pos + 3:end.start()], end.end()
    if text.startswith('"', pos):
        return _read_quoted(text, pos + 1, line, what)
    eol = text.find("\n", pos)
    eol = len(text) if eol < 0 else eol
    return text[pos:eol].rstrip(" \t"), eol + 1


def _read_quoted(text: str, pos: int, line: int, what: str) -> tuple[str, int]:
    # As in Ollama, only a quote that ends its line closes the value; inner quotes stay literal.
    out: list[str] = []
    i = pos
    while i < len(text):
        char = text[i]
        if char == "\\" and i + 1 < len(text) and text[i + 1] in '"\\':
            out.append(text[i + 1])
            i += 2
            continue
        if char == '"':
            closing = _QUOTE_END.match(text, i + 1)
            if closing is not None:
                return "".join(out), closing.end()
        out.append(char)
        i += 1
    raise ModelfileError(f'unterminated " value for {what}', line)


def _take_token(text: str, pos: int) -> tuple[str, int]:
    """The run of non-blank characters at pos, and the offset past the blanks after it."""
    token = _TOKEN.match(text, pos)
    word = token.group() if token else ""
    gap = _WS.match(text, pos + len(word))
    return word, gap.end() if gap else pos + len(word)


def parse_modelfile(text: str) -> Modelfile:
    """Parse Modelfile text; ModelfileError's message carries the offending line number."""
    text = text.removeprefix("\ufeff").replace("\r\n", "\n").replace("\r", "\n")
    from_: str | None = None
    params: dict[str, Any] = {}
    result = Modelfile(from_="")
    pos, line = 0, 1
    while pos < len(text):
        start_line, line_start = line, pos
        eol = text.find("\n", pos)
        eol = len(text) if eol < 0 else eol
        stripped = text[pos:eol].strip()
        if not stripped or stripped.startswith("#"):
            pos, line = eol + 1, line + 1
            continue
        pos += len(text[pos:eol]) - len(text[pos:eol].lstrip())
        name, pos = _take_token(text, pos)
        instruction = name.upper()
        if instruction not in INSTRUCTIONS:
            raise ModelfileError(f"unknown instruction '{name}': must be one of "
                                 f"{', '.join(INSTRUCTIONS[:-1])} or {INSTRUCTIONS[-1]}", line)

        key = ""
        if instruction == "PARAMETER":
            key, pos = _take_token(text, pos)
            if not key:
                raise ModelfileError("missing parameter name after PARAMETER", line)
            if not _PARAM_NAME.fullmatch(key):
                raise ModelfileError(f"invalid parameter name '{key}'", line)
        elif instruction == "MESSAGE":
            key, pos = _take_token(text, pos)
            if not key:
                raise ModelfileError("missing message role after MESSAGE", line)
            if key not in MESSAGE_ROLES:
                raise ModelfileError(f"invalid message role '{key}': must be one of "
                                     f'"system", "user" or "assistant"', line)
        what = f"parameter '{key}'" if instruction == "PARAMETER" else instruction
        if pos >= len(text) or text[pos] == "\n":
            raise ModelfileError(f"missing value for {what}", line)
        value, pos = _read_value(text, pos, line, what)
        line = start_line + text.count("\n", line_start, pos)

        if instruction == "FROM":
            if from_ is not None:
                result.more_from.append(value)
            from_ = value if from_ is None else from_
        _apply(result, params, instruction, key, value, start_line)
    if from_ is None:
        raise ModelfileError("no FROM line")
    result.from_ = from_
    result.parameters = Options(**params)
    return result


def _apply(result: Modelfile, params: dict[str, Any], instruction: str, key: str, value: str,
           line: int) -> None:
    if instruction in ("FROM", "ADAPTER", "REQUIRES", "DRAFT") and not value:
        raise ModelfileError(f"missing value for {instruction}", line)
    if instruction == "PARAMETER":
        if _check_known(key, line):
            typed = _parse_parameter_text(key, value, line)
            if option_kind(key) == "array of strings":
                params.setdefault(key, []).append(typed)
            else:
                params[key] = typed
    elif instruction == "MESSAGE":
        result.messages.append(Message(role=key, content=value))
    elif instruction == "TEMPLATE":
        result.template = value
    elif instruction == "SYSTEM":
        result.system = value
    elif instruction == "ADAPTER":
        result.adapters.append(value)
    elif instruction == "LICENSE":
        result.licenses.append(value)
    elif instruction == "REQUIRES":
        result.requires = _check_semver(value, line)
    elif instruction == "DRAFT":
        if result.draft is not None:
            raise ModelfileError("only one DRAFT model is supported", line)
        result.draft = value


def _check_semver(value: str, line: int) -> str:
    # Stored without the "v", as Ollama does after validating with golang.org/x/mod/semver.
    bare = value.removeprefix("v")
    if not _SEMVER.fullmatch(bare):
        raise ModelfileError(f"requires must be a valid semver (e.g. 0.14.0), got '{value}'", line)
    return bare
