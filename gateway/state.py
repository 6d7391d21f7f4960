"""The gateway's long-lived objects, owned by the aiohttp app (no module-level globals)."""

from __future__ import annotations

import itertools
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from aiohttp import web

from herd.gateway.cluster.scheduler import Scheduler
from herd.gateway.store.models import ModelStore
from herd.protocol.config import Settings

if TYPE_CHECKING:  # herd.gateway.http.metrics reads STATE from here
    from herd.gateway.http.metrics import GatewayMetrics


@dataclass(eq=False)
class GatewayState:
    settings: Settings
    store: ModelStore
    scheduler: Scheduler
    metrics: GatewayMetrics
    request_ids: itertools.count = field(default_factory=lambda: itertools.count(1))
    # Create jobs get threads of their own: a conversion or quantization holds its thread for
    # minutes, and the default pool is what every route that reads the store (and every pull's
    # DNS lookup) needs. More creates than this wait their turn.
    create_pool: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(CREATE_THREADS, thread_name_prefix="herd-create"))


CREATE_THREADS = 4

STATE: web.AppKey[GatewayState] = web.AppKey("herd_state", GatewayState)
