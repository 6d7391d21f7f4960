"""Per-architecture knowledge: GGUF hyperparameter keys, tensor renames and weight fix-ups.

Each class mirrors what llama.cpp's convert_hf_to_gguf.py does for that architecture (checked
against the copy vendored in llama-cpp-python 0.3.36), written against numpy instead of torch.
"""

from __future__ import annotations

import json
import logging
import math
import pathlib
from typing import Any, ClassVar

import gguf
import numpy as np

from herd.gateway.store.convert.errors import ConversionError

log = logging.getLogger("herd.convert")


class HfConfig:
    """config.json with typed accessors that fail with the key's name instead of a KeyError."""

    def __init__(self, raw: dict[str, Any]) -> None:
        self.raw = raw

    def get(self, *keys: str, default: Any = None) -> Any:
        for key in keys:
            if self.raw.get(key) is not None:
                return self.raw[key]
        return default

    def get_int(self, *keys: str, default: int | None = None) -> int:
        value = self.get(*keys, default=default)
        if not isinstance(value, int) or isinstance(value, bool):
            raise ConversionError(f"config.json: missing or non-integer {keys[0]!r}")
        return value

    def get_float(self, *keys: str, default: float | None = None) -> float:
        value = self.get(*keys, default=default)
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise ConversionError(f"config.json: missing or non-numeric {keys[0]!r}")
        return float(value)

    def rope(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """(global, sliding-window) RoPE parameters across both config spellings: transformers
        v4's rope_theta + rope_scaling, and v5's rope_parameters (optionally per layer type)."""
        params = self.get("rope_parameters", "rope_scaling", default={}) or {}
        if "full_attention" in params or "sliding_attention" in params:
            full = dict(params.get("full_attention") or {})
            local = dict(params.get("sliding_attention") or {})
        else:
            full, local = dict(params), {}
        if "rope_type" not in full and "type" in full:
            full["rope_type"] = full["type"]
        full.setdefault("rope_theta", self.get("rope_theta"))
        local.setdefault("rope_theta", self.get("rope_local_base_freq"))
        return full, local


def permute_rotary(w: np.ndarray, n_head: int) -> np.ndarray:
    """HF stores llama's Q/K rows with the rotary halves split (rotate_half); GGUF's llama
    expects them interleaved in pairs, so each head's rows are reordered."""
    rows = w.shape[0]
    if rows % (n_head * 2):
        raise ConversionError(f"cannot permute a {list(w.shape)} tensor over {n_head} heads")
    return (w.reshape(n_head, 2, rows // n_head // 2, *w.shape[1:])
            .swapaxes(1, 2)
            .reshape(w.shape))


class Arch:
    """Defaults shared by the decoder-only architectures."""

    gguf_arch: ClassVar[gguf.MODEL_ARCH]
    hf_names: ClassVar[tuple[str, ...]]
    default_pre: ClassVar[str] = "default"
    wordpiece: ClassVar[bool] = False
    type_vocab_size: int = 0  # BERT's segment (token type) embeddings; decoders have none
    # HF tensors with no GGUF counterpart that llama.cpp's converter also drops.
    skip_suffixes: ClassVar[tuple[str, ...]] = ("rotary_emb.inv_freq",)

    def __init__(self, cfg: HfConfig, src: pathlib.Path) -> None:
        self.cfg = cfg
        self.src = src
        self.n_layer = cfg.get_int("num_hidden_layers", "n_layer", "num_layers")
        self.hidden = cfg.get_int("hidden_size", "n_embd", "d_model")
        self.n_head = cfg.get_int("num_attention_heads", "n_head")
        self.n_head_kv = cfg.get_int("num_key_value_heads", default=self.n_head)
        self.head_dim = cfg.get_int("head_dim", default=self.hidden // self.n_head)
        self.n_ff = cfg.get_int("intermediate_size", "n_inner")

    @property
    def name(self) -> str:
        return gguf.MODEL_ARCH_NAMES[self.gguf_arch]

    def rename(self, hf_name: str) -> str | None:
        """The HF name to look up in gguf's TensorNameMap, or None to drop the tensor."""
        return None if hf_name.endswith(self.skip_suffixes) else hf_name

    def transform(self, hf_name: str, data: np.ndarray) -> np.ndarray:
        return data

    def extra_tensors(self) -> dict[str, np.ndarray]:
        return {}

    def expected_shapes(self, n_vocab: int) -> dict[str, tuple[tuple[int, ...], bool]]:
        """GGUF tensor name (without 'blk.N.') -> (HF shape, required)."""
        h, q, kv = self.hidden, self.n_head * self.head_dim, self.n_head_kv * self.head_dim
        return {
            "token_embd.weight": ((n_vocab, h), True),
            "output.weight": ((n_vocab, h), False),  # absent when tied to the embedding
            "output_norm.weight": ((h,), True),
            "attn_norm.weight": ((h,), True),
            "attn_q.weight": ((q, h), True),
            "attn_k.weight": ((kv, h), True),
            "attn_v.weight": ((kv, h), True),
            "attn_output.weight": ((h, q), True),
            "attn_q.bias": ((q,), False),
            "attn_k.bias": ((kv,), False),
            "attn_v.bias": ((kv,), False),
            "ffn_norm.weight": ((h,), True),
            "ffn_gate.weight": ((self.n_ff, h), True),
            "ffn_up.weight": ((self.n_ff, h), True),
            "ffn_down.weight": ((h, self.n_ff), True),
        }

    def write_hparams(self, w: gguf.GGUFWriter, n_vocab: int) -> None:
        cfg = self.cfg
        w.add_block_count(self.n_layer)
        w.add_context_length(cfg.get_int("max_position_embeddings", "n_positions", default=4096))
        w.add_embedding_length(self.hidden)
        w.add_feed_forward_length(self.n_ff)
        w.add_head_count(self.n_head)
        w.add_head_count_kv(self.n_head_kv)
        w.add_layer_norm_rms_eps(cfg.get_float("rms_norm_eps", default=1e-6))
        w.add_key_length(self.head_dim)
        w.add_value_length(self.head_dim)
        w.add_rope_dimension_count(self.head_dim)
        w.add_vocab_size(n_vocab)
        full, _ = cfg.rope()
        if full.get("rope_theta") is not None:
            w.add_rope_freq_base(float(full["rope_theta"]))
        self._write_rope_scaling(w, full)

    def _write_rope_scaling(self, w: gguf.GGUFWriter, rope: dict[str, Any]) -> None:
        kind, factor = rope.get("rope_type"), rope.get("factor")
        if kind == "linear" and factor:
            w.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
            w.add_rope_scaling_factor(float(factor))
        elif kind == "yarn" and factor:
            w.add_rope_scaling_type(gguf.RopeScalingType.YARN)
            w.add_rope_scaling_factor(float(factor))
            orig = rope.get("original_max_position_embeddings")
            if orig is None:
                raise ConversionError(
                    "config.json: yarn rope scaling without original_max_position_embeddings")
            w.add_rope_scaling_orig_ctx_len(int(orig))
            for key, add in (("beta_fast", w.add_rope_scaling_yarn_beta_fast),
                             ("beta_slow", w.add_rope_scaling_yarn_beta_slow)):
                if rope.get(key) is not None:
                    add(float(rope[key]))
        elif kind not in (None, "default", "llama3"):
            # e.g. "dynamic" NTK only matters past the trained context; like llama.cpp's
            # converter we keep going, and the model works within its original length.
            log.warning("ignoring unsupported rope scaling type %r", kind)


class Llama(Arch):
    gguf_arch = gguf.MODEL_ARCH.LLAMA
    hf_names = ("LlamaForCausalLM",)
    default_pre = "llama-bpe"

    def transform(self, hf_name: str, data: np.ndarray) -> np.ndarray:
        if hf_name.endswith(("q_proj.weight", "q_proj.bias")):
            return permute_rotary(data, self.n_head)
        if hf_name.endswith(("k_proj.weight", "k_proj.bias")):
            return permute_rotary(data, self.n_head_kv)
        return data

    def extra_tensors(self) -> dict[str, np.ndarray]:
        """Llama 3.1+'s frequency-dependent RoPE scaling becomes a rope_freqs factor tensor,
        which is how llama.cpp applies it (same formula as transformers' _compute_llama3_parameters)."""
        full, _ = self.cfg.rope()
        if str(full.get("rope_type", "")).lower() != "llama3":
            return {}
        base = float(full.get("rope_theta") or 10000.0)
        factor = float(full.get("factor", 8.0))
        low, high = float(full.get("low_freq_factor", 1.0)), float(full.get("high_freq_factor", 4.0))
        old_ctx = float(full.get("original_max_position_embeddings", 8192))
        freqs = 1.0 / (base ** (np.arange(0, self.head_dim, 2, dtype=np.float64) / self.head_dim))
        factors = []
        for freq in freqs:
            wavelen = 2 * math.pi / freq
            if wavelen < old_ctx / high:
                factors.append(1.0)
            elif wavelen > old_ctx / low:
                factors.append(factor)
            else:
                smooth = (old_ctx / wavelen - low) / (high - low)
                factors.append(1.0 / ((1 - smooth) / factor + smooth))
        return {"rope_freqs.weight": np.asarray(factors, dtype=np.float32)}


class Qwen2(Arch):
    # No permutation: qwen2 uses NEOX-style rotary in llama.cpp, the same layout HF stores.
    gguf_arch = gguf.MODEL_ARCH.QWEN2
    hf_names = ("Qwen2ForCausalLM",)
    default_pre = "qwen2"

    def expected_shapes(self, n_vocab: int) -> dict[str, tuple[tuple[int, ...], bool]]:
        shapes = super().expected_shapes(n_vocab)
        for bias in ("attn_q.bias", "attn_k.bias", "attn_v.bias"):
            shapes[bias] = (shapes[bias][0], True)  # qwen2's graph adds them unconditionally
        return shapes


class Gemma3(Arch):
    gguf_arch = gguf.MODEL_ARCH.GEMMA3
    # The multimodal checkpoints (gemma-3-4b and up) convert as their text model alone.
    hf_names = ("Gemma3ForCausalLM", "Gemma3ForConditionalGeneration")
    # Gemma3 configs omit whatever equals transformers' Gemma3TextConfig defaults.
    _defaults: ClassVar[dict[str, Any]] = {
        "hidden_size": 2304, "intermediate_size": 9216, "num_hidden_layers": 26,
        "num_attention_heads": 8, "num_key_value_heads": 4, "head_dim": 256,
        "max_position_embeddings": 131072, "rms_norm_eps": 1e-6, "rope_theta": 1_000_000.0,
        "rope_local_base_freq": 10_000.0, "sliding_window": 4096,
    }
    _text_prefixes = (("model.language_model.", "model."), ("language_model.model.", "model."),
                      ("language_model.lm_head.", "lm_head."))
    _vision_prefixes = ("vision_tower.", "multi_modal_projector.", "model.vision_tower.",
                        "model.multi_modal_projector.")

    def __init__(self, cfg: HfConfig, src: pathlib.Path) -> None:
        text = cfg.raw.get("text_config")
        raw = {**cfg.raw, **text} if isinstance(text, dict) else dict(cfg.raw)
        for key, value in self._defaults.items():
            if raw.get(key) is None:
                raw[key] = value
        super().__init__(HfConfig(raw), src)

    def rename(self, hf_name: str) -> str | None:
        if hf_name.startswith(self._vision_prefixes):
            return None
        for old, new in self._text_prefixes:
            if hf_name.startswith(old):
                return new + hf_name[len(old):]
        return super().rename(hf_name)

    def transform(self, hf_name: str, data: np.ndarray) -> np.ndarray:
        # Gemma3RMSNorm computes x * (1 + weight); llama.cpp's RMS norm multiplies by the
        # stored weight, so the +1 is folded in here (q_norm/k_norm included).
        if hf_name.endswith("norm.weight"):
            return data + 1.0
        return data

    def expected_shapes(self, n_vocab: int) -> dict[str, tuple[tuple[int, ...], bool]]:
        h = self.hidden
        shapes = super().expected_shapes(n_vocab)
        shapes.update({
            "post_attention_norm.weight": ((h,), True),
            "post_ffw_norm.weight": ((h,), True),
            "attn_q_norm.weight": ((self.head_dim,), True),
            "attn_k_norm.weight": ((self.head_dim,), True),
        })
        return shapes

    def write_hparams(self, w: gguf.GGUFWriter, n_vocab: int) -> None:
        cfg = self.cfg
        w.add_block_count(self.n_layer)
        w.add_context_length(cfg.get_int("max_position_embeddings"))
        w.add_embedding_length(self.hidden)
        w.add_feed_forward_length(self.n_ff)
        w.add_head_count(self.n_head)
        w.add_head_count_kv(self.n_head_kv)
        w.add_layer_norm_rms_eps(cfg.get_float("rms_norm_eps"))
        w.add_key_length(self.head_dim)
        w.add_value_length(self.head_dim)
        w.add_vocab_size(n_vocab)
        full, local = cfg.rope()
        w.add_rope_freq_base(float(full["rope_theta"]))
        w.add_rope_freq_base_swa(float(local["rope_theta"]))
        self._write_rope_scaling(w, full)  # e.g. 4B+: linear x8, global layers only
        if cfg.get("attn_logit_softcapping") is not None:
            raise ConversionError("config.json: gemma3 has no attention logit softcapping")
        if softcap := cfg.get("final_logit_softcapping"):
            w.add_final_logit_softcapping(float(softcap))
        layer_types = cfg.get("layer_types")
        if isinstance(layer_types, list) and len(layer_types) == self.n_layer:
            is_swa = [t == "sliding_attention" for t in layer_types]
            if any(is_swa):
                w.add_sliding_window(cfg.get_int("sliding_window"))
                w.add_sliding_window_pattern(is_swa)  # exact per-layer list beats the default of 6
        elif cfg.get("sliding_window_pattern", default=6) != 1:
            w.add_sliding_window(cfg.get_int("sliding_window"))
            w.add_sliding_window_pattern(cfg.get_int("sliding_window_pattern", default=6))


class Bert(Arch):
    gguf_arch = gguf.MODEL_ARCH.BERT
    hf_names = ("BertModel",)
    wordpiece = True
    _dropped = ("embeddings.position_ids", "pooler.dense.weight", "pooler.dense.bias")

    def __init__(self, cfg: HfConfig, src: pathlib.Path) -> None:
        super().__init__(cfg, src)
        self.n_ctx = cfg.get_int("max_position_embeddings", default=512)
        self.type_vocab_size = cfg.get_int("type_vocab_size", default=2)

    def rename(self, hf_name: str) -> str | None:
        name = hf_name.removeprefix("bert.")
        if name.endswith(".gamma"):  # very old checkpoints (TF-era LayerNorm names)
            name = name[:-len(".gamma")] + ".weight"
        elif name.endswith(".beta"):
            name = name[:-len(".beta")] + ".bias"
        # Embeddings only: the pooler and masked-LM heads are not part of the GGUF model.
        if name in self._dropped or name.startswith("cls."):
            return None
        return name

    def expected_shapes(self, n_vocab: int) -> dict[str, tuple[tuple[int, ...], bool]]:
        h, ff = self.hidden, self.n_ff
        return {
            "token_embd.weight": ((n_vocab, h), True),
            "token_types.weight": ((self.type_vocab_size, h), False),
            "position_embd.weight": ((self.n_ctx, h), True),
            "token_embd_norm.weight": ((h,), True),
            "token_embd_norm.bias": ((h,), True),
            "attn_q.weight": ((h, h), True), "attn_q.bias": ((h,), False),
            "attn_k.weight": ((h, h), True), "attn_k.bias": ((h,), False),
            "attn_v.weight": ((h, h), True), "attn_v.bias": ((h,), False),
            "attn_output.weight": ((h, h), True), "attn_output.bias": ((h,), False),
            "attn_output_norm.weight": ((h,), True), "attn_output_norm.bias": ((h,), True),
            "ffn_up.weight": ((ff, h), True), "ffn_up.bias": ((ff,), False),
            "ffn_down.weight": ((h, ff), True), "ffn_down.bias": ((h,), False),
            "layer_output_norm.weight": ((h,), True), "layer_output_norm.bias": ((h,), True),
        }

    def write_hparams(self, w: gguf.GGUFWriter, n_vocab: int) -> None:
        w.add_block_count(self.n_layer)
        w.add_context_length(self.n_ctx)
        w.add_embedding_length(self.hidden)
        w.add_feed_forward_length(self.n_ff)
        w.add_head_count(self.n_head)
        w.add_layer_norm_eps(self.cfg.get_float("layer_norm_eps", default=1e-12))
        w.add_vocab_size(n_vocab)
        w.add_causal_attention(False)
        w.add_pooling_type(self.pooling_type())

    def pooling_type(self) -> gguf.PoolingType:
        """From the sentence-transformers Pooling module when there is one; mean otherwise,
        which is what sentence-transformers itself falls back to for a bare BERT."""
        pooling_dir = None
        modules = self.src / "modules.json"
        if modules.is_file():
            try:
                entries = json.loads(modules.read_text(encoding="utf-8"))
            except ValueError as e:
                raise ConversionError(f"modules.json is not valid JSON: {e}") from None
            for entry in entries if isinstance(entries, list) else []:
                if str(entry.get("type", "")).endswith("Pooling"):
                    pooling_dir = self.src / str(entry.get("path", ""))
        elif (self.src / "1_Pooling" / "config.json").is_file():
            pooling_dir = self.src / "1_Pooling"
        if pooling_dir is None or not (pooling_dir / "config.json").is_file():
            return gguf.PoolingType.MEAN
        try:
            pooling = json.loads((pooling_dir / "config.json").read_text(encoding="utf-8"))
        except ValueError as e:
            raise ConversionError(f"pooling config.json is not valid JSON: {e}") from None
        if pooling.get("pooling_mode_mean_tokens"):
            return gguf.PoolingType.MEAN
        if pooling.get("pooling_mode_cls_token"):
            return gguf.PoolingType.CLS
        if pooling.get("pooling_mode_lasttoken"):
            return gguf.PoolingType.LAST
        modes = {"mean": gguf.PoolingType.MEAN, "cls": gguf.PoolingType.CLS,
                 "lasttoken": gguf.PoolingType.LAST}
        if (mode := pooling.get("pooling_mode")) in modes:
            return modes[mode]
        raise ConversionError("unsupported sentence-transformers pooling: only mean, cls and "
                              "last-token pooling exist in llama.cpp")


ARCHS: dict[str, type[Arch]] = {
    name: cls for cls in (Llama, Qwen2, Gemma3, Bert) for name in cls.hf_names}
