"""HERD_DEVICES: devices described by hand stand in for a GPU host."""

from __future__ import annotations

import pytest

from herd.protocol.wire import RunnerInfo
from herd.worker.devices import (DeviceInventory, DeviceSpecError, parse_devices, parse_size,
                                 visible_devices)


def test_sizes_in_binary_and_decimal_units() -> None:
    assert parse_size("6GiB") == 6 * 2**30
    assert parse_size("512 MiB") == 512 * 2**20
    assert parse_size("8GB") == 8 * 10**9
    assert parse_size("1.5gib") == int(1.5 * 2**30)


@pytest.mark.parametrize("text", ["cuda:0", "gpu0=6GiB", "cuda:0=six", "cuda:0=1GiB,cuda:0=2GiB"])
def test_bad_descriptions_are_refused(text: str) -> None:
    with pytest.raises(DeviceSpecError):
        parse_devices(text)


def test_simulated_devices_free_what_runners_do_not_hold() -> None:
    inventory = DeviceInventory(parse_devices("cuda:0=6GiB,cuda:1=6GiB"))
    held = [RunnerInfo("k", "m", "", ["cuda:0", "cuda:1"], [2 * 2**30, 1 * 2**30])]
    devices = {d.id: d for d in inventory.snapshot(held)}
    assert devices["cuda:0"].free == 4 * 2**30 and devices["cuda:1"].free == 5 * 2**30
    assert devices["cuda:0"].total == 6 * 2**30 and devices["cuda:0"].simulated
    assert "cpu" in devices  # the host is a device too


def test_runners_see_only_their_gpus() -> None:
    assert visible_devices(["cuda:1", "cuda:3"]) == "1,3"
    assert visible_devices(["cpu"]) == ""
    assert visible_devices([]) is None


def test_gpu_overhead_is_held_back_on_every_gpu_and_reported() -> None:
    inventory = DeviceInventory(parse_devices("cuda:0=6GiB,cuda:1=1GiB"), gpu_overhead=2 * 2**30)
    held = [RunnerInfo("k", "m", "", ["cuda:0"], [1 * 2**30])]
    devices = {d.id: d for d in inventory.snapshot(held)}
    assert devices["cuda:0"].free == 3 * 2**30 and devices["cuda:0"].reserved == 2 * 2**30
    assert devices["cuda:0"].total == 6 * 2**30
    assert devices["cuda:1"].free == 0  # smaller than the overhead: nothing left for models
    assert devices["cpu"].reserved == 0  # host memory is not a GPU's
    assert DeviceInventory(parse_devices("cpu=8GiB"), gpu_overhead=2**30).snapshot([])[0].free \
        == 8 * 2**30
