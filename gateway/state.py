"""The gateway's long-lived objects, owned by the aiohttp app (no module-level globals)."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from aiohttp import web

from gateway.scheduler import Scheduler
from gateway.store import ModelStore
from protocol.config import Settings

if TYPE_CHECKING:  # gateway.metrics reads STATE from here
    from gateway.metrics import GatewayMetrics


@dataclass(eq=False)
class GatewayState:
    settings: Settings
    store: ModelStore
    scheduler: Scheduler
    metrics: GatewayMetrics
    request_ids: itertools.count = field(default_factory=lambda: itertools.count(1))


STATE: web.AppKey[GatewayState] = web.AppKey("herd_state", GatewayState)
