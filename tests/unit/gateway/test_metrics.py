"""The metrics registry belongs to each gateway app, not to the process."""

from __future__ import annotations

from types import SimpleNamespace

from herd.gateway.http.metrics import GatewayMetrics


def test_each_gateway_has_its_own_registry() -> None:
    """Several apps in one process (tests, embedded use) must not collide in a global registry."""
    scheduler = SimpleNamespace(queued=0, loaded=[], load_results={("m:latest", "success"): 2},
                                nodes=[], groups={})
    first, second = GatewayMetrics(scheduler), GatewayMetrics(scheduler)  # type: ignore[arg-type]
    first.observe_request("GET", "/api/tags", 200, 0.01)
    assert first.registry.get_sample_value(
        "herd_http_requests_total", {"method": "GET", "route": "/api/tags", "status": "200"}) == 1
    assert second.registry.get_sample_value(
        "herd_http_requests_total", {"method": "GET", "route": "/api/tags", "status": "200"}) is None
    assert first.registry.get_sample_value(
        "herd_loads_total", {"model": "m:latest", "result": "success"}) == 2
