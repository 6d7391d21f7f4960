"""POST /api/show, POST /api/copy and DELETE /api/delete."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from herd.gateway.errors import BadRequest, ModelNotFound
from herd.gateway.store.gguf_meta import read_metadata
from herd.gateway.http.io import decode_body, json_response
from herd.protocol.modelfile import render_modelfile, render_parameters
from herd.protocol.names import InvalidName, parse_name
from herd.gateway.state import STATE
from herd.gateway.store.models import format_time, model_name_or_400, run_blocking
from herd.protocol.api import CopyRequest, DeleteRequest, ShowRequest, ShowResponse, merge_options
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


def model_info(path: str, verbose: bool) -> dict[str, Any]:
    meta, parameter_count = read_metadata(path, keep_arrays=verbose)
    info: dict[str, Any] = {}
    for key, value in meta.items():
        if key in _HIDDEN_KEYS:
            continue
        if isinstance(value, int) and type(value).__name__ == "_SkippedArray":
            value = []
        elif isinstance(value, list) and len(value) > _ARRAY_LIMIT and not verbose:
            value = []
        info[key] = value
    info.setdefault("general.parameter_count", parameter_count)
    return info


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
    parameters = merge_options(entry.params, req.options)
    has_parameters = any(getattr(parameters, f) is not None for f in parameters.__struct_fields__)
    template = entry.template or entry.gguf_template or builtin_template(entry.config.model_family)
    system = req.system if req.system is not None else entry.system
    info = await run_blocking(model_info, entry.model_path, req.verbose)
    return json_response(ShowResponse(
        modelfile=render_modelfile(
            model_name=name.display, from_line=entry.model_path, template=template, system=system,
            parameters=parameters if has_parameters else None, adapters=entry.adapters,
            licenses=entry.licenses, messages=entry.messages),
        parameters=render_parameters(parameters) if has_parameters else None,
        template=template, system=system,
        license="\n".join(entry.licenses) if entry.licenses else None,
        messages=entry.messages or None,
        details=entry.details, model_info=info, capabilities=entry.capabilities,
        modified_at=format_time(entry.modified_at)))
