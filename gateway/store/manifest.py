"""Ollama's manifest and config blob formats (OCI image manifest v2 with Ollama media types)."""

from __future__ import annotations

import msgspec
from msgspec import Struct

MANIFEST_MEDIA_TYPE = "application/vnd.docker.distribution.manifest.v2+json"
CONFIG_MEDIA_TYPE = "application/vnd.docker.container.image.v1+json"
MODEL_MEDIA_TYPE = "application/vnd.ollama.image.model"
TEMPLATE_MEDIA_TYPE = "application/vnd.ollama.image.template"
SYSTEM_MEDIA_TYPE = "application/vnd.ollama.image.system"
PARAMS_MEDIA_TYPE = "application/vnd.ollama.image.params"
MESSAGES_MEDIA_TYPE = "application/vnd.ollama.image.messages"
LICENSE_MEDIA_TYPE = "application/vnd.ollama.image.license"
ADAPTER_MEDIA_TYPE = "application/vnd.ollama.image.adapter"
PROJECTOR_MEDIA_TYPE = "application/vnd.ollama.image.projector"
DRAFT_MEDIA_TYPE = "application/vnd.ollama.image.draft"  # a speculative decoding draft model


class Layer(Struct, omit_defaults=True):
    mediaType: str
    digest: str
    size: int
    from_: str | None = msgspec.field(default=None, name="from")


class Manifest(Struct, kw_only=True):
    schemaVersion: int = 2
    mediaType: str = MANIFEST_MEDIA_TYPE
    config: Layer
    layers: list[Layer]

    def layer(self, media_type: str) -> Layer | None:
        return next((layer for layer in self.layers if layer.mediaType == media_type), None)


class ModelConfig(Struct):
    model_format: str = "gguf"
    model_family: str = ""
    model_families: list[str] | None = None
    model_type: str = ""
    file_type: str = ""
    architecture: str = "amd64"
    os: str = "linux"
