"""A model's memory footprint before it is loaded (cf. Ollama's llm/memory.go).

Weights are exact: the tensor sizes the GGUF header declares. The KV cache follows llama.cpp's
own sizing (context padded to 256 cells, one stream per sequence when the cache is not unified,
sliding-window layers in a separate, smaller cache unless ``swa_full``). The compute buffer is
a formula in n_ubatch, n_ctx, n_vocab, n_embd and the head counts, calibrated against the
buffers llama.cpp reports on the CPU (bench/measure_memory.py, bench/estimate_results.md)."""

from __future__ import annotations

from msgspec import Struct

from herd.gateway.placement.gguf_layout import KV_CACHE_TYPES, PAD_CELLS, ModelInfo, read_model
from herd.gateway.placement.split import LayerSplit, split_layers


class MemoryEstimate(Struct):
    """Bytes a llama.cpp context would allocate for one model at given settings."""
    model: str
    architecture: str
    n_layer: int
    n_ctx_per_seq: int         # as llama.cpp pads it
    n_seq: int
    n_batch: int
    n_ubatch: int
    cache_type: str            # as in force (f16 where a quantized cache is not possible)
    flash_attention: bool
    swa_full: bool
    layers: list[int]          # weights per layer
    output: int                # output layer (token_embd when tied)
    output_tied: bool
    token_embd: int
    other: int
    repack: int                # CPU only: repacked copies of some quantized weights
    kv_cells: int              # cells per stream, full-attention layers
    kv_cells_swa: int          # cells per stream, sliding-window layers
    kv_layers: list[int]       # KV bytes per layer (all streams)
    kv: int
    compute: int               # the compute buffer (graph) for a full offload
    compute_partial: int       # Ollama's figure for a partial offload (the output on the host)
    output_buffer: int         # logits host buffer (n_vocab floats per sequence)

    @property
    def weights(self) -> int:
        tied_extra = self.token_embd if self.output_tied else 0
        return sum(self.layers) + self.output - tied_extra + self.token_embd + self.other

    @property
    def total(self) -> int:
        """Everything for a full load on one GPU (the logits buffer is host memory, so left out)."""
        return self.weights + self.kv + self.compute

    @property
    def total_cpu(self) -> int:
        """Everything a CPU-only load allocates: the mapped weights, their repacked copies, the
        KV cache, the compute buffer and the logits buffer."""
        return self.weights + self.repack + self.kv + self.compute + self.output_buffer

    def layer_sizes(self) -> list[int]:
        """Weights plus KV per repeating layer: the unit split_layers places."""
        return [w + k for w, k in zip(self.layers, self.kv_layers)]

    def split(self, capacities: list[int], *, overhead: int = 0,
              num_gpu: int = -1) -> "LayerSplit":
        """split_layers for this model and these settings."""
        return split_layers(self.layer_sizes(), capacities, output=self.output,
                            compute=self.compute, compute_partial=self.compute_partial,
                            overhead=overhead, num_gpu=num_gpu)


def row_bytes(cache_type: str, n: int) -> int:
    """ggml_row_size: bytes of n elements of a cache type."""
    block, size = KV_CACHE_TYPES[cache_type]
    return n // block * size


def kv_bytes_per_element(cache_type: str) -> float:
    block, size = KV_CACHE_TYPES[cache_type]
    return size / block


def _pad(n: int, to: int = PAD_CELLS) -> int:
    return (n + to - 1) // to * to


def context_cells(n_ctx_per_seq: int, n_seq: int, *, kv_unified: bool = False) -> tuple[int, int]:
    """(cells per stream, streams) as llama_context sizes them from n_ctx = per-seq × n_seq."""
    n_ctx = _pad(n_ctx_per_seq * n_seq)
    if kv_unified:
        return n_ctx, 1
    return _pad(n_ctx // n_seq), n_seq


def effective_cache_type(model: ModelInfo, cache_type: str, flash_attention: bool) -> str:
    """The cache type llama.cpp (and Herd's fallback) ends up with: quantized V needs flash
    attention, and quantized blocks must divide the head size."""
    if cache_type not in KV_CACHE_TYPES:
        raise ValueError(f"unknown KV cache type: {cache_type}")
    block = KV_CACHE_TYPES[cache_type][0]
    if block > 1 and (not flash_attention or model.head_dim_k % block or model.head_dim_v % block):
        return "f16"
    return cache_type


def compute_buffer(model: ModelInfo, *, n_ubatch: int, n_kv: int, n_kv_swa: int,
                   flash_attention: bool) -> int:
    """The CPU/full-offload compute buffer: the largest of the graph's phases, as ggml's
    allocator reuses memory between them (calibrated on llama.cpp's reported buffers).

    - output: the logits of every token of a ubatch (f32, n_vocab each; llama.cpp reserves for
      n_outputs = n_ubatch) next to the final norm, its input and the residual: 4·t·(V + 3e);
    - attention: the KQ masks (f16 with flash attention, f32 without; one per cache, the
      sliding-window one included) plus Q/K/V and the layer's activations, and without flash
      attention the KQ scores themselves, 4·t·n_kv·n_head;
    - FFN: gate, up and their product beside the residual.

    n_kv is the cells of one stream (the reserve graph splits the ubatch across streams)."""
    e = model.n_embd
    n_head = max(model.n_head, default=1)
    width = max(e, n_head * model.head_dim_k)
    ff = max(model.n_ff, default=4 * e)
    t = n_ubatch
    f32 = 4
    small_inputs = 32 * t  # tokens, positions, out_ids, k/v indices
    mask_elt = 2 if flash_attention else f32
    masks = n_kv * t * mask_elt
    if any(model.swa_layers):
        masks += n_kv_swa * t * mask_elt
    out_peak = f32 * t * (model.n_vocab + 3 * e)
    if flash_attention:
        attn_peak = masks + f32 * t * 9 * width
    else:
        attn_peak = masks + f32 * t * n_kv * n_head + f32 * t * 7 * width
    ffn_peak = f32 * t * (2 * e + 3 * ff)
    return small_inputs + max(out_peak, attn_peak, ffn_peak)


def estimate(model: ModelInfo | str, *, n_ctx_per_seq: int, n_seq: int = 1, n_batch: int = 512,
             n_ubatch: int | None = None, cache_type: str = "f16", flash_attention: bool = True,
             swa_full: bool = True, kv_unified: bool = False) -> MemoryEstimate:
    """The footprint of a llama.cpp context of n_seq sequences of n_ctx_per_seq tokens each, as
    Herd's LlamaContext creates it (kv_unified=False; swa_full is llama_context_default_params'
    default, True, which Herd keeps)."""
    info = model if isinstance(model, ModelInfo) else read_model(model)
    cells, streams = context_cells(n_ctx_per_seq, n_seq, kv_unified=kv_unified)
    n_ctx = cells * streams
    n_batch = min(n_batch, n_ctx)
    n_ubatch = min(n_batch, n_ubatch or n_batch)
    ctype = effective_cache_type(info, cache_type, flash_attention)
    if swa_full or not info.n_swa:
        cells_swa = cells
    else:
        window = info.n_swa * (n_seq if kv_unified else 1) + n_ubatch
        cells_swa = _pad(min(cells, window))
    kv_layers = []
    for il in range(info.n_layer):
        per_cell = (row_bytes(ctype, info.head_dim_k * info.n_head_kv[il])
                    + row_bytes(ctype, info.head_dim_v * info.n_head_kv[il]))
        if not info.n_head_kv[il]:
            per_cell = 0  # a recurrent or attention-free layer: not modelled
        n = cells_swa if info.swa_layers[il] else cells
        kv_layers.append(per_cell * n * streams)
    compute = compute_buffer(info, n_ubatch=n_ubatch, n_kv=cells, n_kv_swa=cells_swa,
                             flash_attention=flash_attention)
    # Ollama's partial-offload figure: the output projection runs on the host, so the device
    # holds a dequantized slice of the output weights besides the logits.
    partial = compute + info.n_embd * info.n_vocab * 105 // 128
    return MemoryEstimate(
        model=info.path, architecture=info.architecture, n_layer=info.n_layer,
        n_ctx_per_seq=cells, n_seq=n_seq, n_batch=n_batch, n_ubatch=n_ubatch,
        cache_type=ctype, flash_attention=flash_attention, swa_full=swa_full,
        layers=list(info.layers), output=info.output, output_tied=info.output_tied,
        token_embd=info.token_embd, other=info.other, repack=info.repack, kv_cells=cells,
        kv_cells_swa=cells_swa, kv_layers=kv_layers, kv=sum(kv_layers), compute=compute,
        compute_partial=partial, output_buffer=4 * info.n_vocab * n_seq)


def rough_estimate(path: str, file_size: int, *, n_seq: int = 1) -> MemoryEstimate:
    """For a file whose header the reader does not model: its size plus a margin, on the host
    or one device, so placement still has a figure to compare."""
    margin = 64 * 1024 * 1024 + file_size // 10
    return MemoryEstimate(
        model=path, architecture="", n_layer=0, n_ctx_per_seq=0, n_seq=n_seq, n_batch=0,
        n_ubatch=0, cache_type="f16", flash_attention=True, swa_full=True, layers=[],
        output=0, output_tied=False, token_embd=0, other=file_size, repack=0, kv_cells=0,
        kv_cells_swa=0, kv_layers=[], kv=0, compute=margin, compute_partial=margin,
        output_buffer=0)
