"""Helpers for multi-process cluster tests: key pairs, blobs in a worker's store, and a raw
gateway that speaks the node protocol (protocol/wire.py) over a real ZeroMQ socket, to check what
a worker does for a peer that is not a well-behaved Herd gateway."""

from __future__ import annotations

import hashlib
import itertools
import pathlib
import shutil

import zmq
import zmq.auth

from herd.protocol.curve import keygen as _keygen
from herd.protocol.wire import (Hello, LoadFailed, LoadModel, ModelLoaded, NodeInfo, RunnerSpec,
                                WireCodec)


def keygen(path: pathlib.Path) -> None:
    _keygen(str(path))


def blob_digest(models_dir: pathlib.Path, gguf: pathlib.Path) -> str:
    """Puts `gguf` in the store as a blob (if it is not there yet) and returns its digest."""
    digest = hashlib.sha256(gguf.read_bytes()).hexdigest()
    blob = models_dir / "blobs" / f"sha256-{digest}"
    if not blob.exists():
        blob.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(gguf, blob)
    return f"sha256:{digest}"


class Refused(Exception):
    pass


class RawGateway:
    def __init__(self, endpoint: str, secret_key: pathlib.Path | None = None,
                 server_key: pathlib.Path | None = None) -> None:
        self.codec = WireCodec()
        self.sock = zmq.Context.instance().socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        if secret_key is not None and server_key is not None:
            public, secret = zmq.auth.load_certificate(str(secret_key))
            self.sock.curve_publickey, self.sock.curve_secretkey = public, secret
            self.sock.curve_serverkey = zmq.auth.load_certificate(str(server_key))[0]
        self.sock.connect(endpoint)
        self._ids = itertools.count(1)

    def _recv(self, timeout_ms: int = 120_000):
        if not self.sock.poll(timeout_ms):
            raise TimeoutError("the node did not answer")
        return self.codec.decode(*self.sock.recv_multipart())

    def hello(self) -> NodeInfo:
        self.sock.send_multipart(self.codec.encode(Hello()))
        while True:
            message = self._recv()
            if isinstance(message, NodeInfo):
                return message

    def load(self, model_digest: str, key: str, adapters: list[str] | None = None,
             ) -> ModelLoaded:
        request_id = next(self._ids)
        spec = RunnerSpec(key=key, model_digest=model_digest, num_ctx=64, num_parallel=1,
                          num_threads=1, adapter_digests=adapters or [])
        self.sock.send_multipart(self.codec.encode(LoadModel(request_id, spec)))
        while True:
            message = self._recv()
            if isinstance(message, ModelLoaded) and message.request_id == request_id:
                return message
            if isinstance(message, LoadFailed) and message.request_id == request_id:
                raise Refused(message.error)

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> RawGateway:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class TcpProxy:
    """A TCP relay on loopback in front of a worker node, whose link a test can cut: `cut()`
    closes every connection and refuses new ones until `restore()`. A real outage for the real
    ZeroMQ sockets on both sides (no mock of either)."""

    def __init__(self, target_port: int) -> None:
        import socket
        import threading

        self.target = ("127.0.0.1", target_port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.open = True
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def endpoint(self) -> str:
        return f"tcp://127.0.0.1:{self.port}"

    def _accept(self) -> None:
        import socket
        import threading

        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if not self.open:
                client.close()
                continue
            try:
                upstream = socket.create_connection(self.target)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src, dst) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.close()
                except OSError:
                    pass

    def cut(self) -> None:
        import socket

        self.open = False
        with self._lock:
            conns, self._conns = self._conns, []
        for s in conns:
            try:
                s.shutdown(socket.SHUT_RDWR)
                s.close()
            except OSError:
                pass

    def restore(self) -> None:
        self.open = True

    def close(self) -> None:
        self.cut()
        self.listener.close()
