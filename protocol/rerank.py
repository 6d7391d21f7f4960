"""POST /api/rerank and /v1/rerank (ollama#3368), in the shape llama.cpp's server and Jina's
API answer: results sorted by relevance, each with the document's index in the request."""

from __future__ import annotations

from typing import Any

from msgspec import Struct

from herd.protocol.api import KeepAlive, Options


class RerankRequest(Struct, omit_defaults=True):
    model: str = ""
    query: str | None = None
    documents: Any = None  # list[str]; checked by hand for a clear 400
    top_n: int | None = None  # absent, null or ≤ 0: every document
    return_documents: bool | None = None
    truncate: bool | None = None
    options: Options | None = None
    keep_alive: KeepAlive = None


class RerankDocument(Struct):
    text: str


class RerankResult(Struct, omit_defaults=True):
    index: int
    relevance_score: float
    document: RerankDocument | None = None


class RerankUsage(Struct):
    prompt_tokens: int
    total_tokens: int


class RerankResponse(Struct):
    model: str
    results: list[RerankResult]
    usage: RerankUsage
