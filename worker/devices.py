"""What a worker node can place models on: its GPUs (NVML) and its host memory, or devices
described by hand in HERD_DEVICES ("cuda:0=6GiB,cuda:1=6GiB"), which is how a machine without
GPUs stands in for a GPU host: the runner still computes on the CPU, but every placement
decision and every figure reported is the one the real devices would get."""

from __future__ import annotations

import logging
import os
import re

import msgspec

from herd.protocol.wire import DeviceInfo, RunnerInfo

log = logging.getLogger("herd.node")

_UNITS = {"": 1, "b": 1, "k": 10**3, "kb": 10**3, "kib": 2**10, "m": 10**6, "mb": 10**6,
          "mib": 2**20, "g": 10**9, "gb": 10**9, "gib": 2**30, "t": 10**12, "tb": 10**12,
          "tib": 2**40}
_SIZE = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*([a-zA-Z]*)\s*$")
_DEVICE_ID = re.compile(r"^(cuda:[0-9]+|cpu)$")


class DeviceSpecError(ValueError):
    pass


def parse_size(text: str) -> int:
    match = _SIZE.match(text)
    unit = match.group(2).lower() if match else ""
    if not match or unit not in _UNITS:
        raise DeviceSpecError(f"invalid memory size {text!r} (e.g. 6GiB, 512MiB, 8GB)")
    return int(float(match.group(1)) * _UNITS[unit])


def parse_devices(text: str) -> list[DeviceInfo]:
    """HERD_DEVICES: comma-separated `id=size`; ids are cuda:N or cpu."""
    devices: list[DeviceInfo] = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        ident, sep, size = item.partition("=")
        ident = ident.strip().lower()
        if not sep or not _DEVICE_ID.match(ident):
            raise DeviceSpecError(f"invalid HERD_DEVICES entry {item!r} (e.g. cuda:0=6GiB)")
        if any(d.id == ident for d in devices):
            raise DeviceSpecError(f"HERD_DEVICES names {ident} twice")
        total = parse_size(size)
        devices.append(DeviceInfo(ident, total, total, name="simulated", simulated=True))
    return devices


def host_memory() -> tuple[int, int]:
    """(total, available) bytes of system RAM."""
    values: dict[str, int] = {}
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                name, _, rest = line.partition(":")
                values[name] = int(rest.split()[0]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    total = values.get("MemTotal") or os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return total, values.get("MemAvailable", total)


def nvml_devices() -> list[DeviceInfo]:
    """The node's NVIDIA GPUs, or none when there is no driver (or no nvidia-ml-py)."""
    try:
        import pynvml
        pynvml.nvmlInit()
    except Exception:  # no library, no driver, no GPU: a CPU node
        return []
    devices = []
    try:
        for index in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            memory = pynvml.nvmlDeviceGetMemoryInfo(handle)
            name = pynvml.nvmlDeviceGetName(handle)
            devices.append(DeviceInfo(f"cuda:{index}", int(memory.total), int(memory.free),
                                      name=name.decode() if isinstance(name, bytes) else name))
    except Exception as e:
        log.warning("NVML could not list the GPUs: %s", e)
    return devices


class DeviceInventory:
    """The devices a node reports with every heartbeat answer. Simulated devices have no
    driver to ask, so their free memory is their size less what this node's runners hold.
    `gpu_overhead` (OLLAMA_GPU_OVERHEAD) is held back on every GPU, real or simulated: it is
    reported as `reserved` and is not in `free`, so no placement and no peer's load can use it."""

    def __init__(self, described: list[DeviceInfo] | None = None, gpu_overhead: int = 0) -> None:
        self.described = described or []
        self.gpu_overhead = max(gpu_overhead, 0)

    def snapshot(self, runners: list[RunnerInfo]) -> list[DeviceInfo]:
        held: dict[str, int] = {}
        for runner in runners:
            for device, size in zip(runner.devices, runner.device_memory):
                held[device] = held.get(device, 0) + size
        if self.described:
            devices = [DeviceInfo(d.id, d.total, max(d.total - held.get(d.id, 0), 0),
                                  name=d.name, simulated=True) for d in self.described]
            if not any(d.id == "cpu" for d in devices):
                devices.append(self._host(held))
        else:
            devices = nvml_devices() + [self._host(held)]
        return [self._reserve(d) for d in devices]

    def _reserve(self, device: DeviceInfo) -> DeviceInfo:
        if not device.is_gpu or not self.gpu_overhead:
            return device
        return msgspec.structs.replace(device, free=max(device.free - self.gpu_overhead, 0),
                                       reserved=self.gpu_overhead)

    @staticmethod
    def _host(held: dict[str, int]) -> DeviceInfo:
        total, available = host_memory()
        # Runners' host memory is mostly mapped weights the OS already counts as used once
        # touched; the placement's own ledger keeps loads in flight from double booking.
        return DeviceInfo("cpu", total, available, name="host memory")


def visible_devices(devices: list[str]) -> str | None:
    """CUDA_VISIBLE_DEVICES for a runner pinned to `devices`: its GPUs, or none at all for a
    runner placed on the host. None leaves the environment alone (an unplaced spec)."""
    if not devices:
        return None
    return ",".join(d.split(":", 1)[1] for d in devices if d.startswith("cuda:"))
