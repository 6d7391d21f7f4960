"""The model store: Ollama's on-disk layout under OLLAMA_MODELS.

manifests/<host>/<namespace>/<model>/<tag> and blobs/sha256-<hex>. Every write goes to a temp
file in the same folder, is fsynced and renamed into place, so a crash never leaves a
half-written manifest or blob under its final name; every blob is checked against its digest.
The blob files themselves are herd.gateway.store.blobs; this module names them in manifests and resolves
a model name to its entry.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import threading
from collections.abc import Callable
from datetime import datetime
from typing import Any

import msgspec
from msgspec import Struct

from herd.gateway.store.blobs import (BlobStore, InvalidDigest, atomic_write, fsync_dir,
                                      normal_digest, parse_digest)
from herd.gateway.errors import BadRequest, HerdError, ModelNotFound, NotFound
from herd.gateway.store.gguf_meta import GGUFSummary, NotGGUF, format_parameter_size, read_summary
from herd.gateway.store.pins import Pins
from herd.gateway.store.manifest import (ADAPTER_MEDIA_TYPE, CONFIG_MEDIA_TYPE, LICENSE_MEDIA_TYPE,
                              MESSAGES_MEDIA_TYPE, MODEL_MEDIA_TYPE, PARAMS_MEDIA_TYPE,
                              PROJECTOR_MEDIA_TYPE, DRAFT_MEDIA_TYPE, SYSTEM_MEDIA_TYPE, TEMPLATE_MEDIA_TYPE, Layer,
                              Manifest, ModelConfig)
from herd.protocol.names import InvalidName, ModelName, parse_name
from herd.protocol.api import ListedModel, Message, ModelDetails, Options
from herd.protocol.templates.builtin import is_go_template

log = logging.getLogger("herd.store")

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
    embedding_length: int = 0  # from the GGUF; 0 when unknown
    parent_model: str = ""  # the model layer's `from`: the model this one was created from
    projector: str = ""  # blob path of the vision projector (mmproj), "" without one
    draft: str = ""  # blob path of the draft model of speculative decoding, "" without one

    @property
    def details(self) -> ModelDetails:
        return ModelDetails(parent_model=self.parent_model, format=self.config.model_format,
                            family=self.config.model_family,
                            families=self.config.model_families,
                            parameter_size=self.config.model_type,
                            quantization_level=self.config.file_type)

    @property
    def listed_details(self) -> ModelDetails:
        """/api/tags' details also carry the lengths, as Ollama's model list does."""
        details = self.details
        if self.context_length:
            details.context_length = self.context_length
        if self.embedding_length:
            details.embedding_length = self.embedding_length
        return details


def format_time(ts: float) -> str:
    """RFC 3339 with nanoseconds and the local offset, like Go's time.Time."""
    dt = datetime.fromtimestamp(ts).astimezone()
    frac = f"{int(round((ts % 1) * 1e9)) % 1_000_000_000:09d}"
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + frac + dt.strftime("%z")[:3] + ":" + dt.strftime("%z")[3:]


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
    """Normalised, so `sha256:ABC…` in a pulled manifest and `sha256:abc…` in a created one
    count as the one blob file they name."""
    found = set()
    for layer in (manifest.config, *manifest.layers):
        try:
            found.add(normal_digest(layer.digest))
        except InvalidDigest:  # names no blob file: nothing to count or remove
            continue
    return found



class ModelStore(BlobStore):
    """Manifests over the blobs: one object, because pulls, pushes and creates move blobs and
    name them in a manifest together."""

    def __init__(self, root: str) -> None:
        super().__init__(root)
        self.root = root
        self.manifests_dir = os.path.join(root, "manifests")
        os.makedirs(self.manifests_dir, exist_ok=True)
        self._entries: dict[tuple[str, float], ModelEntry] = {}
        # Manifest writes and deletes run in worker threads: reference counting must not race.
        self._lock = threading.RLock()
        self.pins = Pins(root, self.blobs_dir)

    def pinning(self):
        """`with store.pinning() as pin: pin(digests)` (see herd.gateway.store.pins)."""
        return self.pins.holding()

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
            atomic_write(path, raw)
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
            atomic_write(self._manifest_path(destination), raw)

    def delete(self, name: ModelName, shown: str) -> None:
        """Removes the manifest, then every blob of it that no other manifest references."""
        with self._lock:
            path = self._existing_manifest_path(name)
            if path is None:
                raise ModelNotFound(shown)
            manifest = self._read_manifest(path)
            os.unlink(path)
            fsync_dir(os.path.dirname(path))
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
        # Under the gc lock, walk included: a create or pull elsewhere either still holds its
        # pin here or has written the manifest this walk reads (pins.py).
        with self.pins.gc_lock():
            referenced: set[str] = set()
            for path in self._manifest_paths():
                manifest = self._read_manifest(path)
                if manifest is not None:
                    referenced |= _digests(manifest)
            pinned = {f"sha256:{key}" for key in self.pins.pinned()}
            removed = 0
            for digest in {normal_digest(d) for d in candidates} - referenced - pinned:
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
            config = msgspec.json.decode(self.read_blob(manifest.config.digest), type=ModelConfig)
        except (msgspec.DecodeError, OSError, BadRequest) as e:
            raise NotFound(f"model '{name.display}' has a broken manifest: {e}") from e
        model_layer = manifest.layer(MODEL_MEDIA_TYPE)
        if model_layer is None:
            raise NotFound(f"model '{name.display}' has no model layer")
        what = name.display
        licenses = [text for layer in manifest.layers if layer.mediaType == LICENSE_MEDIA_TYPE
                    if (text := self._optional_text(layer, what)) is not None]
        adapters = [self.blob_path(layer.digest) for layer in manifest.layers
                    if layer.mediaType == ADAPTER_MEDIA_TYPE]
        messages = self._optional_json(manifest.layer(MESSAGES_MEDIA_TYPE), list[Message],
                                       what) or []
        params = self._optional_json(manifest.layer(PARAMS_MEDIA_TYPE), Options, what)
        template = self._optional_text(manifest.layer(TEMPLATE_MEDIA_TYPE), what)
        system = self._optional_text(manifest.layer(SYSTEM_MEDIA_TYPE), what)
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
            licenses=licenses, messages=messages, adapters=adapters,
            embedding_length=summary.embedding_length if summary else 0,
            parent_model=model_layer.from_ or "",
            projector=self.blob_path(projector.digest)
            if (projector := manifest.layer(PROJECTOR_MEDIA_TYPE)) is not None else "",
            draft=self.blob_path(draft.digest)
            if (draft := manifest.layer(DRAFT_MEDIA_TYPE)) is not None else "")

    # One unreadable license, params or messages blob must not hide the model, nor turn
    # /api/tags into a 500 for everyone: it is left out of the entry, with a log line.
    def _optional_text(self, layer: Layer | None, what: str) -> str | None:
        if layer is None:
            return None
        try:
            return self.read_blob(layer.digest).decode()
        except (OSError, UnicodeDecodeError, BadRequest) as e:
            log.warning("model %s: unreadable %s layer %s: %s", what, layer.mediaType,
                        layer.digest, e)
            return None

    def _optional_json(self, layer: Layer | None, type_: Any, what: str) -> Any:
        if layer is None:
            return None
        try:
            return msgspec.json.decode(self.read_blob(layer.digest), type=type_)
        except (OSError, msgspec.DecodeError, BadRequest) as e:
            log.warning("model %s: unreadable %s layer %s: %s", what, layer.mediaType,
                        layer.digest, e)
            return None

    def entries(self) -> list[ModelEntry]:
        """Every complete model in the store, newest first."""
        found: list[ModelEntry] = []
        for path in self._manifest_paths():
            rel = os.path.relpath(path, self.manifests_dir).split(os.sep)
            if len(rel) != 4:
                continue
            try:
                found.append(self.resolve(ModelName(*rel)))
            except (HerdError, OSError, ValueError) as e:  # listed without it, and said why
                log.warning("skipping %s in the model list: %s", "/".join(rel), e)
                continue
        return sorted(found, key=lambda entry: entry.modified_at, reverse=True)

    def list_models(self) -> list[ListedModel]:
        return [ListedModel(name=e.name.display, model=e.name.display,
                            modified_at=format_time(e.modified_at), size=e.size,
                            digest=e.manifest_digest, details=e.listed_details,
                            capabilities=e.capabilities)
                for e in self.entries()]

    # -- create ----------------------------------------------------------------------------

    def text_layer(self, media_type: str, data: bytes,
                   pin: Callable[[list[str]], None] | None = None) -> Layer:
        """A blob of `data`, pinned (when a create holds pins) before it is looked for."""
        if pin is not None:
            pin([f"sha256:{hashlib.sha256(data).hexdigest()}"])
        layer = self.write_bytes_blob(data)
        layer.mediaType = media_type
        return layer

    def write_config(self, summary: GGUFSummary,
                     pin: Callable[[list[str]], None] | None = None) -> Layer:
        config = ModelConfig(model_family=summary.architecture,
                             model_families=[summary.architecture] if summary.architecture else None,
                             model_type=format_parameter_size(summary.parameter_count),
                             file_type=summary.file_type)
        return self.text_layer(CONFIG_MEDIA_TYPE, msgspec.json.encode(config), pin)

    def write_layers(self, name: ModelName, config: Layer, layers: list[Layer]) -> None:
        self.write_manifest(name, Manifest(config=config, layers=layers))

    def create_from_gguf(self, name: ModelName, gguf_digest: str, params: Options | None = None,
                         template: str | None = None) -> ModelEntry:
        """Writes config + manifest for a GGUF blob that is already in the store; `template`
        (a TEMPLATE layer) replaces the GGUF's own chat template."""
        path = self.blob_path(gguf_digest)
        try:
            summary = read_summary(path)
        except NotGGUF as e:
            raise BadRequest(str(e)) from e
        layers = [Layer(MODEL_MEDIA_TYPE, f"sha256:{parse_digest(gguf_digest)}",
                        os.path.getsize(path))]
        if template is not None:
            layers.append(self.text_layer(TEMPLATE_MEDIA_TYPE, template.encode()))
        if params is not None:
            layers.append(self.text_layer(PARAMS_MEDIA_TYPE, msgspec.json.encode(params)))
        self.write_layers(name, self.write_config(summary), layers)
        return self.resolve(name)


async def run_blocking(func: Callable[..., Any], *args: Any) -> Any:
    return await asyncio.get_running_loop().run_in_executor(None, func, *args)
