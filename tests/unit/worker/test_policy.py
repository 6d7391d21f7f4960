"""What a node accepts from a peer (worker/policy.py) and how gateways find workers
(gateway/cluster/discovery.py), without processes."""

from __future__ import annotations

import asyncio

import pytest

from herd.gateway.cluster.discovery import resolve, split_tcp
from herd.worker.policy import Refused, advertised, blob_path, is_loopback, runner_bind


def test_only_digests_of_blobs_in_the_store(tmp_path) -> None:
    digest = "ab" * 32
    (tmp_path / "blobs").mkdir()
    (tmp_path / "blobs" / f"sha256-{digest}").write_bytes(b"GGUF")
    assert blob_path(str(tmp_path), f"sha256:{digest}") == str(tmp_path / "blobs" / f"sha256-{digest}")
    for bad in ("/etc/passwd", f"sha256:{digest}/../x", "sha256:" + "AB" * 32, "md5:abc"):
        with pytest.raises(Refused, match="not a sha256 blob digest"):
            blob_path(str(tmp_path), bad)
    with pytest.raises(Refused, match="not in this worker's model store"):
        blob_path(str(tmp_path), "sha256:" + "cd" * 32)


def test_runners_bind_where_the_node_binds() -> None:
    assert runner_bind("tcp://10.1.2.3:11435") == "tcp://10.1.2.3:*"
    assert runner_bind("tcp://0.0.0.0:11435") == "tcp://0.0.0.0:*"
    assert advertised("tcp://0.0.0.0:4000", "worker-0") == "tcp://worker-0:4000"
    assert advertised("tcp://10.1.2.3:4000", "worker-0") == "tcp://10.1.2.3:4000"


def test_loopback_addresses() -> None:
    assert is_loopback("127.0.0.2") and is_loopback("[::1]") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("10.0.0.1") and not is_loopback("eth0")


def test_literal_endpoints_are_not_resolved() -> None:
    assert split_tcp("tcp://127.0.0.1:1") is None and split_tcp("ipc:///tmp/x") is None
    assert split_tcp("tcp://[::1]:1") is None
    assert split_tcp("tcp://herd-worker:11435") == ("herd-worker", "11435")
    assert asyncio.run(resolve("ipc:///tmp/x")) == ["ipc:///tmp/x"]


def test_a_load_spends_only_what_the_node_has(tmp_path) -> None:
    from herd.protocol.wire import DeviceInfo, RunnerSpec
    from herd.worker.policy import check_memory

    weights = tmp_path / "w"
    weights.write_bytes(b"\0" * 1000)
    devices = [DeviceInfo("cuda:0", 10_000, 4_000), DeviceInfo("cpu", 10_000, 10_000)]

    def spec(devs: list[str], memory: list[int]) -> RunnerSpec:
        return RunnerSpec(key="k", model_digest="d", num_ctx=16, num_parallel=1, devices=devs,
                          device_memory=memory)

    check_memory(spec(["cuda:0"], [3_000]), [str(weights)], devices)
    check_memory(spec(["cuda:0", "cpu"], [500, 600]), [str(weights)], devices)
    with pytest.raises(Refused, match="not enough memory on cuda:0"):
        check_memory(spec(["cuda:0"], [5_000]), [str(weights)], devices)
    with pytest.raises(Refused, match="no device cuda:1"):
        check_memory(spec(["cuda:1"], [100]), [str(weights)], devices)
    with pytest.raises(Refused, match="declares 10 bytes for 1000 bytes of weights"):
        check_memory(spec(["cuda:0"], [10]), [str(weights)], devices)
    with pytest.raises(Refused, match="without the memory"):
        check_memory(spec(["cuda:0"], []), [str(weights)], devices)
