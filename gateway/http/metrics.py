"""Prometheus metrics for one gateway: a registry owned by the app (several apps share a process in
tests, so never the library's global one), the HTTP middleware that counts every request in one
place, and a collector that reads the scheduler only when Prometheus scrapes."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

from aiohttp import web
from aiohttp.typedefs import Handler
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.aiohttp import make_aiohttp_handler
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from herd.gateway.cluster.scheduler import Scheduler
from herd.gateway.state import STATE
from herd.protocol.wire import RequestOutput

# Generations stream for minutes; the default buckets stop at 10 s.
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
                    120.0, 300.0, 600.0)
# The first token includes queueing and a possible model load, hence the long tail.
TTFT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)

UNMATCHED = "unmatched"  # the router found no route: one label, not one per probed URL
CLIENT_GONE = 499  # nginx's code for a client that closed the connection before the answer
# aiohttp accepts any token as a method: a label per invented one would grow without bound.
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
OTHER_METHOD = "other"


class SchedulerCollector(Collector):
    """Gauges and load counts read at scrape time, so the scheduler's hot path keeps no gauges
    up to date and stays free of Prometheus."""

    def __init__(self, scheduler: Scheduler) -> None:
        self.scheduler = scheduler

    def collect(self) -> Iterator[Metric]:
        yield GaugeMetricFamily("herd_queue_depth",
                                "Requests waiting for a model load or a free slot",
                                value=self.scheduler.queued)
        yield GaugeMetricFamily("herd_loaded_models", "Model runners loaded for this gateway",
                                value=len(self.scheduler.loaded))
        loads = CounterMetricFamily("herd_loads", "Model loads this gateway asked for, by result",
                                    labels=["model", "result"])
        for (model, result), count in sorted(self.scheduler.load_results.items()):
            loads.add_metric([model, result], count)
        yield loads
        yield from self._devices()
        yield from self._models()

    def _devices(self) -> Iterator[Metric]:
        total = GaugeMetricFamily("herd_device_memory_total_bytes",
                                  "Memory of each worker device", labels=["node", "device"])
        used = GaugeMetricFamily("herd_device_memory_used_bytes",
                                 "Memory the runners on each worker device hold (estimated)",
                                 labels=["node", "device"])
        free = GaugeMetricFamily("herd_device_memory_free_bytes",
                                 "Memory models may still take on each worker device",
                                 labels=["node", "device"])
        reserved = GaugeMetricFamily("herd_device_memory_reserved_bytes",
                                     "Memory held back on each GPU (OLLAMA_GPU_OVERHEAD)",
                                     labels=["node", "device"])
        for node in self.scheduler.nodes:
            held: dict[str, int] = {}
            for runner in node.info.runners:
                for device, size in zip(runner.devices, runner.device_memory):
                    held[device] = held.get(device, 0) + size
            for device in node.info.devices:
                total.add_metric([node.endpoint, device.id], device.total)
                used.add_metric([node.endpoint, device.id], held.get(device.id, 0))
                free.add_metric([node.endpoint, device.id], device.free)
                reserved.add_metric([node.endpoint, device.id], device.reserved)
        yield from (total, used, free, reserved)

    def _models(self) -> Iterator[Metric]:
        labels = ["model"]
        replicas = GaugeMetricFamily("herd_model_replicas", "Runners serving each model", labels=labels)
        busy = GaugeMetricFamily("herd_model_busy_slots", "Slots generating, per model", labels=labels)
        queued = GaugeMetricFamily("herd_model_queue_depth", "Requests waiting, per model",
                                   labels=labels)
        counts: dict[str, list[int]] = {}
        for group in self.scheduler.groups.values():
            row = counts.setdefault(group.entry.name.display, [0, 0, 0])
            row[0] += len(group.replicas)
            row[1] += sum(r.busy for r in group.replicas)
            row[2] += group.waiting
        for model, (n, b, q) in sorted(counts.items()):
            replicas.add_metric([model], n)
            busy.add_metric([model], b)
            queued.add_metric([model], q)
        yield replicas
        yield busy
        yield queued


class GatewayMetrics:
    def __init__(self, scheduler: Scheduler) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter("herd_http_requests", "HTTP requests answered",
                                ["method", "route", "status"], registry=self.registry)
        self.request_duration = Histogram(
            "herd_http_request_duration_seconds", "Time to answer an HTTP request, streams whole",
            ["route"], buckets=DURATION_BUCKETS, registry=self.registry)
        self.generated_tokens = Counter("herd_generated_tokens", "Tokens generated", ["model"],
                                        registry=self.registry)
        self.prompt_tokens = Counter("herd_prompt_tokens", "Prompt tokens evaluated", ["model"],
                                     registry=self.registry)
        # Speculative decoding: drafted tokens decoded, by whether the model kept them.
        self.draft_tokens = Counter("herd_draft_tokens", "Speculative tokens decoded, by outcome",
                                    ["model", "outcome"], registry=self.registry)
        self.time_to_first_token = Histogram(
            "herd_time_to_first_token_seconds",
            "From a generation's start (queue and load included) to the runner's first output",
            ["model"], buckets=TTFT_BUCKETS, registry=self.registry)
        self.registry.register(SchedulerCollector(scheduler))
        # The library's handler negotiates text format or OpenMetrics from Accept.
        self.handler = make_aiohttp_handler(self.registry, disable_compression=True)

    def first_output(self, model: str, seconds: float) -> None:
        self.time_to_first_token.labels(model).observe(seconds)

    def finished(self, model: str, final: RequestOutput) -> None:
        """Counts come from the final output only: nothing is recorded per token."""
        self.prompt_tokens.labels(model).inc(final.prompt_tokens)
        self.generated_tokens.labels(model).inc(final.eval_tokens)
        if final.drafted_tokens:
            self.draft_tokens.labels(model, "accepted").inc(final.accepted_tokens)
            self.draft_tokens.labels(model, "rejected").inc(
                final.drafted_tokens - final.accepted_tokens)

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        if method not in KNOWN_METHODS:
            method = OTHER_METHOD
        self.requests.labels(method, route, str(status)).inc()
        self.request_duration.labels(route).observe(seconds)


def route_name(request: web.Request) -> str:
    """The matched route's template (`/api/blobs/{digest}`), never the raw path."""
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else UNMATCHED


@web.middleware
async def metrics_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Outermost, so it sees the status the client gets, errors and CORS refusals included."""
    t0 = time.perf_counter()
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as e:
        status = e.status
        raise
    except asyncio.CancelledError:
        status = CLIENT_GONE
        raise
    finally:
        request.app[STATE].metrics.observe_request(request.method, route_name(request), status,
                                                   time.perf_counter() - t0)


routes = web.RouteTableDef()


@routes.get("/metrics")
async def scrape(request: web.Request) -> web.Response:
    """Prometheus' scrape: no model, no store; the scheduler is read, not asked."""
    return await request.app[STATE].metrics.handler(request)
