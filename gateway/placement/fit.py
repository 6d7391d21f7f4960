"""Where a model goes, given what every node has free: the single GPU with room for it (best
fit), else split by layers across one node's GPUs (tensor_split), else partly offloaded (some
layers on GPUs, the rest on the host), else the host alone — Ollama's scheduler order. Pure
functions of the estimate and a snapshot of free memory, so placement is testable (and
benchmarkable) without a model or a process."""

from __future__ import annotations

from dataclasses import dataclass, field

from herd.gateway.placement.estimate import MemoryEstimate
from herd.protocol.wire import DeviceInfo

ALL_LAYERS = 999  # llama.cpp's n_gpu_layers for "every layer"


@dataclass
class NodeView:
    """One node as placement sees it: its devices with the free bytes left after every runner
    it holds and every load in flight (`free` already net of those)."""

    name: str
    devices: list[DeviceInfo]
    runners: int = 0  # runners it holds: CPU placements spread by this
    # devices to leave out, e.g. those already holding a replica of the model
    avoid: set[str] = field(default_factory=set)

    @property
    def gpus(self) -> list[DeviceInfo]:
        return [d for d in self.devices if d.is_gpu and d.id not in self.avoid]

    @property
    def host(self) -> DeviceInfo | None:
        return next((d for d in self.devices if not d.is_gpu and d.id not in self.avoid), None)


@dataclass
class Placement:
    node: str
    devices: list[str]
    device_memory: list[int]  # bytes the estimate puts on each device
    num_gpu_layers: int  # llama.cpp's n_gpu_layers: ALL_LAYERS, a count, or 0 for the host
    tensor_split: list[float] = field(default_factory=list)
    main_gpu: int = 0
    size: int = 0  # the whole footprint (Ollama's ps "size")
    size_vram: int = 0  # the part on GPUs


class DoesNotFit(Exception):
    """No node has room. `need` and `free` are the figures for the message."""

    def __init__(self, need: int, free: int) -> None:
        super().__init__(need, free)
        self.need, self.free = need, free


def _single_gpu(est: MemoryEstimate, nodes: list[NodeView], main_gpu: int | None
                ) -> Placement | None:
    need = est.total
    fits = [(n, d) for n in nodes for d in n.gpus if d.free >= need]
    if main_gpu is not None:
        preferred = [(n, d) for n, d in fits if d.id == f"cuda:{main_gpu}"]
        fits = preferred or fits
    if not fits:
        return None
    # Best fit: the device with the least room that still holds it keeps big holes for big
    # models; ties go to the node with fewer runners.
    node, device = min(fits, key=lambda nd: (nd[1].free, nd[0].runners, nd[0].name, nd[1].id))
    return Placement(node.name, [device.id], [need], ALL_LAYERS, size=need, size_vram=need)


def _gpu_split(est: MemoryEstimate, node: NodeView, num_gpu: int, *, partial: bool,
               spread: bool) -> Placement | None:
    gpus = sorted(node.gpus, key=lambda d: -d.free)
    if not gpus:
        return None
    # Fewest devices first (each split costs bandwidth), unless spreading is asked for.
    counts = [len(gpus)] if spread or partial else range(2, len(gpus) + 1)
    for k in counts:
        chosen = gpus[:k]
        split = est.split([d.free for d in chosen], num_gpu=num_gpu)
        if split.n_layers == 0 or (not partial and not split.fully_loaded):
            continue
        host_need = split.host_bytes + est.output_buffer + est.repack
        if partial:
            host = node.host
            if host is None or host.free < host_need:
                return None
        used = [i for i, n in enumerate(split.per_device) if n]
        vram = sum(split.device_bytes[i] for i in used)
        devices = [chosen[i].id for i in used]
        memory = [split.device_bytes[i] for i in used]
        if partial:  # the host holds the rest, and says so like any other device
            devices.append(node.host.id)  # type: ignore[union-attr]
            memory.append(host_need)
        return Placement(node.name, devices, memory,
                         ALL_LAYERS if split.fully_loaded else split.n_layers,
                         tensor_split=[split.tensor_split[i] for i in used] if len(used) > 1 else [],
                         size=sum(memory), size_vram=vram)
    return None


def _host_only(est: MemoryEstimate, nodes: list[NodeView]) -> Placement | None:
    need = est.total_cpu
    fits = [n for n in nodes if n.host is not None and n.host.free >= need]
    if not fits:
        return None
    # The host's cores are shared by everything on it: spread models over nodes.
    node = min(fits, key=lambda n: (n.runners, -n.host.free, n.name))  # type: ignore[union-attr]
    return Placement(node.name, [node.host.id], [need], 0, size=need)  # type: ignore[union-attr]


def place(est: MemoryEstimate, nodes: list[NodeView], *, num_gpu: int = -1,
          main_gpu: int | None = None, spread: bool = False) -> Placement:
    """The placement for one runner of a model, or DoesNotFit. num_gpu is Ollama's option:
    -1 as many layers as fit, 0 none (host only), N at most N layers on GPUs."""
    if num_gpu != 0:
        if num_gpu < 0 and not spread:
            placed = _single_gpu(est, nodes, main_gpu)
            if placed:
                return placed
        if num_gpu < 0:
            splits = [p for n in nodes if (p := _gpu_split(est, n, num_gpu, partial=False,
                                                         spread=spread))]
            if splits:
                return min(splits, key=lambda p: (len(p.devices), -p.size_vram, p.node))
        partials = [p for n in nodes if (p := _gpu_split(est, n, num_gpu, partial=True,
                                                       spread=spread))]
        if partials:
            return max(partials, key=lambda p: (p.num_gpu_layers, p.size_vram, p.node))
    placed = _host_only(est, nodes)
    if placed:
        return placed
    free = max([d.free for n in nodes for d in n.devices] or [0])
    raise DoesNotFit(est.total if any(n.gpus for n in nodes) else est.total_cpu, free)
