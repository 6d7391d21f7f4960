"""Turns a Hugging Face tokenizer (tokenizer.json / tokenizer.model / vocab.txt) into the
tokenizer.ggml.* keys llama.cpp reads.

Three shapes are handled, picked from the files rather than the architecture:
  * SentencePiece tokenizer.model (gemma3, llama2)       -> model "llama": pieces, scores, types
  * byte-level BPE tokenizer.json (llama3, qwen2)        -> model "gpt2": tokens, types, merges, pre
  * WordPiece tokenizer.json or vocab.txt (bert)         -> model "bert": phantom-space tokens, types
"""

from __future__ import annotations

import json
import logging
import pathlib
from typing import Any

import gguf
from msgspec import Struct

import herd.gateway.store.convert.spm as spm
from herd.gateway.store.convert.errors import ConversionError

log = logging.getLogger("herd.convert")

# llama.cpp has no regex engine for arbitrary pre-tokenizers; it knows a fixed list by name.
# These are the split regexes as they appear in tokenizer.json, mapped to those names.
_PRE_BY_REGEX: dict[str, str] = {
    # Llama 3 / 3.1 / 3.2
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+": "llama-bpe",
    # Qwen2 / Qwen2.5 (single digits)
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+": "qwen2",
    # GPT-2's own pattern spelled out in a Split
    r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+": "gpt-2",
}

_SPECIAL_TYPES = ("bos", "eos", "unk", "sep", "pad", "cls", "mask")
_SPM_SPACE = "\u2581"


class Vocab(Struct):
    model: str  # tokenizer.ggml.model
    pre: str
    tokens: list[str]
    types: list[int]
    scores: list[float] | None = None
    add_space_prefix: bool | None = None
    token_type_count: int | None = None  # bert's segment embeddings


def _read_json(path: pathlib.Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError as e:
        raise ConversionError(f"{path.name} is not valid JSON: {e}") from None


def _tokenizer_config(src: pathlib.Path) -> dict[str, Any]:
    path = src / "tokenizer_config.json"
    cfg = _read_json(path) if path.is_file() else {}
    return cfg if isinstance(cfg, dict) else {}


def looks_special(text: str) -> bool:
    """Added tokens some models forget to flag as special (same heuristic as llama.cpp's converter)."""
    return (text in ("<pad>", "<mask>", "<2mass>", "[@BOS@]")
            or (text.startswith("<|") and text.endswith("|>"))
            or (text.startswith("<unused") and text.endswith(">")))


def _pad(tokens: list[str], types: list[int], scores: list[float] | None, n_rows: int) -> None:
    """Fills ids the tokenizer never assigns up to the embedding's row count, since llama.cpp
    requires one token per embedding row (configs often round vocab_size up)."""
    if len(tokens) > n_rows:
        raise ConversionError(
            f"the tokenizer has {len(tokens)} tokens but the embedding matrix has only {n_rows} rows")
    for i in range(len(tokens), n_rows):
        tokens.append(f"[PAD{i}]")
        types.append(gguf.TokenType.UNUSED)
        if scores is not None:
            scores.append(-1000.0)


def _check_unique(tokens: list[str]) -> None:
    # llama.cpp asserts token texts are unique when it builds its text -> id map.
    seen: set[str] = set()
    for tok in tokens:
        if tok in seen:
            raise ConversionError(f"the tokenizer defines token {tok!r} twice")
        seen.add(tok)


def _from_id_map(vocab: dict[str, int], added: list[dict[str, Any]]) -> tuple[list[str], list[int]]:
    """Token texts and types from a text -> id vocabulary plus tokenizer.json's added_tokens."""
    ids = list(vocab.values()) + [int(a["id"]) for a in added if "id" in a]
    size = max(ids) + 1 if ids else 0
    tokens: list[str | None] = [None] * size
    types = [int(gguf.TokenType.NORMAL)] * size
    for text, idx in vocab.items():
        tokens[idx] = text
    for a in added:
        idx, text = int(a["id"]), str(a["content"])
        tokens[idx] = text
        special = bool(a.get("special")) or looks_special(text)
        types[idx] = gguf.TokenType.CONTROL if special else gguf.TokenType.USER_DEFINED
    out: list[str] = []
    for i, tok in enumerate(tokens):
        if tok is None:
            out.append(f"[PAD{i}]")  # an id gap; llama.cpp needs a unique text for every id
            types[i] = gguf.TokenType.UNUSED
        else:
            out.append(tok)
    return out, types


def _bpe_pre(tok_json: dict[str, Any], default_pre: str) -> str:
    pre = tok_json.get("pre_tokenizer") or {}
    steps = pre.get("pretokenizers", [pre]) if pre.get("type") == "Sequence" else [pre]
    for step in steps:
        if step.get("type") == "Split":
            regex = (step.get("pattern") or {}).get("Regex")
            if regex in _PRE_BY_REGEX:
                return _PRE_BY_REGEX[regex]
            log.warning("unknown BPE pre-tokenizer regex %r; using %r", regex, default_pre)
            return default_pre
    if any(s.get("type") == "ByteLevel" and s.get("use_regex", True) for s in steps):
        return "gpt-2"
    log.warning("no BPE pre-tokenizer split found; using %r", default_pre)
    return default_pre


def _is_byte_level(tok_json: dict[str, Any]) -> bool:
    for part in ("pre_tokenizer", "decoder"):
        node = tok_json.get(part) or {}
        nodes = node.get("pretokenizers") or node.get("decoders") or [node]
        if any(n.get("type") == "ByteLevel" for n in nodes):
            return True
    return False


def _bpe_vocab(tok_json: dict[str, Any], default_pre: str, n_rows: int) -> Vocab:
    model = tok_json["model"]
    tokens, types = _from_id_map(model.get("vocab") or {}, tok_json.get("added_tokens") or [])
    _pad(tokens, types, None, n_rows)
    return Vocab(model="gpt2", pre=_bpe_pre(tok_json, default_pre), tokens=tokens, types=types)


def _phantom(tokens: list[str], types: list[int]) -> list[str]:
    """llama.cpp's WordPiece marks word starts with U+2581 instead of marking continuations
    with '##' (the same rewrite llama.cpp's converter does); control tokens stay as they are."""
    out = []
    for tok, kind in zip(tokens, types, strict=True):
        if kind == gguf.TokenType.CONTROL or kind == gguf.TokenType.UNUSED:
            out.append(tok)
        elif tok.startswith("##"):
            out.append(tok[2:])
        else:
            out.append(_SPM_SPACE + tok)
    return out


def _wordpiece_vocab(src: pathlib.Path, tok_json: dict[str, Any] | None, n_rows: int,
                     type_vocab_size: int) -> Vocab:
    if tok_json is not None:
        vocab = tok_json["model"].get("vocab") or {}
        added = tok_json.get("added_tokens") or []
    else:
        lines = (src / "vocab.txt").read_text(encoding="utf-8").splitlines()
        vocab = {line: i for i, line in enumerate(lines) if line}
        # vocab.txt has no flags: the tokens tokenizer_config.json names are the special ones.
        cfg = _tokenizer_config(src)
        specials = {cfg.get(f"{t}_token") for t in _SPECIAL_TYPES}
        added = [{"id": vocab[t], "content": t, "special": True} for t in specials if t in vocab]
    tokens, types = _from_id_map(vocab, added)
    _pad(tokens, types, None, n_rows)
    return Vocab(model="bert", pre="default", tokens=_phantom(tokens, types), types=types,
                 token_type_count=type_vocab_size)


def _spm_vocab(src: pathlib.Path, model: spm.SpmModel, n_rows: int) -> Vocab:
    tokens, scores, types = list(model.pieces), list(model.scores), list(model.types)
    if len(tokens) > n_rows:
        raise ConversionError(
            f"tokenizer.model has {len(tokens)} pieces but the embedding matrix has only {n_rows} rows")
    _pad(tokens, types, scores, n_rows)
    # Tokens added after SentencePiece training live only in the HF files; they override the
    # placeholders at their ids, as llama.cpp's converter does.
    overrides: list[tuple[int, str, bool]] = []
    added_file = src / "added_tokens.json"
    if added_file.is_file():
        overrides += [(int(i), str(t), False) for t, i in _read_json(added_file).items()]
    decoder = _tokenizer_config(src).get("added_tokens_decoder") or {}
    overrides += [(int(i), str(d["content"]), bool(d.get("special"))) for i, d in decoder.items()]
    for idx, text, special in overrides:
        if not 0 <= idx < n_rows:
            log.warning("ignoring added token %r: id %d is out of range", text, idx)
            continue
        if special or looks_special(text):
            types[idx] = gguf.TokenType.CONTROL
        else:
            text = text.replace(_SPM_SPACE, " ")  # llama.cpp matches user-defined tokens as raw text
            types[idx] = gguf.TokenType.USER_DEFINED
        tokens[idx], scores[idx] = text, -1000.0
    return Vocab(model="llama", pre="default", tokens=tokens, types=types, scores=scores,
                 add_space_prefix=model.add_dummy_prefix)


def build_vocab(src: pathlib.Path, *, default_pre: str, n_rows: int, wordpiece: bool = False,
                type_vocab_size: int = 2) -> Vocab:
    """The model's vocabulary padded to n_rows tokens (the token embedding's row count)."""
    tok_path = src / "tokenizer.json"
    tok_json = _read_json(tok_path) if tok_path.is_file() else None
    if tok_json is not None and not isinstance(tok_json.get("model"), dict):
        raise ConversionError("tokenizer.json has no 'model' section")
    if wordpiece:
        if tok_json is not None and tok_json["model"].get("type") != "WordPiece":
            raise ConversionError(
                f"expected a WordPiece tokenizer, tokenizer.json has {tok_json['model'].get('type')!r}")
        if tok_json is None and not (src / "vocab.txt").is_file():
            raise ConversionError("missing tokenizer: need tokenizer.json or vocab.txt")
        vocab = _wordpiece_vocab(src, tok_json, n_rows, type_vocab_size)
    elif (src / "tokenizer.model").is_file() and _is_protobuf(src / "tokenizer.model"):
        vocab = _spm_vocab(src, spm.load(src / "tokenizer.model"), n_rows)
    elif tok_json is None:
        raise ConversionError("missing tokenizer: need tokenizer.json or tokenizer.model")
    elif tok_json["model"].get("type") == "BPE" and _is_byte_level(tok_json):
        vocab = _bpe_vocab(tok_json, default_pre, n_rows)
    else:
        kind = tok_json["model"].get("type")
        raise ConversionError(
            f"unsupported tokenizer.json model {kind!r} without ByteLevel pre-tokenization; "
            "SentencePiece-based models need their tokenizer.model file")
    _check_unique(vocab.tokens)
    return vocab


def _is_protobuf(path: pathlib.Path) -> bool:
    """Llama 3 ships a tiktoken text file under the same name; that one is not SentencePiece."""
    with path.open("rb") as f:
        head = f.read(1)
    return head == b"\x0a"  # field 1 (pieces), wire type 2


def special_vocab(src: pathlib.Path, vocab: Vocab) -> gguf.SpecialVocab:
    """Special token ids, add_*_token flags, merges and the chat template.

    gguf.SpecialVocab resolves special tokens through tokenizer.json's added_tokens and
    config.json's *_token_id; a model that has only tokenizer.model (or whose config lists
    several eos ids) would come out without them, so the texts from tokenizer_config.json are
    also looked up in the token list we built.
    """
    sv = gguf.SpecialVocab(src, load_merges=vocab.model == "gpt2", n_vocab=len(vocab.tokens))
    if vocab.model == "gpt2" and not sv.merges:
        raise ConversionError("tokenizer.json is a BPE tokenizer without merges")
    cfg = _tokenizer_config(src)
    ids = {tok: i for i, tok in enumerate(vocab.tokens)}
    for typ in _SPECIAL_TYPES:
        if typ in sv.special_token_ids:
            continue
        entry = cfg.get(f"{typ}_token")
        text = entry.get("content") if isinstance(entry, dict) else entry
        if isinstance(text, str) and text in ids:
            sv.special_token_ids[typ] = ids[text]
    # BERT tokenizers name [CLS]/[SEP] but no bos/eos; llama.cpp's WordPiece uses bos/eos for them.
    for typ, alias in (("bos", "cls"), ("eos", "sep")):
        if typ not in sv.special_token_ids and alias in sv.special_token_ids:
            sv.special_token_ids[typ] = sv.special_token_ids[alias]
    if "eos" not in sv.special_token_ids:
        config_path = src / "config.json"
        eos = _read_json(config_path).get("eos_token_id") if config_path.is_file() else None
        if isinstance(eos, list) and eos and isinstance(eos[0], int):
            sv.special_token_ids["eos"] = eos[0]
    # gguf has keys for most special types but not all (cls has none); drop the rest quietly.
    for typ in [t for t in sv.special_token_ids if not hasattr(gguf.GGUFWriter, f"add_{t}_token_id")]:
        del sv.special_token_ids[typ]
    return sv


def write_vocab(writer: gguf.GGUFWriter, src: pathlib.Path, vocab: Vocab) -> None:
    writer.add_tokenizer_model(vocab.model)
    writer.add_tokenizer_pre(vocab.pre)
    writer.add_token_list(vocab.tokens)
    writer.add_token_types(vocab.types)
    if vocab.scores is not None:
        writer.add_token_scores(vocab.scores)
    if vocab.token_type_count is not None:
        writer.add_token_type_count(vocab.token_type_count)
    if vocab.add_space_prefix is not None:
        writer.add_add_space_prefix(vocab.add_space_prefix)
    special_vocab(src, vocab).add_to_gguf(writer, quiet=True)


__all__ = ["Vocab", "build_vocab", "looks_special", "special_vocab", "write_vocab"]
