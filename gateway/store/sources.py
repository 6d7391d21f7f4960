"""What a create request may name as a source: blobs of the store and models, never a file
on the server's disk (a path gets one answer whether or not it exists: no oracle)."""

from __future__ import annotations

import re

from herd.gateway.errors import BadRequest
from herd.gateway.store.blobs import parse_digest
from herd.gateway.store.gguf_meta import GGUF_MAGIC

_DRIVE = re.compile(r"^[A-Za-z]:[\\/]")
NO_SERVER_PATHS = ("the modelfile form names blobs (sha256:<hex>, uploaded with POST /api/blobs) "
                   "or models, never files on the server: send 'files', 'adapters' and "
                   "'draft_files' instead")


def blob_reference(text: str) -> str | None:
    """`sha256:<hex>`, `sha256-<hex>` or `@sha256:<hex>`: a blob of the store."""
    try:
        return f"sha256:{parse_digest(text.strip().removeprefix('@'))}"
    except BadRequest:
        return None


def looks_like_path(text: str) -> bool:
    text = text.strip()
    return (text.startswith(("/", ".", "~")) or "\\" in text or _DRIVE.match(text) is not None
            or text.lower().endswith((".gguf", ".bin", ".safetensors")))


def is_gguf(path: str) -> bool:
    with open(path, "rb") as f:
        return f.read(4) == GGUF_MAGIC

