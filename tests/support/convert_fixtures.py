"""Tiny random-weight Hugging Face checkpoints (llama, qwen2, gemma3) for the converter tests,
plus a numpy forward pass with transformers' semantics to check llama.cpp's logits against.

Tokenizers are trained for real: a byte-level BPE tokenizer.json with the `tokenizers`
package (llama3 / qwen2 pre-tokenizer regexes), and a SentencePiece tokenizer.model with
`sentencepiece` (gemma3). Weights are written with the `safetensors` package; llama's in BF16
through its dtype-agnostic serializer, since numpy has no bfloat16.
"""

from __future__ import annotations

import io
import json
import math
import pathlib
from typing import Any

import numpy as np
import safetensors
import safetensors.numpy
import sentencepiece
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers

HIDDEN, LAYERS, HEADS, KV_HEADS, HEAD_DIM, FFN = 64, 2, 4, 2, 16, 128

CORPUS: list[str] = [
    "The quick brown fox jumps over the lazy dog.",
    "Hello world! This is a tiny model used to test the converter.",
    "Models turn text into vectors, and vectors back into text.",
    "What is the capital city of France? Paris, of course.",
    "I love eating fresh strawberries in the summer, 12345 times.",
] * 20

LLAMA3_REGEX = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|"
                r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN2_REGEX = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}|"
               r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
CHATML = ("{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\n' + m['content'] + "
          "'<|im_end|>\n' }}{% endfor %}")


def _bpe_tokenizer(regex: str, specials: list[str], ignore_merges: bool, bos: str | None) -> Tokenizer:
    tok = Tokenizer(models.BPE(ignore_merges=ignore_merges))
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(regex), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=specials, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(CORPUS, trainer)
    if bos is not None:
        tok.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, tok.token_to_id(bos))])
    return tok


def _write_json(path: pathlib.Path, obj: Any) -> None:
    path.write_text(json.dumps(obj, indent=1), encoding="utf-8")


def _rng_weights(names_shapes: dict[str, tuple[int, ...]], seed: int,
                 norm_mean: float = 1.0) -> dict[str, np.ndarray]:
    """Gaussian weights; Q/K are large so attention is peaked and any rotary mix-up shows in the
    logits, and values are rounded to float16 so the F16 GGUF holds exactly these numbers."""
    rng = np.random.default_rng(seed)
    out = {}
    for name, shape in names_shapes.items():
        if name.endswith("norm.weight"):
            arr = rng.normal(norm_mean, 0.1, shape)
        elif "q_proj" in name or "k_proj" in name:
            arr = rng.normal(0, 0.35, shape)
        else:
            arr = rng.normal(0, 0.12, shape)
        out[name] = arr.astype(np.float16).astype(np.float32)
    return out


def _decoder_shapes(vocab: int, bias: bool, gemma: bool, tied: bool) -> dict[str, tuple[int, ...]]:
    q, kv = HEADS * HEAD_DIM, KV_HEADS * HEAD_DIM
    shapes: dict[str, tuple[int, ...]] = {
        "model.embed_tokens.weight": (vocab, HIDDEN), "model.norm.weight": (HIDDEN,)}
    if not tied:
        shapes["lm_head.weight"] = (vocab, HIDDEN)
    for i in range(LAYERS):
        p = f"model.layers.{i}."
        shapes.update({
            p + "input_layernorm.weight": (HIDDEN,), p + "post_attention_layernorm.weight": (HIDDEN,),
            p + "self_attn.q_proj.weight": (q, HIDDEN), p + "self_attn.k_proj.weight": (kv, HIDDEN),
            p + "self_attn.v_proj.weight": (kv, HIDDEN), p + "self_attn.o_proj.weight": (HIDDEN, q),
            p + "mlp.gate_proj.weight": (FFN, HIDDEN), p + "mlp.up_proj.weight": (FFN, HIDDEN),
            p + "mlp.down_proj.weight": (HIDDEN, FFN),
        })
        if bias:
            shapes.update({p + "self_attn.q_proj.bias": (q,), p + "self_attn.k_proj.bias": (kv,),
                           p + "self_attn.v_proj.bias": (kv,)})
        if gemma:
            shapes.update({p + "pre_feedforward_layernorm.weight": (HIDDEN,),
                           p + "post_feedforward_layernorm.weight": (HIDDEN,),
                           p + "self_attn.q_norm.weight": (HEAD_DIM,),
                           p + "self_attn.k_norm.weight": (HEAD_DIM,)})
    return shapes


def _save_bf16(path: pathlib.Path, tensors: dict[str, np.ndarray]) -> None:
    """safetensors' own serializer with raw BF16 words (the top 16 bits of each float32)."""
    keep_alive = []  # TensorSpec holds raw pointers: the buffers must outlive serialize_file
    specs = {}
    for name, arr in tensors.items():
        raw = np.ascontiguousarray((np.ascontiguousarray(arr, dtype=np.float32).view(np.uint32) >> 16)
                                   .astype("<u2"))
        keep_alive.append(raw)
        specs[name] = safetensors.TensorSpec(dtype="bfloat16", shape=list(arr.shape),
                                             data_ptr=raw.ctypes.data, data_len=raw.nbytes)
    safetensors.serialize_file(specs, str(path), metadata={"format": "pt"})


def _to_bf16_exact(tensors: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {k: (v.view(np.uint32) & 0xFFFF0000).view(np.float32) for k, v in tensors.items()}


def write_llama(root: pathlib.Path) -> tuple[pathlib.Path, dict[str, np.ndarray]]:
    """Llama 3 style: BF16 weights in two shards with an index, llama-bpe tokenizer, untied head."""
    d = root / "llama"
    d.mkdir()
    bos, eos = "<|begin_of_text|>", "<|end_of_text|>"
    tok = _bpe_tokenizer(LLAMA3_REGEX, [bos, eos, "<|eot_id|>"], ignore_merges=True, bos=bos)
    tok.save(str(d / "tokenizer.json"))
    vocab = tok.get_vocab_size()
    _write_json(d / "tokenizer_config.json",
                {"bos_token": bos, "eos_token": eos, "chat_template": CHATML})
    _write_json(d / "config.json", {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": HIDDEN,
        "intermediate_size": FFN, "num_hidden_layers": LAYERS, "num_attention_heads": HEADS,
        "num_key_value_heads": KV_HEADS, "max_position_embeddings": 256, "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0, "vocab_size": vocab, "tie_word_embeddings": False,
        # Llama 3.1+'s frequency-dependent scaling (original context shrunk so it bites here).
        "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                         "high_freq_factor": 4.0, "original_max_position_embeddings": 64},
        "bos_token_id": tok.token_to_id(bos), "eos_token_id": tok.token_to_id(eos),
        "_name_or_path": "tests/tiny-llama",
    })
    weights = _to_bf16_exact(_rng_weights(_decoder_shapes(vocab, False, False, False), seed=1))
    names = sorted(weights)
    half = len(names) // 2
    shards = {"model-00001-of-00002.safetensors": names[:half],
              "model-00002-of-00002.safetensors": names[half:]}
    for fname, part in shards.items():
        _save_bf16(d / fname, {n: weights[n] for n in part})
    _write_json(d / "model.safetensors.index.json",
                {"metadata": {}, "weight_map": {n: f for f, part in shards.items() for n in part}})
    return d, weights


def write_qwen2(root: pathlib.Path) -> tuple[pathlib.Path, dict[str, np.ndarray]]:
    """Qwen2 style: F16 weights, q/k/v biases, tied embeddings, vocab padded past the tokenizer."""
    d = root / "qwen2"
    d.mkdir()
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tok = _bpe_tokenizer(QWEN2_REGEX, specials, ignore_merges=False, bos=None)
    tok.save(str(d / "tokenizer.json"))
    vocab = tok.get_vocab_size() + 13  # like Qwen's 151936 > 151665: rows no token uses
    _write_json(d / "tokenizer_config.json", {"bos_token": None, "eos_token": "<|im_end|>",
                                              "pad_token": "<|endoftext|>", "chat_template": CHATML})
    _write_json(d / "config.json", {
        "architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "hidden_size": HIDDEN,
        "intermediate_size": FFN, "num_hidden_layers": LAYERS, "num_attention_heads": HEADS,
        "num_key_value_heads": KV_HEADS, "max_position_embeddings": 256, "rms_norm_eps": 1e-6,
        "rope_theta": 1000000.0, "vocab_size": vocab, "tie_word_embeddings": True,
        "eos_token_id": tok.token_to_id("<|im_end|>"),
    })
    weights = _rng_weights(_decoder_shapes(vocab, True, False, True), seed=2)
    safetensors.numpy.save_file({k: v.astype(np.float16) for k, v in weights.items()},
                                str(d / "model.safetensors"))
    return d, weights


def _train_spm() -> bytes:
    model = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(CORPUS), model_writer=model, vocab_size=400, model_type="bpe",
        # Gemma's own tokenizer.model settings: no dummy prefix, whitespace kept, no NFKC.
        byte_fallback=True, add_dummy_prefix=False, remove_extra_whitespaces=False,
        normalization_rule_name="identity", character_coverage=1.0, pad_id=0, eos_id=1,
        bos_id=2, unk_id=3, pad_piece="<pad>", eos_piece="<eos>", bos_piece="<bos>", unk_piece="<unk>",
        user_defined_symbols=["<start_of_turn>", "<end_of_turn>"], minloglevel=2)
    return model.getvalue()


def write_gemma3(root: pathlib.Path) -> tuple[pathlib.Path, dict[str, np.ndarray]]:
    """Gemma3 text style: F32 weights, SentencePiece tokenizer.model, per-layer sliding window."""
    d = root / "gemma3"
    d.mkdir()
    (d / "tokenizer.model").write_bytes(_train_spm())
    sp = sentencepiece.SentencePieceProcessor(model_file=str(d / "tokenizer.model"))
    vocab = sp.get_piece_size()
    _write_json(d / "tokenizer_config.json", {
        "bos_token": "<bos>", "eos_token": "<eos>", "pad_token": "<pad>", "unk_token": "<unk>",
        "add_bos_token": True, "add_eos_token": False, "chat_template": CHATML,
        "added_tokens_decoder": {str(sp.piece_to_id(t)): {"content": t, "special": True}
                                 for t in ("<start_of_turn>", "<end_of_turn>")},
    })
    _write_json(d / "config.json", {
        "architectures": ["Gemma3ForCausalLM"], "model_type": "gemma3_text", "hidden_size": HIDDEN,
        "intermediate_size": FFN, "num_hidden_layers": LAYERS, "num_attention_heads": HEADS,
        "num_key_value_heads": KV_HEADS, "head_dim": HEAD_DIM, "max_position_embeddings": 512,
        "rms_norm_eps": 1e-6, "rope_theta": 1000000.0, "rope_local_base_freq": 10000.0,
        "sliding_window": 4, "layer_types": ["sliding_attention", "full_attention"],
        "query_pre_attn_scalar": HEAD_DIM, "final_logit_softcapping": None,
        "attn_logit_softcapping": None, "vocab_size": vocab, "bos_token_id": 2, "eos_token_id": [1, 106],
        "pad_token_id": 0, "hidden_activation": "gelu_pytorch_tanh",
    })
    # Gemma stores norm weights as offsets from 1 (its RMSNorm multiplies by 1 + weight).
    weights = _rng_weights(_decoder_shapes(vocab, False, True, True), seed=3, norm_mean=0.0)
    safetensors.numpy.save_file(weights, str(d / "model.safetensors"))
    return d, weights


def write_gemma3_multimodal(root: pathlib.Path) -> tuple[pathlib.Path, dict[str, np.ndarray]]:
    """The same tiny gemma3 laid out like gemma-3-4b-it: Gemma3ForConditionalGeneration with a
    nested text_config (defaults omitted), model.language_model.* names and a vision tower.
    Returns the text weights under their Gemma3ForCausalLM names, for reference_logits."""
    d, weights = write_gemma3(root)
    text_cfg = json.loads((d / "config.json").read_text())
    for key in ("architectures", "max_position_embeddings", "rope_theta", "rope_local_base_freq"):
        text_cfg.pop(key)  # equal to Gemma3TextConfig's defaults (or irrelevant), so configs omit them
    _write_json(d / "config.json", {
        "architectures": ["Gemma3ForConditionalGeneration"], "model_type": "gemma3",
        "text_config": text_cfg,
        "vision_config": {"model_type": "siglip_vision_model", "hidden_size": 32},
        "image_token_index": 262144, "eos_token_id": [1, 106],
    })
    rng = np.random.default_rng(4)
    renamed = {"model.language_model." + k.removeprefix("model."): v for k, v in weights.items()}
    renamed["model.vision_tower.vision_model.embeddings.patch_embedding.weight"] = (
        rng.normal(0, 0.1, (32, 3, 4, 4)).astype(np.float32))
    renamed["model.vision_tower.vision_model.post_layernorm.weight"] = np.ones(32, np.float32)
    renamed["model.multi_modal_projector.mm_input_projection_weight"] = (
        rng.normal(0, 0.1, (32, HIDDEN)).astype(np.float32))
    safetensors.numpy.save_file(renamed, str(d / "model.safetensors"))
    return d, weights


# --- numpy reference forward pass (transformers semantics) -------------------------------------

def _rms(x: np.ndarray, w: np.ndarray, eps: float, gemma: bool) -> np.ndarray:
    y = x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps)
    return y * ((1.0 + w) if gemma else w)


def _inv_freq(theta: float, scaling: dict[str, Any] | None) -> np.ndarray:
    """Rotary inverse frequencies, with transformers' _compute_llama3_parameters when asked."""
    inv = 1.0 / theta ** (np.arange(0, HEAD_DIM, 2, dtype=np.float64) / HEAD_DIM)
    if not scaling or scaling.get("rope_type") != "llama3":
        return inv
    factor, low, high = scaling["factor"], scaling["low_freq_factor"], scaling["high_freq_factor"]
    old = scaling["original_max_position_embeddings"]
    wavelen = 2 * math.pi / inv
    smooth = (old / wavelen - low) / (high - low)
    mid = (1 - smooth) * inv / factor + smooth * inv
    return np.where(wavelen < old / high, inv, np.where(wavelen > old / low, inv / factor, mid))


def _rope(x: np.ndarray, inv: np.ndarray) -> np.ndarray:
    """transformers' rotate_half rotary embedding; x is (T, heads, head_dim)."""
    t, _, hd = x.shape
    ang = np.arange(t)[:, None] * inv[None, :]
    cos = np.concatenate([np.cos(ang)] * 2, axis=-1)[:, None, :]
    sin = np.concatenate([np.sin(ang)] * 2, axis=-1)[:, None, :]
    rot = np.concatenate([-x[..., hd // 2:], x[..., :hd // 2]], axis=-1)
    return x * cos + rot * sin


def reference_logits(arch: str, cfg: dict[str, Any], w: dict[str, np.ndarray],
                     ids: list[int]) -> np.ndarray:
    gemma = arch == "gemma3"
    # A nested text_config (gemma3 multimodal) may omit values equal to transformers' defaults.
    cfg = {"rope_theta": 1_000_000.0, "rope_local_base_freq": 10_000.0,
           **cfg, **cfg.get("text_config", {})}
    eps = cfg["rms_norm_eps"]
    t = len(ids)
    x = w["model.embed_tokens.weight"][ids].astype(np.float64)
    if gemma:
        x = x * math.sqrt(HIDDEN)
    causal = np.tril(np.ones((t, t), dtype=bool))
    for i in range(LAYERS):
        p = f"model.layers.{i}."
        h = _rms(x, w[p + "input_layernorm.weight"], eps, gemma)
        proj = {n: h @ w[p + f"self_attn.{n}_proj.weight"].T + w.get(p + f"self_attn.{n}_proj.bias", 0.0)
                for n in "qkv"}
        q = proj["q"].reshape(t, HEADS, HEAD_DIM)
        k = proj["k"].reshape(t, KV_HEADS, HEAD_DIM)
        v = proj["v"].reshape(t, KV_HEADS, HEAD_DIM)
        theta, mask = cfg["rope_theta"], causal
        if gemma:
            q = _rms(q, w[p + "self_attn.q_norm.weight"], eps, True)
            k = _rms(k, w[p + "self_attn.k_norm.weight"], eps, True)
            if cfg["layer_types"][i] == "sliding_attention":
                theta = cfg["rope_local_base_freq"]
                mask = causal & ~np.tril(np.ones((t, t), dtype=bool), -cfg["sliding_window"])
        inv = _inv_freq(theta, cfg.get("rope_scaling"))
        q, k = _rope(q, inv), _rope(k, inv)
        rep = HEADS // KV_HEADS
        k, v = np.repeat(k, rep, axis=1), np.repeat(v, rep, axis=1)
        scores = np.einsum("qhd,khd->hqk", q, k) / math.sqrt(HEAD_DIM)
        scores = np.where(mask[None], scores, -np.inf)
        probs = np.exp(scores - scores.max(-1, keepdims=True))
        probs /= probs.sum(-1, keepdims=True)
        attn = np.einsum("hqk,khd->qhd", probs, v).reshape(t, HEADS * HEAD_DIM)
        o = attn @ w[p + "self_attn.o_proj.weight"].T
        if gemma:
            o = _rms(o, w[p + "post_attention_layernorm.weight"], eps, True)
            h = _rms(x + o, w[p + "pre_feedforward_layernorm.weight"], eps, True)
        else:
            h = _rms(x + o, w[p + "post_attention_layernorm.weight"], eps, False)
        x = x + o
        gate, up = h @ w[p + "mlp.gate_proj.weight"].T, h @ w[p + "mlp.up_proj.weight"].T
        if gemma:
            act = 0.5 * gate * (1 + np.tanh(math.sqrt(2 / math.pi) * (gate + 0.044715 * gate ** 3)))
        else:
            act = gate / (1 + np.exp(-gate))
        f = (act * up) @ w[p + "mlp.down_proj.weight"].T
        if gemma:
            f = _rms(f, w[p + "post_feedforward_layernorm.weight"], eps, True)
        x = x + f
    x = _rms(x, w["model.norm.weight"], eps, gemma)
    head = w.get("lm_head.weight", w["model.embed_tokens.weight"])
    return x @ head.T
