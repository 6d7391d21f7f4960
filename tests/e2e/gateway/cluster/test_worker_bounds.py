"""A worker obeys only what is its own: weights from its own store by digest, a bounded number
of runners per peer, bounded message sizes, leases that end when a gateway goes silent, runner
sockets on the node's own address. Driven by a raw peer speaking the node protocol."""

from __future__ import annotations

import pytest

from support.cluster import RawGateway, Refused, blob_digest
from support.herd_server import HerdServer, free_port, wait_until
from herd.protocol.wire import Hello, WireCodec


@pytest.fixture
def worker(tmp_path):
    def start(**env: str) -> tuple[HerdServer, str]:
        endpoint = f"tcp://127.0.0.1:{free_port()}"
        srv = HerdServer(tmp_path / "worker", models_dir=tmp_path / "models",
                         command=("worker", "--bind", endpoint), env=env).start()
        started.append(srv)
        return srv, endpoint

    started: list[HerdServer] = []
    yield start
    for srv in started:
        srv.stop()


def test_only_blobs_of_its_own_store_by_digest(worker, tmp_path, tiny_gguf) -> None:
    srv, endpoint = worker()
    digest = blob_digest(tmp_path / "models", tiny_gguf)
    with RawGateway(endpoint) as peer:
        for bad, why in [(str(tiny_gguf), "is not a sha256 blob digest"),
                         ("sha256:../../etc/passwd", "is not a sha256 blob digest"),
                         ("sha256:" + "0" * 64, "is not in this worker's model store")]:
            with pytest.raises(Refused, match=why):
                peer.load(bad, key=f"bad-{bad}")
        with pytest.raises(Refused, match="is not a sha256 blob digest"):
            peer.load(digest, key="bad-adapter", adapters=["/etc/passwd"])
        assert srv.runner_pids() == []
        loaded = peer.load(digest, key="good")
        assert len(srv.runner_pids()) == 1
    # Bound where the node is bound (127.0.0.1), not on every interface.
    assert loaded.endpoint.startswith("tcp://127.0.0.1:")


def test_runners_per_peer_are_bounded(worker, tmp_path, tiny_gguf) -> None:
    srv, endpoint = worker(HERD_MAX_RUNNERS_PER_PEER="1")
    digest = blob_digest(tmp_path / "models", tiny_gguf)
    with RawGateway(endpoint) as one, RawGateway(endpoint) as other:
        one.load(digest, key="a")
        with pytest.raises(Refused, match="already holds 1 runners"):
            one.load(digest, key="b")
        other.load(digest, key="b")  # the bound is per peer, not per node
        assert len(srv.runner_pids()) == 2


def test_an_oversized_message_is_dropped_and_the_node_keeps_serving(worker) -> None:
    srv, endpoint = worker()
    codec = WireCodec()
    with RawGateway(endpoint) as peer:
        peer.hello()
        kind, _ = codec.encode(Hello())
        peer.sock.send_multipart([kind, b"\0" * (2 * 1024 * 1024)])
    with RawGateway(endpoint) as fresh:
        assert fresh.hello().node_id
    assert srv.process is not None and srv.process.poll() is None


def test_a_silent_gateway_loses_its_runners(worker, tmp_path, tiny_gguf) -> None:
    """A gateway restarted (or killed) leaves no runner alive for ever: without heartbeats its
    lease expires and a runner nobody else holds stops."""
    srv, endpoint = worker(HERD_LEASE_TIMEOUT="2")
    digest = blob_digest(tmp_path / "models", tiny_gguf)
    with RawGateway(endpoint) as peer:
        peer.load(digest, key="leased")
        assert len(srv.runner_pids()) == 1
    assert wait_until(lambda: srv.runner_pids() == [], timeout=60)
