"""Placement decisions as pure functions of an estimate and free memory (Ollama's order:
one GPU, a split across a node's GPUs, a partial offload, the host)."""

from __future__ import annotations


import pytest

from herd.gateway.placement.estimate import estimate
from herd.gateway.placement.fit import ALL_LAYERS, DoesNotFit, NodeView, place
from herd.protocol.wire import DeviceInfo
from support.tiny_models import write_tiny_llama

MiB = 2**20


@pytest.fixture(scope="module")
def est(tmp_path_factory: pytest.TempPathFactory):
    path = write_tiny_llama(tmp_path_factory.mktemp("fit") / "m.gguf", embedding_length=128,
                            block_count=8)
    return estimate(str(path), n_ctx_per_seq=512, n_seq=2, n_batch=64)


def node(name: str, *sizes: int, host: int = 1 * MiB, runners: int = 0) -> NodeView:
    devs = [DeviceInfo(f"cuda:{i}", s, s) for i, s in enumerate(sizes)]
    return NodeView(name, devs + [DeviceInfo("cpu", host, host)], runners)


def test_one_gpu_best_fit(est) -> None:
    p = place(est, [node("a", 10 * est.total), node("b", est.total + 1, 3 * est.total)])
    assert (p.node, p.devices, p.num_gpu_layers) == ("b", ["cuda:0"], ALL_LAYERS)
    assert p.size == p.size_vram == p.device_memory[0] == est.total


def test_main_gpu_is_preferred_when_it_fits(est) -> None:
    p = place(est, [node("a", 3 * est.total, 2 * est.total)], main_gpu=0)
    assert p.devices == ["cuda:0"]


def test_split_across_two_gpus_when_none_holds_it(est) -> None:
    p = place(est, [node("a", int(est.total * 0.7), int(est.total * 0.7))])
    assert sorted(p.devices) == ["cuda:0", "cuda:1"]
    assert p.num_gpu_layers == ALL_LAYERS and abs(sum(p.tensor_split) - 1) < 1e-9
    assert p.size_vram == sum(p.device_memory)


def test_spread_uses_every_gpu_of_the_node(est) -> None:
    p = place(est, [node("a", 10 * est.total, 10 * est.total, 10 * est.total)], spread=True)
    assert sorted(p.devices) == ["cuda:0", "cuda:1", "cuda:2"]


def test_partial_offload_keeps_the_rest_on_the_host(est) -> None:
    p = place(est, [node("a", int(est.total * 0.5), host=10 * est.total)])
    assert p.devices == ["cuda:0", "cpu"] and 0 < p.num_gpu_layers < est.n_layer + 1
    assert 0 < p.size_vram < p.size


def test_num_gpu_zero_is_the_host_only(est) -> None:
    p = place(est, [node("a", 10 * est.total, host=10 * est.total_cpu)], num_gpu=0)
    assert (p.devices, p.num_gpu_layers, p.size_vram) == (["cpu"], 0, 0)


def test_host_placements_spread_over_nodes(est) -> None:
    p = place(est, [NodeView("a", [DeviceInfo("cpu", 2**40, 2**40)], runners=3),
                    NodeView("b", [DeviceInfo("cpu", 2**40, 2**40)], runners=1)])
    assert (p.node, p.devices) == ("b", ["cpu"])


def test_devices_to_avoid_are_skipped(est) -> None:
    view = node("a", 10 * est.total, 10 * est.total)
    view.avoid = {"cuda:0"}
    assert place(est, [view]).devices == ["cuda:1"]


def test_nowhere_raises_with_the_figures(est) -> None:
    with pytest.raises(DoesNotFit) as e:
        place(est, [node("a", est.total // 10, host=est.total // 10)])
    assert e.value.need == est.total and e.value.free == est.total // 10
