"""The gateway's long-lived objects, owned by the aiohttp app (no module-level globals)."""

from __future__ import annotations

import itertools
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


STATE: web.AppKey[GatewayState] = web.AppKey("herd_state", GatewayState)
