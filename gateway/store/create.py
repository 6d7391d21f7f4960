"""POST /api/create's work: build a manifest from a GGUF blob, a safetensors folder or another
model, with template/system/parameters/messages/license/adapter layers and optional quantization.

Runs in a worker thread (hashing, conversion and quantization block); progress goes out through a
callback. A `from` model that must be pulled is pulled by the route first, on the event loop. Every file lands in the store through an atomic rename, so a create killed half way
leaves only dot-files that start-up housekeeping removes.
"""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable

import msgspec

from herd.gateway.store.blobs import parse_digest, temp_prefix
from herd.gateway.errors import BadRequest, HerdError, ModelNotFound, NotFound
from herd.gateway.store.gguf_meta import NotGGUF, read_metadata, read_summary
from herd.gateway.store.draft_check import check_draft
from herd.gateway.store.sources import NO_SERVER_PATHS, blob_reference, is_gguf, looks_like_path
from herd.gateway.store.manifest import (ADAPTER_MEDIA_TYPE, DRAFT_MEDIA_TYPE, LICENSE_MEDIA_TYPE,
                                         MESSAGES_MEDIA_TYPE, MODEL_MEDIA_TYPE, PARAMS_MEDIA_TYPE,
                                         PROJECTOR_MEDIA_TYPE, SYSTEM_MEDIA_TYPE,
                                         TEMPLATE_MEDIA_TYPE, Layer)
from herd.protocol.modelfile import ModelfileError, options_from_mapping, parse_modelfile
from herd.protocol.names import InvalidName, parse_name
from herd.gateway.store.models import ModelStore, model_name_or_400
from herd.protocol.api import CreateRequest, Options, StatusChunk, merge_options
from herd.protocol.templates.check import check_template
from herd.protocol.templates.go import TemplateError
from herd.worker.engine.vision.mmproj import is_projector, needs_projector_type, write_with_projector_type
from herd.worker.quantize import QuantizeError, canonical_quant_type, check_source, decode_line

Progress = Callable[[StatusChunk], None]
_TEXT_LAYERS = (TEMPLATE_MEDIA_TYPE, SYSTEM_MEDIA_TYPE, PARAMS_MEDIA_TYPE, MESSAGES_MEDIA_TYPE,
                LICENSE_MEDIA_TYPE)


class CreateJob:
    def __init__(self, store: ModelStore, progress: Progress) -> None:
        self.store = store
        self.progress = progress
        self._existing: set[str] = set()
        self.pin: Callable[[list[str]], None] = lambda digests: None

    def run(self, req: CreateRequest) -> None:
        """Every blob the new manifest names is pinned from the moment it is chosen until the
        manifest is on disk, so a concurrent delete of a model sharing it cannot take it."""
        with self.store.pinning() as pin:
            self.pin = pin
            self._run(req)

    def status(self, text: str) -> None:
        self.progress(StatusChunk(text))

    def _run(self, req: CreateRequest) -> None:
        name = model_name_or_400(req.model or req.name)
        if req.modelfile:
            req = self._apply_modelfile(req)
        self._existing = set(os.listdir(self.store.blobs_dir))
        inherited: list[Layer] = []
        base_params: Options | None = None
        files, projectors = self._projectors(req.files) if req.files else ({}, [])
        if files:
            model_layer = self._model_from_files(files)
        elif req.from_:
            base = self._resolve_base(req.from_)
            self.pin([layer.digest for layer in (base.manifest.config, *base.manifest.layers)])
            # Layers taken from a model name it in `from`, as Ollama's parseFromModel does
            # (server/model.go): the model layer's is /api/show's details.parent_model.
            layers_from = [msgspec.structs.replace(layer, from_=base.name.display)
                           for layer in base.manifest.layers]
            model_layer = next(layer for layer in layers_from
                               if layer.mediaType == MODEL_MEDIA_TYPE)
            inherited = [layer for layer in layers_from if layer is not model_layer]
            base_params = base.params
        else:
            raise BadRequest("neither 'from' or 'files' was specified")
        quantize = req.quantize or req.quantization
        if quantize:
            model_layer = self._quantize(model_layer, quantize)
        layers = [model_layer]
        layers += self._adapters(req.adapters) if req.adapters else [
            layer for layer in inherited if layer.mediaType == ADAPTER_MEDIA_TYPE]
        draft = self._draft(req, model_layer)
        # A projector or a draft given with the request replaces the base model's.
        replaced = ((PROJECTOR_MEDIA_TYPE,) if projectors else ()) + \
            ((DRAFT_MEDIA_TYPE,) if draft else ())
        layers += projectors + draft + [layer for layer in inherited if layer.mediaType not in
                                        (*_TEXT_LAYERS, ADAPTER_MEDIA_TYPE, *replaced)]
        layers += self._text_layers(req, inherited, base_params)
        summary = read_summary(self.store.blob_path(model_layer.digest))
        config = self.store.write_config(summary, self.pin)
        if missing := [layer.digest for layer in (config, *layers)
                       if not self.store.has_blob(layer.digest)]:
            raise HerdError(f"blob {missing[0]} was removed while the model was created")
        for layer in layers:
            known = f"sha256-{parse_digest(layer.digest)}" in self._existing
            verb = "using existing" if known else "creating new"
            self.status(f"{verb} layer {layer.digest}")
        self.status("writing manifest")
        self.store.write_layers(name, config, layers)

    # -- sources of the weights -------------------------------------------------------------

    def _apply_modelfile(self, req: CreateRequest) -> CreateRequest:
        try:
            mf = parse_modelfile(req.modelfile)
        except ModelfileError as e:
            raise BadRequest(str(e)) from e
        params = {k: v for k, v in msgspec.structs.asdict(mf.parameters).items() if v is not None}
        update: dict[str, object] = {
            "template": mf.template if req.template is None else req.template,
            "system": mf.system if req.system is None else req.system,
            "parameters": {**params, **(req.parameters or {})} or None,
            "messages": req.messages or mf.messages or None,
            "license": req.license or mf.licenses or None,
        }
        # The server reads none of its own files for a request: FROM and ADAPTER name a blob
        # (uploaded with POST /api/blobs) or a model, and a path gets one answer whether or
        # not it exists, so the error is no oracle for the server's disk. A second FROM is a
        # vision projector's blob (Ollama's two-FROM Modelfiles).
        files = {}
        for i, source in enumerate((mf.from_, *mf.more_from)):
            if (digest := blob_reference(source)) is not None:
                files[f"from{i}.gguf"] = digest
            elif looks_like_path(source):
                raise BadRequest(NO_SERVER_PATHS)
            elif i == 0:
                update["from_"] = source
            else:
                raise BadRequest(f"a second FROM must name a projector blob: {source}")
        if files:
            update["files"] = files
        if mf.draft is not None:
            update["draft_files"] = {"draft.gguf": self._draft_reference(mf.draft)}
        if mf.adapters:
            adapters = {}
            for i, text in enumerate(mf.adapters):
                if (digest := blob_reference(text)) is None:
                    raise BadRequest(NO_SERVER_PATHS)
                adapters[f"adapter{i}.gguf"] = digest
            update["adapters"] = adapters
        return msgspec.structs.replace(req, modelfile="", **update)

    def base_to_pull(self, req: CreateRequest) -> str | None:
        """The `from` model (or modelfile FROM) that is not in the store: the route pulls it on
        the event loop before the job starts, so no job thread ever waits on a pull (a pull
        needs pool threads itself; parked jobs would take them all)."""
        text = req.from_
        if req.modelfile:
            try:
                text = parse_modelfile(req.modelfile).from_
            except ModelfileError:
                return None  # the job reports it
            if blob_reference(text) is not None or looks_like_path(text):
                return None
        if req.files or not text:
            return None
        try:
            self.store.resolve(parse_name(text))
        except InvalidName:
            return None
        except ModelNotFound:
            return text
        except NotFound:
            return None
        return None

    def _resolve_base(self, text: str):
        try:
            name = parse_name(text)
        except InvalidName:
            raise BadRequest("invalid model name") from None
        try:
            return self.store.resolve(name)
        except NotFound:
            raise NotFound(f'model "{text}" not found') from None

    def _checked_files(self, files: dict[str, str]) -> dict[str, str]:
        """filename → blob path, after Ollama's checks."""
        paths = {}
        for filename, digest in files.items():
            if os.path.isabs(filename) or ".." in filename.replace("\\", "/").split("/"):
                raise BadRequest("file path must be relative")
            parse_digest(digest)
            self.pin([digest])
            if not self.store.has_blob(digest):
                raise BadRequest(f'blob "{digest}" not found')
            paths[filename] = self.store.blob_path(digest)
        if not paths:
            raise BadRequest("no files provided to convert")
        return paths

    def _projectors(self, files: dict[str, str]) -> tuple[dict[str, str], list[Layer]]:
        """Splits off projector GGUFs (Ollama's isProjectorGGUF: general.type "mmproj" or a
        CLIP file with a vision encoder), each stored as a projector layer; an old llava one
        gets clip.projector_type "mlp" first, as Ollama writes it."""
        rest: dict[str, str] = {}
        layers: list[Layer] = []
        for filename, path in self._checked_files(files).items():
            meta = read_metadata(path)[0] if is_gguf(path) else {}
            if not is_projector(meta):
                rest[filename] = files[filename]
                continue
            digest = files[filename]
            if needs_projector_type(meta):
                self.status("updating GGUF projector metadata")
                fd, tmp = tempfile.mkstemp(prefix=".tmp-projector-", dir=self.store.blobs_dir)
                os.close(fd)
                try:
                    write_with_projector_type(path, tmp)
                    digest = self.store.adopt_file(tmp)
                finally:
                    if os.path.exists(tmp):
                        os.unlink(tmp)
            layers.append(Layer(PROJECTOR_MEDIA_TYPE, f"sha256:{parse_digest(digest)}",
                                os.path.getsize(self.store.blob_path(digest))))
        if len(layers) > 1:
            raise BadRequest("only one projector file per model is supported")
        return rest, layers

    def _model_from_files(self, files: dict[str, str]) -> Layer:
        paths = self._checked_files(files)
        ggufs = [(f, p) for f, p in paths.items() if is_gguf(p)]
        if len(paths) == 1 and not ggufs:
            raise BadRequest("supplied file was not in GGUF format")
        if ggufs:
            if len(ggufs) > 1:
                raise BadRequest("only one GGUF file per model is supported")
            self.status("parsing GGUF")
            try:
                read_summary(ggufs[0][1])
            except NotGGUF as e:
                raise BadRequest(str(e)) from e
            return self._model_layer(files[ggufs[0][0]])
        if "config.json" not in paths or not any(f.endswith(".safetensors") for f in paths):
            raise BadRequest("unknown type")
        return self._convert(paths)

    def _convert(self, paths: dict[str, str]) -> Layer:
        from herd.gateway.store.convert import ConversionError, convert_safetensors

        self.status("converting model")
        workdir = tempfile.mkdtemp(prefix=temp_prefix("convert-"), dir=self.store.blobs_dir)
        try:
            src = os.path.join(workdir, "src")
            for filename, blob in paths.items():
                link = os.path.join(src, filename)
                os.makedirs(os.path.dirname(link), exist_ok=True)
                os.symlink(blob, link)
            out = os.path.join(workdir, "model.gguf")
            try:
                convert_safetensors(pathlib.Path(src), pathlib.Path(out), self.status)
            except ConversionError as e:
                raise BadRequest(str(e)) from e
            digest = self.store.adopt_file(out)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        return self._model_layer(digest)

    def _model_layer(self, digest: str) -> Layer:
        self.pin([digest])
        return Layer(MODEL_MEDIA_TYPE, f"sha256:{parse_digest(digest)}",
                     os.path.getsize(self.store.blob_path(digest)))

    def _quantize(self, layer: Layer, requested: str) -> Layer:
        try:
            target = canonical_quant_type(requested)
        except QuantizeError as e:
            raise BadRequest(str(e)) from e
        src = self.store.blob_path(layer.digest)
        source_type = read_summary(src).file_type
        if source_type == target:
            return layer
        try:
            check_source(source_type)
        except QuantizeError as e:
            raise BadRequest(str(e)) from e
        fd, dst = tempfile.mkstemp(prefix=temp_prefix("quantize-"), suffix=".gguf",
                                   dir=self.store.blobs_dir)
        os.close(fd)
        status = f"quantizing {source_type} model to {target}"
        proc = subprocess.Popen([sys.executable, "-m", "herd.worker.quantize", src, dst, target],
                                stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)
        try:
            error = ""
            assert proc.stdout is not None
            for line in proc.stdout:
                message = decode_line(line)
                if hasattr(message, "completed"):
                    self.progress(StatusChunk(status, digest="0000000000000000000",
                                              total=message.total, completed=message.completed))
                elif hasattr(message, "error"):
                    error = message.error
            if proc.wait() != 0:
                raise HerdError(error or f"quantization failed with status {proc.returncode}")
            return self._model_layer(self.store.adopt_file(dst))
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            if os.path.exists(dst):
                os.unlink(dst)

    def _draft_reference(self, source: str) -> str:
        """A Modelfile's DRAFT: a blob, or a model of the store whose weights draft."""
        if (digest := blob_reference(source)) is not None:
            return digest
        if looks_like_path(source):
            raise BadRequest(NO_SERVER_PATHS)
        return self._resolve_base(source).model_digest

    def _draft(self, req: CreateRequest, model_layer: Layer) -> list[Layer]:
        """The draft model's layer (its GGUF, a converted folder, quantized if asked), checked
        against the model's vocabulary; [] when the request names none."""
        if not req.draft_files:
            if req.draft_quantize:
                raise BadRequest("draft_quantize needs draft_files")
            return []
        self.status("parsing draft model")
        layer = self._model_from_files(req.draft_files)
        if req.draft_quantize:
            layer = self._quantize(layer, req.draft_quantize)
        check_draft(self.store.blob_path(model_layer.digest), self.store.blob_path(layer.digest))
        return [Layer(DRAFT_MEDIA_TYPE, layer.digest, layer.size)]

    def _adapters(self, adapters: dict[str, str]) -> list[Layer]:
        if len(adapters) > 1:
            raise BadRequest("only one adapter is currently supported")
        layers = []
        for filename, path in self._checked_files(adapters).items():
            if not is_gguf(path):
                raise BadRequest("only GGUF adapters are supported")
            digest = adapters[filename]
            layers.append(Layer(ADAPTER_MEDIA_TYPE, f"sha256:{parse_digest(digest)}",
                                os.path.getsize(path)))
        return layers

    # -- text layers ------------------------------------------------------------------------

    def _text(self, media_type: str, data: bytes) -> Layer:
        return self.store.text_layer(media_type, data, self.pin)

    def _text_layers(self, req: CreateRequest, inherited: list[Layer],
                     base_params: Options | None) -> list[Layer]:
        def inherit(media_type: str) -> list[Layer]:
            return [layer for layer in inherited if layer.mediaType == media_type]

        layers: list[Layer] = []
        if req.template:
            try:
                check_template(req.template)  # Ollama refuses a template it cannot parse
            except TemplateError as e:
                raise BadRequest(str(e)) from e
        layers += [self._text(TEMPLATE_MEDIA_TYPE, req.template.encode())] \
            if req.template is not None else inherit(TEMPLATE_MEDIA_TYPE)
        layers += [self._text(SYSTEM_MEDIA_TYPE, req.system.encode())] \
            if req.system is not None else inherit(SYSTEM_MEDIA_TYPE)
        if req.parameters:
            try:
                params = merge_options(base_params, options_from_mapping(req.parameters))
            except ModelfileError as e:
                raise BadRequest(str(e)) from e
            layers.append(self._text(PARAMS_MEDIA_TYPE, msgspec.json.encode(params)))
        else:
            layers += inherit(PARAMS_MEDIA_TYPE)
        layers += [self._text(MESSAGES_MEDIA_TYPE, msgspec.json.encode(req.messages))] \
            if req.messages else inherit(MESSAGES_MEDIA_TYPE)
        licenses = [req.license] if isinstance(req.license, str) else (req.license or [])
        layers += [self._text(LICENSE_MEDIA_TYPE, text.encode()) for text in licenses] \
            if licenses else inherit(LICENSE_MEDIA_TYPE)
        return layers
