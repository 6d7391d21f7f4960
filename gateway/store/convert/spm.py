"""Reads a SentencePiece tokenizer.model (a protobuf ModelProto) without the sentencepiece package.

Only the handful of fields llama.cpp needs are decoded: every piece's text, score and type,
and the normalizer's add_dummy_prefix flag. The wire format is plain protobuf, so a small
varint/length-delimited walker is enough and avoids a compiled dependency at run time.

Field numbers (sentencepiece_model.proto):
  ModelProto:      1 pieces (repeated SentencePiece), 2 trainer_spec, 3 normalizer_spec
  SentencePiece:   1 piece (string), 2 score (float), 3 type (enum, default NORMAL=1)
  TrainerSpec:     3 model_type (enum: 1 UNIGRAM, 2 BPE, 3 WORD, 4 CHAR)
  NormalizerSpec:  3 add_dummy_prefix (bool, default true)
"""

from __future__ import annotations

import pathlib
import struct
from collections.abc import Iterator

from msgspec import Struct

from herd.gateway.store.convert.errors import ConversionError

# SentencePiece's piece types have the same numbers as gguf.TokenType
# (NORMAL=1, UNKNOWN=2, CONTROL=3, USER_DEFINED=4, UNUSED=5, BYTE=6), so they pass through.
_NORMAL = 1
_MAX_TYPE = 6


class SpmModel(Struct):
    pieces: list[str]
    scores: list[float]
    types: list[int]
    add_dummy_prefix: bool = True
    model_type: int = 1  # UNIGRAM, the proto default


class _Malformed(Exception):
    pass


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf) or shift > 63:
            raise _Malformed("truncated varint")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def _fields(buf: bytes) -> Iterator[tuple[int, int, int | bytes]]:
    """Yields (field number, wire type, value) for one message; length-delimited values are bytes."""
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        field, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
            yield field, wire, value
        elif wire == 1:
            if pos + 8 > len(buf):
                raise _Malformed("truncated fixed64")
            yield field, wire, buf[pos:pos + 8]
            pos += 8
        elif wire == 2:
            n, pos = _varint(buf, pos)
            if pos + n > len(buf):
                raise _Malformed("truncated length-delimited field")
            yield field, wire, buf[pos:pos + n]
            pos += n
        elif wire == 5:
            if pos + 4 > len(buf):
                raise _Malformed("truncated fixed32")
            yield field, wire, buf[pos:pos + 4]
            pos += 4
        else:
            raise _Malformed(f"unsupported wire type {wire}")


def _piece(buf: bytes) -> tuple[str, float, int]:
    text, score, kind = None, 0.0, _NORMAL
    for field, wire, value in _fields(buf):
        if field == 1 and wire == 2:
            assert isinstance(value, bytes)
            text = value.decode("utf-8")
        elif field == 2 and wire == 5:
            assert isinstance(value, bytes)
            (score,) = struct.unpack("<f", value)
        elif field == 3 and wire == 0:
            assert isinstance(value, int)
            kind = value
    if text is None:
        raise _Malformed("piece without text")
    if not 1 <= kind <= _MAX_TYPE:
        raise _Malformed(f"piece {text!r} has unknown type {kind}")
    return text, score, kind


def _scalar_field(buf: bytes, number: int) -> int | None:
    found = None
    for field, wire, value in _fields(buf):
        if field == number and wire == 0:
            assert isinstance(value, int)
            found = value
    return found


def parse(data: bytes) -> SpmModel:
    try:
        model = SpmModel(pieces=[], scores=[], types=[])
        for field, wire, value in _fields(data):
            if wire != 2:
                continue
            assert isinstance(value, bytes)
            if field == 1:
                text, score, kind = _piece(value)
                model.pieces.append(text)
                model.scores.append(score)
                model.types.append(kind)
            elif field == 2:
                if (model_type := _scalar_field(value, 3)) is not None:
                    model.model_type = model_type
            elif field == 3:
                if (prefix := _scalar_field(value, 3)) is not None:
                    model.add_dummy_prefix = bool(prefix)
    except (_Malformed, UnicodeDecodeError) as e:
        raise ConversionError(f"tokenizer.model is not a SentencePiece model: {e}") from None
    if not model.pieces:
        raise ConversionError("tokenizer.model is not a SentencePiece model: it has no pieces")
    return model


def load(path: pathlib.Path) -> SpmModel:
    return parse(path.read_bytes())
