"""POST /api/show, POST /api/copy and DELETE /api/delete."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from herd.gateway.errors import BadRequest, ModelNotFound
from herd.gateway.store.gguf_meta import SkippedArray, read_metadata
from herd.gateway.http.io import decode_body, json_response
from herd.protocol.modelfile_render import render_modelfile, render_parameters
from herd.protocol.names import InvalidName, parse_name
from herd.gateway.state import STATE
from herd.gateway.store.models import format_time, model_name_or_400, run_blocking
from herd.gateway.store.manifest import PROJECTOR_MEDIA_TYPE
from herd.protocol.api import (CopyRequest, DeleteRequest, Options, ShowRequest, ShowResponse,
                               Tensor, merge_options)
from herd.protocol.templates.builtin import builtin_template

routes = web.RouteTableDef()


@routes.post("/api/copy")
async def copy(request: web.Request) -> web.Response:
    store = request.app[STATE].store
    req = await decode_body(request, CopyRequest)
    try:
        source = parse_name(req.source)
    except InvalidName:
        raise BadRequest(f'source "{req.source}" is invalid') from None
    try:
        destination = parse_name(req.destination)
    except InvalidName:
        raise BadRequest(f'destination "{req.destination}" is invalid') from None
    await run_blocking(store.copy, source, destination)
    return web.Response(status=200)


@routes.delete("/api/delete")
async def delete(request: web.Request) -> web.Response:
    store = request.app[STATE].store
    req = await decode_body(request, DeleteRequest)
    text = req.model or req.name
    if not text:
        raise BadRequest("model is required")
    try:
        name = parse_name(text)
    except InvalidName:
        raise BadRequest(f'name "{text}" is invalid') from None
    await run_blocking(store.delete, name, text)
    return web.Response(status=200)


_HIDDEN_KEYS = {"general.name", "tokenizer.chat_template"}
_ARRAY_LIMIT = 5  # longer arrays (tokenizer vocabularies) only with verbose, like Ollama


def model_info(path: str, verbose: bool,
               tensors: list[Tensor] | None = None) -> dict[str, Any]:
    meta, parameter_count = read_metadata(path, keep_arrays=verbose, tensors=tensors)
    info: dict[str, Any] = {}
    for key, value in meta.items():
        if key in _HIDDEN_KEYS:
            continue
        if isinstance(value, SkippedArray):  # too long to read: Ollama shows it empty
            value = []
        elif isinstance(value, list) and len(value) > _ARRAY_LIMIT and not verbose:
            value = []
        info[key] = value
    info.setdefault("general.parameter_count", parameter_count)
    return info


def _has_values(options: Options) -> bool:
    return any(getattr(options, f) is not None for f in options.__struct_fields__)


@routes.post("/api/show")
async def show(request: web.Request) -> web.Response:
    state = request.app[STATE]
    req = await decode_body(request, ShowRequest)
    text = req.model or req.name
    if not text:
        raise BadRequest("model is required")
    name = model_name_or_400(text)
    try:
        entry = state.store.resolve(name)
    except ModelNotFound:
        raise ModelNotFound(name.display) from None
    # As Ollama's GetModelInfo (server/routes.go): `parameters` are the model's own; the
    # request's options only reach the generated Modelfile.
    own = entry.params if entry.params is not None and _has_values(entry.params) else None
    asked = merge_options(entry.params, req.options)
    template = entry.template or entry.gguf_template or builtin_template(entry.config.model_family)
    system = req.system if req.system is not None else entry.system
    tensors: list[Tensor] = []
    info = await run_blocking(model_info, entry.model_path, req.verbose, tensors)
    projector = entry.manifest.layer(PROJECTOR_MEDIA_TYPE)
    projector_info = None if projector is None else await run_blocking(
        model_info, state.store.blob_path(projector.digest), req.verbose)
    return json_response(ShowResponse(
        modelfile=render_modelfile(
            model_name=name.display, from_line=entry.model_path, template=template, system=system,
            parameters=asked if _has_values(asked) else None, adapters=entry.adapters,
            licenses=entry.licenses, messages=entry.messages,
            projectors=(entry.projector,) if entry.projector else (), draft=entry.draft),
        parameters=render_parameters(own) if own is not None else None,
        tensors=tensors or None, projector_info=projector_info,
        template=template, system=system,
        license="\n".join(entry.licenses) if entry.licenses else None,
        messages=entry.messages or None,
        details=entry.details, model_info=info, capabilities=entry.capabilities,
        modified_at=format_time(entry.modified_at)))
