"""A gateway app in this process, over the fake cluster: `async with gateway(...) as g` gives
an aiohttp test client with models created through the real /api/create route."""

from __future__ import annotations

import hashlib
import pathlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from aiohttp.test_utils import TestClient, TestServer

from herd.gateway.app import create_app
from herd.gateway.placement.estimate import MemoryEstimate, estimate
from herd.protocol.config import Settings
from support.fake_cluster import FakeCluster


@dataclass
class InProcessGateway:
    client: TestClient
    cluster: FakeCluster
    settings: Settings

    async def create(self, name: str, gguf: pathlib.Path) -> None:
        data = gguf.read_bytes()
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        r = await self.client.post(f"/api/blobs/{digest}", data=data)
        assert r.status in (200, 201), await r.text()
        r = await self.client.post("/api/create", json={"model": name, "stream": False,
                                                          "files": {gguf.name: digest}})
        assert r.status == 200, await r.text()

    def estimate(self, gguf: pathlib.Path) -> MemoryEstimate:
        """What the scheduler will estimate for this model at these settings."""
        s = self.settings
        return estimate(str(gguf), n_ctx_per_seq=s.context_length, n_seq=s.num_parallel,
                        n_batch=s.num_batch, cache_type=s.kv_cache_type)

    async def ps(self) -> list[dict]:
        r = await self.client.get("/api/ps")
        return (await r.json())["models"]


@asynccontextmanager
async def gateway(tmp: pathlib.Path, cluster: FakeCluster, **settings: object
                  ) -> AsyncIterator[InProcessGateway]:
    values = {"models_dir": str(tmp / "models"), "run_dir": str(tmp / "run"),
              "default_model": "", "context_length": 256, "num_parallel": 1, "num_batch": 32,
              **settings}
    config = Settings(**values)  # type: ignore[arg-type]
    app = create_app(config, list(cluster.devices), connect_node=cluster.connect_node,
                     connect_runner=cluster.connect_runner)
    client = TestClient(TestServer(app))
    await client.start_server()
    try:
        yield InProcessGateway(client, cluster, config)
    finally:
        await client.close()
