"""The default num_ctx follows Ollama's VRAM tiers when OLLAMA_CONTEXT_LENGTH is unset."""

from __future__ import annotations

import pytest

from herd.gateway.cluster.spec import GIB, default_context_length
from herd.protocol.config import Settings
from herd.protocol.wire import DeviceInfo

AUTO = Settings(context_length=0, num_parallel=1)  # Ollama's default: the tier itself


def gpus(*sizes_gib: float, reserved: int = 0) -> list[DeviceInfo]:
    return [DeviceInfo(f"cuda:{i}", int(s * GIB), int(s * GIB), reserved=reserved)
            for i, s in enumerate(sizes_gib)] + [DeviceInfo("cpu", 64 * GIB, 64 * GIB)]


@pytest.mark.parametrize("sizes,expected", [
    ((), 4096),                  # CPU only
    ((8,), 4096),
    ((22.9,), 4096),
    ((23,), 32768),              # a 24 GiB card reports a little less
    ((12, 12), 32768),           # the GPUs of one node add up, as on one Ollama host
    ((47,), 262144),
    ((80,), 262144),
    ((24, 24), 262144),
])
def test_tiers(sizes: tuple[float, ...], expected: int) -> None:
    assert default_context_length(AUTO, [gpus(*sizes)]) == expected


def test_host_memory_does_not_count() -> None:
    assert default_context_length(AUTO, [[DeviceInfo("cpu", 512 * GIB, 512 * GIB)]]) == 4096


def test_gpu_overhead_comes_off_the_vram() -> None:
    assert default_context_length(AUTO, [gpus(24, reserved=2 * GIB)]) == 4096


def test_the_largest_node_decides() -> None:
    assert default_context_length(AUTO, [gpus(8), gpus(48), []]) == 262144


def test_ollama_context_length_wins() -> None:
    assert default_context_length(Settings(context_length=8192), [gpus(80)]) == 8192


@pytest.mark.parametrize("sizes,parallel,expected", [
    ((24,), 4, 8192),            # the 32768 tier shared by four slots
    ((48,), 4, 65536),
    ((48,), 2, 131072),
    ((8,), 4, 4096),             # never below 4096 a slot
    ((24,), 16, 4096),
])
def test_the_tier_is_the_runners_budget_shared_by_its_slots(
        sizes: tuple[float, ...], parallel: int, expected: int) -> None:
    settings = Settings(context_length=0, num_parallel=parallel)
    assert default_context_length(settings, [gpus(*sizes)]) == expected
