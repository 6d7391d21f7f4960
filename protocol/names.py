"""Ollama model names: [host/][namespace/]model[:tag], with defaults and validation."""

from __future__ import annotations

import re

from msgspec import Struct

DEFAULT_HOST = "registry.ollama.ai"
DEFAULT_NAMESPACE = "library"
DEFAULT_TAG = "latest"

_PART = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]{0,79}\Z")
_NAMESPACE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_\-]{0,79}\Z")
_HOST = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-:]{0,349}\Z")


class InvalidName(ValueError):
    pass


class ModelName(Struct, frozen=True):
    host: str
    namespace: str
    model: str
    tag: str

    @property
    def display(self) -> str:
        """Ollama's shortest form: default host and namespace dropped, tag always kept."""
        if self.host == DEFAULT_HOST and self.namespace == DEFAULT_NAMESPACE:
            return f"{self.model}:{self.tag}"
        if self.host == DEFAULT_HOST:
            return f"{self.namespace}/{self.model}:{self.tag}"
        return f"{self.host}/{self.namespace}/{self.model}:{self.tag}"

    @property
    def full(self) -> str:
        return f"{self.host}/{self.namespace}/{self.model}:{self.tag}"

    def parts(self) -> tuple[str, str, str, str]:
        return self.host, self.namespace, self.model, self.tag


def parse_name(text: str) -> ModelName:
    s = text.strip()
    if "://" in s:
        s = s.split("://", 1)[1]
    tag = DEFAULT_TAG
    colon, slash = s.rfind(":"), s.rfind("/")
    if colon > slash:
        s, tag = s[:colon], s[colon + 1:]
    pieces = s.split("/")
    if len(pieces) > 3 or not s:
        raise InvalidName(text)
    model = pieces[-1]
    namespace = pieces[-2] if len(pieces) >= 2 else DEFAULT_NAMESPACE
    host = pieces[-3] if len(pieces) == 3 else DEFAULT_HOST
    if not (_PART.match(model) and _PART.match(tag) and _NAMESPACE.match(namespace)
            and _HOST.match(host)):
        raise InvalidName(text)
    return ModelName(host, namespace, model, tag)
