"""JSON `null` for an optional field means "absent", as Go's encoding/json decodes it (a null
leaves the field at its zero value, so Ollama's clients send `"stream": null` or
`"options": null` freely). msgspec refuses a null for a field typed `bool` or `int`; rather
than widen every request Struct to `T | None`, a body that fails on a null is decoded again
with each null dropped where the target field cannot hold one, so the field keeps its
default. Only keys of Structs are dropped: nulls inside free-form JSON (a schema's
`"default": null`, a tool's arguments) stay as the client sent them."""

from __future__ import annotations

import functools
from typing import Any, TypeVar

import msgspec
from msgspec import inspect as mi

T = TypeVar("T")

_CONTAINERS = (mi.ListType, mi.SetType, mi.FrozenSetType, mi.VarTupleType)


def _accepts_none(t: mi.Type) -> bool:
    if isinstance(t, (mi.NoneType, mi.AnyType)):
        return True
    return isinstance(t, mi.UnionType) and any(_accepts_none(m) for m in t.types)


def _struct_for(t: mi.UnionType, value: dict[str, Any]) -> mi.StructType | None:
    structs = [m for m in t.types if isinstance(m, mi.StructType)]
    if len(structs) == 1:
        return structs[0]
    for s in structs:  # a tagged union: the tag picks the member
        if s.tag_field is not None and value.get(s.tag_field) == s.tag:
            return s
    return None


def _strip(value: Any, t: mi.Type) -> Any:
    if isinstance(t, mi.UnionType):
        if isinstance(value, dict):
            member = _struct_for(t, value)
            if member is None:
                member = next((m for m in t.types if isinstance(m, mi.DictType)), None)
            return value if member is None else _strip(value, member)
        if isinstance(value, list):
            member = next((m for m in t.types if isinstance(m, _CONTAINERS)), None)
            return value if member is None else _strip(value, member)
        return value
    if isinstance(t, mi.StructType) and isinstance(value, dict):
        fields = {f.encode_name: f for f in t.fields}
        out: dict[str, Any] = {}
        for key, item in value.items():
            f = fields.get(key)
            if f is None:
                out[key] = item
            elif item is None:
                if _accepts_none(f.type):
                    out[key] = None
            else:
                out[key] = _strip(item, f.type)
        return out
    if isinstance(t, _CONTAINERS) and isinstance(value, list):
        return [_strip(item, t.item_type) for item in value]
    if isinstance(t, mi.DictType) and isinstance(value, dict):
        return {k: _strip(v, t.value_type) for k, v in value.items()}
    return value


@functools.lru_cache(maxsize=None)
def _info(type_: Any) -> mi.Type:
    return mi.type_info(type_)


def decode_request(body: bytes, type_: type[T]) -> T:
    """The body as `type_`; the fast path is one msgspec decode, the slow one only runs for a
    body that failed on a null."""
    try:
        return msgspec.json.decode(body, type=type_)
    except msgspec.ValidationError as e:
        if "got `null`" not in str(e):
            raise
    stripped = _strip(msgspec.json.decode(body), _info(type_))
    return msgspec.convert(stripped, type_)
