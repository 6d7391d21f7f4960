"""Tiny random-weight GGUF llama models with a real SentencePiece-style vocab.

Written with the ``gguf`` package in milliseconds, loadable by llama.cpp, so
tests can exercise the real inference stack without downloading a model.
"""

from __future__ import annotations

import pathlib

import numpy as np
from gguf import GGUFWriter, LlamaFileType, PoolingType, TokenType

__all__ = [
    "CHATML_TEMPLATE",
    "BOS_TOKEN",
    "EOS_TOKEN",
    "IM_START_TOKEN",
    "IM_END_TOKEN",
    "UNK_TOKEN",
    "WORDS",
    "build_vocab",
    "write_tiny_llama",
    "write_tiny_lora",
    "write_tiny_reranker",
]

CHATML_TEMPLATE: str = (
    "{% for message in messages %}"
    r"{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    r"{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

UNK_TOKEN = "<unk>"
BOS_TOKEN = "<s>"
EOS_TOKEN = "</s>"
IM_START_TOKEN = "<|im_start|>"
IM_END_TOKEN = "<|im_end|>"

# SentencePiece's word-boundary marker; llama.cpp maps spaces to it.
_SPACE = "\u2581"

WORDS: tuple[str, ...] = (
    "the", "of", "and", "to", "a", "in", "is", "it", "you", "that", "he", "was",
    "for", "on", "are", "with", "as", "I", "his", "they", "be", "at", "one",
    "have", "this", "from", "or", "had", "by", "hot", "word", "but", "what",
    "some", "we", "can", "out", "other", "were", "all", "there", "when", "up",
    "use", "your", "how", "said", "an", "each", "she", "which", "do", "their",
    "time", "if", "will", "way", "about", "many", "then", "them", "write",
    "would", "like", "so", "these", "her", "long", "make", "thing", "see",
    "him", "two", "has", "look", "more", "day", "could", "go", "come", "did",
    "number", "sound", "no", "most", "people", "my", "over", "know", "water",
    "than", "call", "first", "who", "may", "down", "side", "been", "now",
    "find", "hello", "world", "hi", "yes", "why", "sky", "blue", "red", "green",
    "cat", "dog", "sun", "moon", "tree", "light", "good", "new", "old", "small",
    "big", "model", "test", "story", "tell", "me", "short", "answer", "question",
    "Hello", "The", "What", "Why", "How", "Yes", "No", "It", "This", "You",
)

# Single characters so any ASCII text still tokenizes without byte fallback.
_CHARS: str = (
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
    ".,!?;:'\"-()[]{}<>/\\@#$%^&*_+=|~`"
)

# Tokens the model may emit: whole words and a little punctuation. Everything
# else gets a large negative logit so sampled text is readable, valid UTF-8
# and never stops early on an end-of-generation token.
_EMITTABLE_CHARS = frozenset(".,!?")

# Residual-stream dimension held constant in every token embedding; after the
# final RMS norm it acts as a bias input for the output projection.
_BIAS_DIM = 0
_BIAS_EMBED = 0.25
_SUPPRESS_WEIGHT = -4.0
_OUTPUT_STD = 0.12
_WEIGHT_STD = 0.02


def build_vocab(extra: tuple[str, ...] = ()) -> tuple[list[str], list[float], list[int], set[int]]:
    """Return (tokens, scores, token_types, emittable_ids) for the tiny vocab; `extra` pieces
    are appended as emittable normal tokens."""
    tokens: list[str] = []
    types: list[int] = []
    index: dict[str, int] = {}
    emittable: set[int] = set()

    def add(text: str, ttype: TokenType) -> int:
        if text in index:
            return index[text]
        index[text] = len(tokens)
        tokens.append(text)
        types.append(int(ttype))
        return index[text]

    add(UNK_TOKEN, TokenType.UNKNOWN)
    add(BOS_TOKEN, TokenType.CONTROL)
    add(EOS_TOKEN, TokenType.CONTROL)
    add(IM_START_TOKEN, TokenType.CONTROL)
    add(IM_END_TOKEN, TokenType.CONTROL)
    for b in range(256):
        add(f"<0x{b:02X}>", TokenType.BYTE)

    add(_SPACE, TokenType.NORMAL)
    for ch in _CHARS:
        tid = add(ch, TokenType.NORMAL)
        if ch in _EMITTABLE_CHARS:
            emittable.add(tid)
    # llama.cpp's SPM tokenizer only merges adjacent pieces whose concatenation
    # is itself in the vocab, so every prefix of "▁word" must exist for the
    # whole word to be reachable from single characters.
    for word in WORDS:
        piece = _SPACE + word
        for end in range(2, len(piece) + 1):
            add(piece[:end], TokenType.NORMAL)
        emittable.add(index[piece])
    for piece in extra:
        emittable.add(add(piece, TokenType.NORMAL))

    # Decreasing scores in id order, like real SentencePiece vocabs; the
    # merge order is irrelevant here because prefix chains never compete.
    scores = [0.0 if t != int(TokenType.NORMAL) else -float(i) for i, t in enumerate(types)]
    return tokens, scores, types, emittable


def _matrix(rng: np.random.Generator, rows: int, cols: int) -> np.ndarray:
    return rng.normal(0.0, _WEIGHT_STD, size=(rows, cols)).astype(np.float32)


def write_tiny_llama(
    path: pathlib.Path,
    *,
    seed: int = 0,
    chat_template: str | None = CHATML_TEMPLATE,
    context_length: int = 2048,
    embedding_length: int = 64,
    block_count: int = 2,
    head_count: int = 4,
    name: str = "tiny-llama",
    file_type_f32: bool = True,
    pooling_type: int | None = None,
    favoured: str | None = None,
) -> pathlib.Path:
    """Write a random-weight llama GGUF to ``path`` and return the path.

    Weights are deterministic in ``seed``. ``<|im_end|>`` and ``</s>`` are
    end-of-generation tokens but their logits are suppressed, so generation
    normally runs until ``num_predict``. ``favoured``: a piece added to the vocab with so
    large a logit that greedy sampling picks it whenever it is allowed (a grammar can forbid it).
    """
    path = pathlib.Path(path)
    if embedding_length % head_count:
        raise ValueError("embedding_length must be divisible by head_count")
    head_dim = embedding_length // head_count
    ff_length = 2 * embedding_length

    tokens, scores, types, emittable = build_vocab((favoured,) if favoured else ())
    n_vocab = len(tokens)
    rng = np.random.default_rng(seed)
    # Norm vectors and other 1-D tensors stay F32: llama.cpp expects that.
    mat_dtype = np.float32 if file_type_f32 else np.float16

    writer = GGUFWriter(path, "llama")
    writer.add_name(name)
    writer.add_file_type(LlamaFileType.ALL_F32 if file_type_f32 else LlamaFileType.MOSTLY_F16)
    writer.add_context_length(context_length)
    writer.add_embedding_length(embedding_length)
    writer.add_block_count(block_count)
    writer.add_feed_forward_length(ff_length)
    writer.add_head_count(head_count)
    writer.add_head_count_kv(head_count)
    writer.add_rope_dimension_count(head_dim)
    writer.add_rope_freq_base(10000.0)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_vocab_size(n_vocab)

    writer.add_tokenizer_model("llama")
    writer.add_token_list(tokens)
    writer.add_token_scores(scores)
    writer.add_token_types(types)
    writer.add_unk_token_id(tokens.index(UNK_TOKEN))
    writer.add_bos_token_id(tokens.index(BOS_TOKEN))
    writer.add_eos_token_id(tokens.index(EOS_TOKEN))
    # llama.cpp also auto-detects "<|im_end|>" by text, but the explicit key
    # makes it EOT (and thus end-of-generation) regardless of version.
    writer.add_eot_token_id(tokens.index(IM_END_TOKEN))
    writer.add_add_bos_token(True)
    writer.add_add_eos_token(False)
    # llama.cpp's SPM default, spelled out: "hello" tokenizes as "▁hello".
    writer.add_add_space_prefix(True)
    if chat_template is not None:
        writer.add_chat_template(chat_template)
    if pooling_type is not None:  # an embedding model (capability "embedding")
        writer.add_pooling_type(PoolingType(pooling_type))

    token_embd = _matrix(rng, n_vocab, embedding_length)
    token_embd[:, _BIAS_DIM] = _BIAS_EMBED
    output = rng.normal(0.0, _OUTPUT_STD, size=(n_vocab, embedding_length)).astype(np.float32)
    suppressed = np.ones(n_vocab, dtype=bool)
    suppressed[sorted(emittable)] = False
    output[:, _BIAS_DIM] = np.where(suppressed, _SUPPRESS_WEIGHT, 0.0)
    if favoured:
        output[tokens.index(favoured), _BIAS_DIM] = -4 * _SUPPRESS_WEIGHT

    ones = np.ones(embedding_length, dtype=np.float32)
    writer.add_tensor("token_embd.weight", token_embd.astype(mat_dtype))
    writer.add_tensor("output_norm.weight", ones)
    writer.add_tensor("output.weight", output.astype(mat_dtype))
    for i in range(block_count):
        blk = f"blk.{i}"
        writer.add_tensor(f"{blk}.attn_norm.weight", ones)
        writer.add_tensor(f"{blk}.attn_q.weight", _matrix(rng, embedding_length, embedding_length).astype(mat_dtype))
        writer.add_tensor(f"{blk}.attn_k.weight", _matrix(rng, head_count * head_dim, embedding_length).astype(mat_dtype))
        writer.add_tensor(f"{blk}.attn_v.weight", _matrix(rng, head_count * head_dim, embedding_length).astype(mat_dtype))
        writer.add_tensor(f"{blk}.attn_output.weight", _matrix(rng, embedding_length, embedding_length).astype(mat_dtype))
        writer.add_tensor(f"{blk}.ffn_norm.weight", ones)
        writer.add_tensor(f"{blk}.ffn_gate.weight", _matrix(rng, ff_length, embedding_length).astype(mat_dtype))
        writer.add_tensor(f"{blk}.ffn_up.weight", _matrix(rng, ff_length, embedding_length).astype(mat_dtype))
        writer.add_tensor(f"{blk}.ffn_down.weight", _matrix(rng, embedding_length, ff_length).astype(mat_dtype))

    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def write_tiny_lora(path: pathlib.Path, *, seed: int = 7, embedding_length: int = 64,
                    block_count: int = 2, rank: int = 4, alpha: float = 8.0) -> pathlib.Path:
    """A LoRA adapter GGUF for write_tiny_llama's model (same dims): strong random deltas on
    every block's attn_output so that applying it visibly changes what the model writes."""
    rng = np.random.default_rng(seed)
    writer = GGUFWriter(str(path), "llama")
    writer.add_type("adapter")
    writer.add_string("adapter.type", "lora")
    writer.add_float32("adapter.lora.alpha", alpha)
    for i in range(block_count):
        # ggml shapes: lora_a [in, rank], lora_b [rank, out]; numpy's are reversed.
        a = rng.normal(0.0, 1.0, size=(rank, embedding_length)).astype(np.float32)
        b = rng.normal(0.0, 1.0, size=(embedding_length, rank)).astype(np.float32)
        writer.add_tensor(f"blk.{i}.attn_output.weight.lora_a", a)
        writer.add_tensor(f"blk.{i}.attn_output.weight.lora_b", b)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


RERANK_SPECIALS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


def write_tiny_reranker(path: pathlib.Path, *, seed: int = 3, embedding_length: int = 32,
                        block_count: int = 2, head_count: int = 2,
                        context_length: int = 512,
                        rerank_template: str | None = None,
                        pooling: PoolingType = PoolingType.RANK) -> pathlib.Path:
    """A random-weight BERT cross-encoder GGUF with rank pooling, as llama.cpp loads rerankers
    (bge-reranker, jina-reranker): the [CLS] state through `cls` (dense + tanh) and
    `cls.output` (one logit) is the relevance score. WordPiece vocab: every word of WORDS and
    every character, as a word start (`▁x`) and as a continuation (`x`). `rerank_template`:
    a `tokenizer.chat_template.rerank` with `{query}` and `{document}`, as Qwen3 rerankers ship."""
    rng = np.random.default_rng(seed)
    n, ff = embedding_length, 2 * embedding_length
    tokens = list(RERANK_SPECIALS)
    types = [int(TokenType.CONTROL)] * len(tokens)
    for piece in ([_SPACE + w.lower() for w in WORDS] + [_SPACE + c for c in _CHARS.lower()]
                  + list(_CHARS.lower())):
        if piece not in tokens:
            tokens.append(piece)
            types.append(int(TokenType.NORMAL))
    w = GGUFWriter(str(path), "bert")
    w.add_name("tiny-reranker")
    w.add_file_type(LlamaFileType.ALL_F32)
    w.add_context_length(context_length)
    w.add_embedding_length(n)
    w.add_feed_forward_length(ff)
    w.add_block_count(block_count)
    w.add_head_count(head_count)
    w.add_layer_norm_eps(1e-12)
    w.add_causal_attention(False)
    w.add_pooling_type(pooling)
    w.add_classifier_output_labels(["relevance"])
    w.add_tokenizer_model("bert")
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_type_count(2)
    w.add_pad_token_id(0)
    w.add_unk_token_id(1)
    w.add_bos_token_id(2)  # [CLS]: llama.cpp puts the BOS first, and rank pooling reads it
    w.add_sep_token_id(3)
    w.add_mask_token_id(4)
    w.add_add_bos_token(True)
    w.add_add_sep_token(True)
    w.add_add_eos_token(False)
    if rerank_template is not None:
        w.add_string("tokenizer.chat_template.rerank", rerank_template)

    def mat(rows: int, cols: int, std: float = 0.2) -> np.ndarray:
        return rng.normal(0.0, std, size=(rows, cols)).astype(np.float32)

    def vec(size: int, value: float | None = None) -> np.ndarray:
        if value is not None:
            return np.full(size, value, dtype=np.float32)
        return rng.normal(0.0, 0.1, size=size).astype(np.float32)

    w.add_tensor("token_embd.weight", mat(len(tokens), n, 1.0))
    w.add_tensor("token_types.weight", mat(2, n, 0.1))
    w.add_tensor("position_embd.weight", mat(context_length, n, 0.1))
    w.add_tensor("token_embd_norm.weight", vec(n, 1.0))
    w.add_tensor("token_embd_norm.bias", vec(n, 0.0))
    for i in range(block_count):
        blk = f"blk.{i}"
        for name in ("attn_q", "attn_k", "attn_v", "attn_output"):
            w.add_tensor(f"{blk}.{name}.weight", mat(n, n))
            w.add_tensor(f"{blk}.{name}.bias", vec(n))
        w.add_tensor(f"{blk}.attn_output_norm.weight", vec(n, 1.0))
        w.add_tensor(f"{blk}.attn_output_norm.bias", vec(n, 0.0))
        w.add_tensor(f"{blk}.ffn_up.weight", mat(ff, n))
        w.add_tensor(f"{blk}.ffn_up.bias", vec(ff))
        w.add_tensor(f"{blk}.ffn_down.weight", mat(n, ff))
        w.add_tensor(f"{blk}.ffn_down.bias", vec(n))
        w.add_tensor(f"{blk}.layer_output_norm.weight", vec(n, 1.0))
        w.add_tensor(f"{blk}.layer_output_norm.bias", vec(n, 0.0))
    w.add_tensor("cls.weight", mat(n, n, 0.5))
    w.add_tensor("cls.bias", vec(n))
    w.add_tensor("cls.output.weight", mat(1, n, 1.0))
    w.add_tensor("cls.output.bias", vec(1, 0.0))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path
