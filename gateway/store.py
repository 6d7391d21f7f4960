"""The model store: Ollama's on-disk layout under OLLAMA_MODELS.

manifests/<host>/<namespace>/<model>/<tag> and blobs/sha256-<hex>. Every write goes to a temp
file in the same folder, is fsynced and renamed into place, so a crash never leaves a
half-written manifest or blob under its final name; every blob is checked against its digest.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import shutil
import tempfile
import threading
from collections.abc import AsyncIterator, Callable
from datetime import datetime
from typing import Any

import msgspec
from msgspec import Struct

from gateway.errors import BadRequest, ModelNotFound, NotFound
from gateway.gguf_meta import GGUFSummary, NotGGUF, format_parameter_size, read_summary
from gateway.manifest import (ADAPTER_MEDIA_TYPE, CONFIG_MEDIA_TYPE, LICENSE_MEDIA_TYPE,
                              MESSAGES_MEDIA_TYPE, MODEL_MEDIA_TYPE, PARAMS_MEDIA_TYPE,
                              PROJECTOR_MEDIA_TYPE, SYSTEM_MEDIA_TYPE, TEMPLATE_MEDIA_TYPE, Layer,
                              Manifest, ModelConfig)
from gateway.names import InvalidName, ModelName, parse_name
from protocol.api import ListedModel, Message, ModelDetails, Options
from protocol.chat_templates import is_go_template

_DIGEST = re.compile(r"^sha256[:-]([0-9a-fA-F]{64})$")
_CHUNK = 1 << 20


class InvalidDigest(BadRequest):
    def __init__(self) -> None:
        super().__init__("invalid digest format")


class ModelEntry(Struct):
    """A resolved model: everything the scheduler and the routes need."""

    name: ModelName
    manifest: Manifest
    manifest_digest: str
    config: ModelConfig
    model_path: str
    model_digest: str
    params: Options | None
    template: str | None
    system: str | None
    modified_at: float
    size: int
    context_length: int  # trained context from the GGUF; 0 when unknown
    capabilities: list[str]
    gguf_template: str  # the GGUF's own Jinja chat template, "" when it has none
    licenses: list[str]
    messages: list[Message]
    adapters: list[str]  # blob paths of LoRA adapters

    @property
    def details(self) -> ModelDetails:
        return ModelDetails(format=self.config.model_format, family=self.config.model_family,
                            families=self.config.model_families,
                            parameter_size=self.config.model_type,
                            quantization_level=self.config.file_type)


def format_time(ts: float) -> str:
    """RFC 3339 with nanoseconds and the local offset, like Go's time.Time."""
    dt = datetime.fromtimestamp(ts).astimezone()
    frac = f"{int(round((ts % 1) * 1e9)) % 1_000_000_000:09d}"
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + frac + dt.strftime("%z")[:3] + ":" + dt.strftime("%z")[3:]


def parse_digest(digest: str) -> str:
    """'sha256:<hex>' or 'sha256-<hex>' → lower-case hex; anything else is a 400."""
    m = _DIGEST.match(digest)
    if m is None:
        raise InvalidDigest()
    return m.group(1).lower()


def model_name_or_400(text: str) -> ModelName:
    try:
        return parse_name(text)
    except InvalidName:
        raise BadRequest("invalid model name") from None


def derive_capabilities(summary: GGUFSummary | None, template: str | None,
                        manifest: Manifest) -> list[str]:
    """What the model can do, from its weights and template, never guessed from its name."""
    text = (template or "") + (summary.chat_template if summary else "")
    caps = ["embedding"] if summary is not None and summary.pooling else ["completion"]
    if "tools" in text or "tool_call" in text or ".Tools" in text:
        caps.append("tools")
    # Fill-in-the-middle needs a Go template that places .Suffix; Jinja templates have no slot.
    if template and ".Suffix" in template and is_go_template(template):
        caps.append("insert")
    if manifest.layer(PROJECTOR_MEDIA_TYPE) is not None or (summary is not None and summary.vision):
        caps.append("vision")
    if "<think>" in text or ".Think" in text or "enable_thinking" in text:
        caps.append("thinking")
    return caps


def _digests(manifest: Manifest) -> set[str]:
    return {manifest.config.digest, *(layer.digest for layer in manifest.layers)}


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _atomic_write(path: str, data: bytes) -> None:
    folder = os.path.dirname(path)
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_dir(folder)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


class ModelStore:
    def __init__(self, root: str) -> None:
        self.root = root
        self.blobs_dir = os.path.join(root, "blobs")
        self.manifests_dir = os.path.join(root, "manifests")
        os.makedirs(self.blobs_dir, exist_ok=True)
        os.makedirs(self.manifests_dir, exist_ok=True)
        self._entries: dict[tuple[str, float], ModelEntry] = {}
        # Manifest writes and deletes run in worker threads: reference counting must not race.
        self._lock = threading.RLock()

    # -- blobs -----------------------------------------------------------------------------

    def blob_path(self, digest: str) -> str:
        return os.path.join(self.blobs_dir, f"sha256-{parse_digest(digest)}")

    def has_blob(self, digest: str) -> bool:
        return os.path.isfile(self.blob_path(digest))

    def partial_path(self, digest: str) -> str:
        """Where a download in progress lives (Ollama's name), kept across restarts to resume;
        never a blob's name, so nothing reads it before it is verified and committed."""
        return self.blob_path(digest) + "-partial"

    def commit_blob(self, path: str, digest: str) -> None:
        """Gives a fully written, already verified file in blobs/ its digest name."""
        os.replace(path, self.blob_path(digest))
        _fsync_dir(self.blobs_dir)

    async def write_blob(self, digest: str, chunks: AsyncIterator[bytes]) -> None:
        """Streams a blob to a temp file while hashing; only a verified blob gets its name."""
        final = self.blob_path(digest)
        expected = parse_digest(digest)
        fd, tmp = tempfile.mkstemp(dir=self.blobs_dir, prefix=".tmp-")
        hasher = hashlib.sha256()
        try:
            with os.fdopen(fd, "wb") as f:
                async for chunk in chunks:
                    hasher.update(chunk)
                    f.write(chunk)
                f.flush()
                os.fsync(f.fileno())
            got = hasher.hexdigest()
            if got != expected:
                raise BadRequest(f'digest mismatch, expected "sha256:{expected}", got "sha256:{got}"')
            os.replace(tmp, final)
            _fsync_dir(self.blobs_dir)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)

    def write_bytes_blob(self, data: bytes) -> Layer:
        digest = hashlib.sha256(data).hexdigest()
        path = os.path.join(self.blobs_dir, f"sha256-{digest}")
        if not os.path.exists(path):
            _atomic_write(path, data)
        return Layer("", f"sha256:{digest}", len(data))

    def import_file(self, source: str, digest_hex: str | None = None) -> str:
        """Copies a local file into the blobs (verified) and returns its digest."""
        if digest_hex and os.path.isfile(os.path.join(self.blobs_dir, f"sha256-{digest_hex}")):
            return f"sha256:{digest_hex}"
        fd, tmp = tempfile.mkstemp(dir=self.blobs_dir, prefix=".tmp-")
        hasher = hashlib.sha256()
        try:
            with open(source, "rb") as src, os.fdopen(fd, "wb") as dst:
                while chunk := src.read(_CHUNK):
                    hasher.update(chunk)
                    dst.write(chunk)
                dst.flush()
                os.fsync(dst.fileno())
            got = hasher.hexdigest()
            if digest_hex and got != digest_hex:
                raise ValueError(f"{source}: sha256 {got} does not match {digest_hex}")
            os.replace(tmp, os.path.join(self.blobs_dir, f"sha256-{got}"))
            _fsync_dir(self.blobs_dir)
            return f"sha256:{got}"
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)

    # -- manifests -------------------------------------------------------------------------

    def _manifest_path(self, name: ModelName) -> str:
        return os.path.join(self.manifests_dir, *name.parts())

    def _existing_manifest_path(self, name: ModelName) -> str | None:
        """Lookup is case-insensitive against the names on disk, like Ollama's."""
        exact = self._manifest_path(name)
        if os.path.isfile(exact):  # the usual case: no directory listing per request
            return exact
        path = self.manifests_dir
        for part in name.parts():
            try:
                entries = os.listdir(path)
            except OSError:
                return None
            match = part if part in entries else next(
                (e for e in entries if e.lower() == part.lower()), None)
            if match is None:
                return None
            path = os.path.join(path, match)
        return path if os.path.isfile(path) else None

    def write_manifest(self, name: ModelName, manifest: Manifest) -> None:
        """Writes (or replaces) a manifest; blobs only the replaced one used are removed."""
        self.write_manifest_bytes(name, msgspec.json.encode(manifest))

    def write_manifest_bytes(self, name: ModelName, raw: bytes) -> bool:
        """write_manifest for bytes kept as they are (a pulled manifest: its sha256 is the
        digest the registry and /api/tags show). True when blobs of a replaced one went."""
        with self._lock:
            path = self._manifest_path(name)
            old = self._read_manifest(path) if os.path.isfile(path) else None
            _atomic_write(path, raw)
            return old is not None and self._remove_unreferenced(_digests(old)) > 0

    def manifest_bytes(self, name: ModelName) -> bytes:
        """The manifest file as stored (a push sends these exact bytes)."""
        path = self._existing_manifest_path(name)
        if path is None:
            raise ModelNotFound(name.display)
        with open(path, "rb") as f:
            return f.read()

    def copy(self, source: ModelName, destination: ModelName) -> None:
        """Copies the manifest only: the blobs are shared."""
        path = self._existing_manifest_path(source)
        if path is None:
            raise NotFound(f'model "{source.display}" not found')
        with open(path, "rb") as f:
            raw = f.read()
        with self._lock:
            _atomic_write(self._manifest_path(destination), raw)

    def delete(self, name: ModelName, shown: str) -> None:
        """Removes the manifest, then every blob of it that no other manifest references."""
        with self._lock:
            path = self._existing_manifest_path(name)
            if path is None:
                raise ModelNotFound(shown)
            manifest = self._read_manifest(path)
            os.unlink(path)
            _fsync_dir(os.path.dirname(path))
            self._prune_empty_dirs(os.path.dirname(path))
            if manifest is not None:
                self._remove_unreferenced(_digests(manifest))

    def _read_manifest(self, path: str) -> Manifest | None:
        try:
            with open(path, "rb") as f:
                return msgspec.json.decode(f.read(), type=Manifest)
        except (OSError, msgspec.DecodeError):
            return None

    def _manifest_paths(self) -> list[str]:
        paths = []
        for dirpath, _, files in os.walk(self.manifests_dir):
            paths += [os.path.join(dirpath, f) for f in files if not f.startswith(".tmp-")]
        return paths

    def _remove_unreferenced(self, candidates: set[str]) -> int:
        referenced: set[str] = set()
        for path in self._manifest_paths():
            manifest = self._read_manifest(path)
            if manifest is not None:
                referenced |= _digests(manifest)
        removed = 0
        for digest in candidates - referenced:
            try:
                os.unlink(self.blob_path(digest))
                removed += 1
            except (OSError, BadRequest):
                pass
        return removed

    def _prune_empty_dirs(self, folder: str) -> None:
        while os.path.abspath(folder) != os.path.abspath(self.manifests_dir):
            try:
                os.rmdir(folder)
            except OSError:
                return
            folder = os.path.dirname(folder)

    def resolve(self, name: ModelName, shown: str | None = None) -> ModelEntry:
        path = self._existing_manifest_path(name)
        if path is None:
            raise ModelNotFound(shown if shown is not None else name.display)
        mtime = os.stat(path).st_mtime
        cached = self._entries.get((path, mtime))
        if cached is not None:
            return cached
        entry = self._load_entry(name, path, mtime)
        self._entries[(path, mtime)] = entry
        return entry

    def _load_entry(self, name: ModelName, path: str, mtime: float) -> ModelEntry:
        with open(path, "rb") as f:
            raw = f.read()
        try:
            manifest = msgspec.json.decode(raw, type=Manifest)
            config = msgspec.json.decode(self._read_blob(manifest.config.digest), type=ModelConfig)
        except (msgspec.DecodeError, OSError) as e:
            raise NotFound(f"model '{name.display}' has a broken manifest: {e}") from e
        model_layer = manifest.layer(MODEL_MEDIA_TYPE)
        if model_layer is None:
            raise NotFound(f"model '{name.display}' has no model layer")
        params = template = system = None
        licenses = [self._read_blob(layer.digest).decode() for layer in manifest.layers
                    if layer.mediaType == LICENSE_MEDIA_TYPE]
        adapters = [self.blob_path(layer.digest) for layer in manifest.layers
                    if layer.mediaType == ADAPTER_MEDIA_TYPE]
        messages: list[Message] = []
        if (layer := manifest.layer(MESSAGES_MEDIA_TYPE)) is not None:
            messages = msgspec.json.decode(self._read_blob(layer.digest), type=list[Message])
        if (layer := manifest.layer(PARAMS_MEDIA_TYPE)) is not None:
            params = msgspec.json.decode(self._read_blob(layer.digest), type=Options)
        if (layer := manifest.layer(TEMPLATE_MEDIA_TYPE)) is not None:
            template = self._read_blob(layer.digest).decode()
        if (layer := manifest.layer(SYSTEM_MEDIA_TYPE)) is not None:
            system = self._read_blob(layer.digest).decode()
        try:
            summary: GGUFSummary | None = read_summary(self.blob_path(model_layer.digest))
        except (NotGGUF, OSError):
            summary = None
        return ModelEntry(
            name=name, manifest=manifest, manifest_digest=hashlib.sha256(raw).hexdigest(),
            config=config, model_path=self.blob_path(model_layer.digest),
            model_digest=model_layer.digest, params=params, template=template, system=system,
            modified_at=mtime,
            size=manifest.config.size + sum(layer.size for layer in manifest.layers),
            context_length=summary.context_length if summary else 0,
            capabilities=derive_capabilities(summary, template, manifest),
            gguf_template=summary.chat_template if summary else "",
            licenses=licenses, messages=messages, adapters=adapters)

    def _read_blob(self, digest: str) -> bytes:
        with open(self.blob_path(digest), "rb") as f:
            return f.read()

    def entries(self) -> list[ModelEntry]:
        """Every complete model in the store, newest first."""
        found: list[ModelEntry] = []
        for path in self._manifest_paths():
            rel = os.path.relpath(path, self.manifests_dir).split(os.sep)
            if len(rel) != 4:
                continue
            try:
                found.append(self.resolve(ModelName(*rel)))
            except (NotFound, OSError):
                continue
        return sorted(found, key=lambda entry: entry.modified_at, reverse=True)

    def list_models(self) -> list[ListedModel]:
        return [ListedModel(name=e.name.display, model=e.name.display,
                            modified_at=format_time(e.modified_at), size=e.size,
                            digest=e.manifest_digest, details=e.details)
                for e in self.entries()]

    # -- create ----------------------------------------------------------------------------

    def text_layer(self, media_type: str, data: bytes) -> Layer:
        layer = self.write_bytes_blob(data)
        layer.mediaType = media_type
        return layer

    def write_config(self, summary: GGUFSummary) -> Layer:
        config = ModelConfig(model_family=summary.architecture,
                             model_families=[summary.architecture] if summary.architecture else None,
                             model_type=format_parameter_size(summary.parameter_count),
                             file_type=summary.file_type)
        return self.text_layer(CONFIG_MEDIA_TYPE, msgspec.json.encode(config))

    def write_layers(self, name: ModelName, config: Layer, layers: list[Layer]) -> None:
        self.write_manifest(name, Manifest(config=config, layers=layers))

    def adopt_file(self, path: str) -> str:
        """Moves a finished file from inside the blobs folder to its digest name."""
        hasher = hashlib.sha256()
        with open(path, "rb") as f:
            while chunk := f.read(_CHUNK):
                hasher.update(chunk)
            os.fsync(f.fileno())
        digest = hasher.hexdigest()
        os.replace(path, os.path.join(self.blobs_dir, f"sha256-{digest}"))
        _fsync_dir(self.blobs_dir)
        return f"sha256:{digest}"

    def create_from_gguf(self, name: ModelName, gguf_digest: str,
                         params: Options | None = None) -> ModelEntry:
        """Writes config + manifest for a GGUF blob that is already in the store."""
        path = self.blob_path(gguf_digest)
        try:
            summary = read_summary(path)
        except NotGGUF as e:
            raise BadRequest(str(e)) from e
        layers = [Layer(MODEL_MEDIA_TYPE, f"sha256:{parse_digest(gguf_digest)}",
                        os.path.getsize(path))]
        if params is not None:
            layers.append(self.text_layer(PARAMS_MEDIA_TYPE, msgspec.json.encode(params)))
        self.write_layers(name, self.write_config(summary), layers)
        return self.resolve(name)

    def remove_partial_files(self) -> None:
        """Start-up housekeeping: dot-files in blobs/ (temp files, conversion folders, partial
        quantizations) are what a crash leaves; no real blob starts with a dot."""
        for fname in os.listdir(self.blobs_dir):
            if fname.startswith("."):
                path = os.path.join(self.blobs_dir, fname)
                if os.path.isdir(path):
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    try:
                        os.unlink(path)
                    except OSError:
                        pass


async def run_blocking(func: Callable[..., Any], *args: Any) -> Any:
    return await asyncio.get_running_loop().run_in_executor(None, func, *args)
