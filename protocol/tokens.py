"""POST /api/tokenize and /api/detokenize (ollama#3582): the model's own vocabulary, exactly."""

from __future__ import annotations

from msgspec import Struct

from herd.protocol.api import KeepAlive, Options


class TokenizeRequest(Struct, omit_defaults=True):
    model: str = ""
    content: str | None = None
    options: Options | None = None
    keep_alive: KeepAlive = None


class TokenizeResponse(Struct):
    model: str
    tokens: list[int]


class DetokenizeRequest(Struct, omit_defaults=True):
    model: str = ""
    tokens: list[int] | None = None
    options: Options | None = None
    keep_alive: KeepAlive = None


class DetokenizeResponse(Struct):
    model: str
    content: str
