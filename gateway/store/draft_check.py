"""Whether a draft model can draft for a model: the checks of llama.cpp's
common_speculative_are_compatible (common/speculative.cpp), read from the two GGUF headers at
create, so a mismatched pair is a 400 then rather than a runner that cannot load later."""

from __future__ import annotations

from typing import Any

from herd.gateway.errors import BadRequest
from herd.gateway.store.gguf_meta import NotGGUF, read_metadata

# llama.cpp allows vocabularies this many entries apart (added tokens at the end) and compares
# the token texts from this id on (the first ids are special tokens that may differ).
MAX_VOCAB_DIFFERENCE = 128
CHECK_FROM_TOKEN = 5
_SAME_KEYS = ("tokenizer.ggml.model", "tokenizer.ggml.bos_token_id",
              "tokenizer.ggml.eos_token_id", "tokenizer.ggml.add_bos_token")


class IncompatibleDraft(BadRequest):
    pass


def _tokenizer(path: str, what: str) -> dict[str, Any]:
    try:
        meta = read_metadata(path, keep_arrays=True)[0]
    except NotGGUF:
        raise IncompatibleDraft(f"the {what} is not a GGUF file") from None
    if not isinstance(meta.get("tokenizer.ggml.tokens"), list):
        raise IncompatibleDraft(f"the {what} has no vocabulary")
    return meta


def check_draft(model_path: str, draft_path: str) -> None:
    """Raises IncompatibleDraft (a 400) unless the draft's tokens mean the model's tokens."""
    model, draft = _tokenizer(model_path, "model"), _tokenizer(draft_path, "draft model")
    for key in _SAME_KEYS:
        if model.get(key) != draft.get(key):
            raise IncompatibleDraft(f"the draft model's vocabulary does not match the model's: "
                                    f"{key} is {draft.get(key)!r}, not {model.get(key)!r}")
    tokens, draft_tokens = model["tokenizer.ggml.tokens"], draft["tokenizer.ggml.tokens"]
    if abs(len(tokens) - len(draft_tokens)) > MAX_VOCAB_DIFFERENCE:
        raise IncompatibleDraft(f"the draft model's vocabulary does not match the model's: "
                                f"{len(draft_tokens)} tokens, not {len(tokens)}")
    for i in range(CHECK_FROM_TOKEN, min(len(tokens), len(draft_tokens))):
        if tokens[i] != draft_tokens[i]:
            raise IncompatibleDraft(f"the draft model's vocabulary does not match the model's: "
                                    f"token {i} is {draft_tokens[i]!r}, not {tokens[i]!r}")
