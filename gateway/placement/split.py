"""How many of a model's layers fit a list of devices, and in what proportions (llama.cpp's
``tensor_split``), as Ollama's estimateGPULayers decides it."""

from __future__ import annotations

from msgspec import Struct

class LayerSplit(Struct):
    """Where the layers of one model go. Layers are counted like llama.cpp's n_gpu_layers: the
    repeating layers, last first, then the output layer as one more."""
    n_layers: int               # layers offloaded (n_gpu_layers), output layer included
    fully_loaded: bool          # every repeating layer and the output layer fit
    per_device: list[int]       # layers on each device, in the order given
    tensor_split: list[float]   # per_device as proportions (llama.cpp's tensor_split)
    device_bytes: list[int]     # what each device would hold (compute buffer included)
    host_bytes: int             # what stays on the host (layers that did not fit)


def split_layers(layer_sizes: list[int], capacities: list[int], *, output: int = 0,
                 compute: int = 0, compute_partial: int | None = None, overhead: int = 0,
                 num_gpu: int = -1) -> LayerSplit:
    """Ollama's estimateGPULayers: devices that cannot hold the graph plus two layers drop out;
    the repeating layers are dealt out from the last one, round-robin over the devices that
    still have room (a device that cannot take the next layer leaves the rotation); then the
    output layer goes where it fits. Each used device also holds a compute buffer: the full
    figure when everything fits, else the partial one. capacities are free bytes per device;
    layer_sizes are weights plus KV per layer (MemoryEstimate.layer_sizes())."""
    n = len(layer_sizes)
    partial = compute if compute_partial is None else compute_partial
    graph = max(compute, partial)
    first = layer_sizes[0] if layer_sizes else 0
    alloc = [0] * len(capacities)
    split = [0] * len(capacities)
    room = [i for i, cap in enumerate(capacities) if cap >= overhead + graph + 2 * first]
    for i in room:
        alloc[i] += first  # one layer's worth of slack, as Ollama reserves
    count = 0
    host = 0
    for il in range(n - 1, -1, -1):
        size = layer_sizes[il]
        if 0 <= num_gpu <= count:
            host += size
            continue
        placed = False
        for j in range(len(room), 0, -1):
            k = il % j
            dev = room[k]
            if capacities[dev] > overhead + alloc[dev] + graph + size:
                alloc[dev] += size
                split[dev] += 1
                count += 1
                placed = True
                break
            room.pop(k)
        if not placed:
            host += size
    fully = count >= n
    if output:
        if num_gpu < 0 or count < num_gpu:
            for j in range(len(room), 0, -1):
                dev = room[count % j]
                if capacities[dev] > overhead + alloc[dev] + graph + output:
                    alloc[dev] += output
                    split[dev] += 1
                    count += 1
                    break
        if count < n + 1:
            fully = False
            host += output
    for i in range(len(capacities)):
        if split[i]:
            alloc[i] += compute if fully else partial
        else:
            alloc[i] = 0
    total = sum(split)
    proportions = [s / total if total else 0.0 for s in split]
    return LayerSplit(n_layers=count, fully_loaded=fully, per_device=split,
                      tensor_split=proportions, device_bytes=alloc, host_bytes=host)
