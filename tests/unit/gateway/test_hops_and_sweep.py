"""Where a registry may send the gateway, and which temp files a start-up sweep may take."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from herd.gateway.errors import RegistryError
from herd.gateway.registry.limits import check_hop
from herd.gateway.store.blobs import sweepable, temp_prefix

BASE = "https://registry.example:5000"


@pytest.mark.parametrize("url,foreign_ok,allowed", [
    ("https://registry.example/v2/x", False, True),          # same host, any port
    ("https://REGISTRY.example:443/v2/x", False, True),
    ("https://cdn.example/blob?sig=1", False, False),          # a manifest or upload elsewhere
    ("https://cdn.example/blob?sig=1", True, True),            # a blob on a storage host
    ("http://registry.example/v2/x", False, False),            # https -> http
    ("http://cdn.example/blob", True, False),
    ("file:///etc/passwd", True, False),
])
def test_hops(url: str, foreign_ok: bool, allowed: bool) -> None:
    if allowed:
        check_hop(url, BASE, BASE + "/v2/x", foreign_ok=foreign_ok, what="t")
    else:
        with pytest.raises(RegistryError):
            check_hop(url, BASE, BASE + "/v2/x", foreign_ok=foreign_ok, what="t")


def test_sweep_takes_own_and_dead_processes_files_only() -> None:
    now = time.time()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    mine = temp_prefix() + "abc"
    assert sweepable(mine, now, now)
    assert sweepable(mine.replace(f".{os.getpid()}-", f".{dead.pid}-"), now, now)
    assert not sweepable(mine.replace(f".{os.getpid()}-", f".{os.getppid()}-"), now, now)
    assert not sweepable(".tmp-elsewhere.1-abc", now, now)
    assert sweepable(".tmp-elsewhere.1-abc", now - 2 * 86400, now)
    assert not sweepable(".tmp-abc", now, now) and sweepable(".tmp-abc", now - 2 * 86400, now)
    assert sweepable(f".{mine}.gguf.0a1b.partial", now, now)  # the quantizer's own output
