"""GET /metrics: Prometheus' text format from a registry the gateway owns; request counts by
route template, token counts from each generation's final output, scheduler gauges read at
scrape time. Counters are checked by how much they moved, never by wall-clock values."""

from __future__ import annotations

import pathlib

import httpx
from prometheus_client.parser import text_string_to_metric_families

from support.herd_server import HerdServer, wait_until

# The model label is the canonical name /api/ps shows, whatever spelling the request used.
MODEL = "tiny:latest"

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(url: str) -> Samples:
    r = httpx.get(url + "/metrics")
    assert r.status_code == 200, r.text
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(r.text) for s in family.samples}


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def moved(before: Samples, after: Samples, name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


def test_metrics_is_prometheus_text_format(server) -> None:
    r = httpx.get(server.url + "/metrics")
    assert r.status_code == 200
    media_type, *params = [p.strip() for p in r.headers["content-type"].split(";")]
    assert media_type == "text/plain"
    assert "version=0.0.4" in params
    names = {f.name for f in text_string_to_metric_families(r.text)}
    assert {"herd_http_requests", "herd_http_request_duration_seconds", "herd_queue_depth",
            "herd_loaded_models"} <= names


def test_metrics_offers_openmetrics_when_asked(server) -> None:
    r = httpx.get(server.url + "/metrics", headers={"Accept": "application/openmetrics-text"})
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/openmetrics-text")
    assert r.text.rstrip().endswith("# EOF")


def test_requests_and_tokens_are_counted(server) -> None:
    before = scrape(server.url)
    gen = httpx.post(server.url + "/api/generate", json={
        "model": "tiny", "prompt": "hello", "stream": False, "options": {"num_predict": 5}})
    assert gen.status_code == 200, gen.text
    chat = httpx.post(server.url + "/api/chat", json={
        "model": "tiny", "messages": [{"role": "user", "content": "hi"}], "stream": False,
        "options": {"num_predict": 4}})
    assert chat.status_code == 200, chat.text
    missing = httpx.post(server.url + "/api/generate", json={"model": "nope", "prompt": "x"})
    assert missing.status_code == 404
    blob = httpx.head(server.url + "/api/blobs/sha256:" + "0" * 64)
    assert blob.status_code == 404
    after = scrape(server.url)

    requests = "herd_http_requests_total"
    assert moved(before, after, requests, method="POST", route="/api/generate", status="200") == 1
    assert moved(before, after, requests, method="POST", route="/api/chat", status="200") == 1
    assert moved(before, after, requests, method="POST", route="/api/generate", status="404") == 1
    # The route template, not the URL with its digest.
    assert moved(before, after, requests, method="HEAD", route="/api/blobs/{digest}",
                 status="404") == 1
    assert not any("sha256:" in dict(labels).get("route", "") for _, labels in after)
    assert moved(before, after, "herd_http_request_duration_seconds_count",
                 route="/api/generate") == 2
    assert moved(before, after, "herd_http_request_duration_seconds_count", route="/api/chat") == 1

    model = MODEL
    body_gen, body_chat = gen.json(), chat.json()
    assert moved(before, after, "herd_generated_tokens_total", model=model) == (
        body_gen["eval_count"] + body_chat["eval_count"])
    assert moved(before, after, "herd_prompt_tokens_total", model=model) == (
        body_gen["prompt_eval_count"] + body_chat["prompt_eval_count"])
    assert moved(before, after, "herd_time_to_first_token_seconds_count", model=model) == 2
    # A missing model never reaches a runner: no tokens, no first token, no load.
    assert not any(dict(labels).get("model") == "nope" for _, labels in after)


def test_streamed_generation_counts_its_tokens(server) -> None:
    before = scrape(server.url)
    with httpx.stream("POST", server.url + "/api/generate", json={
            "model": "tiny", "prompt": "count", "options": {"num_predict": 6}}) as r:
        assert r.status_code == 200
        lines = [line for line in r.iter_lines() if line]
    last = httpx.Response(200, content=lines[-1]).json()
    after = scrape(server.url)
    model = MODEL
    assert last["done"] is True
    assert moved(before, after, "herd_generated_tokens_total", model=model) == last["eval_count"]
    assert moved(before, after, "herd_http_requests_total", method="POST", route="/api/generate",
                 status="200") == 1


def test_gauges_follow_the_loaded_model(server) -> None:
    r = httpx.post(server.url + "/api/generate", json={
        "model": "tiny", "prompt": "hi", "stream": False, "options": {"num_predict": 1}})
    assert r.status_code == 200, r.text
    model = MODEL
    samples = scrape(server.url)
    assert value(samples, "herd_loaded_models") == 1
    assert value(samples, "herd_queue_depth") == 0
    assert value(samples, "herd_loads_total", model=model, result="success") >= 1
    assert value(samples, "herd_loads_total", model=model, result="failure") == 0

    r = httpx.post(server.url + "/api/generate", json={"model": "tiny", "keep_alive": 0})
    assert r.status_code == 200, r.text
    assert wait_until(lambda: value(scrape(server.url), "herd_loaded_models") == 0)
    assert value(scrape(server.url), "herd_queue_depth") == 0


def test_metrics_needs_no_model(tmp_path: pathlib.Path) -> None:
    with HerdServer(tmp_path / "empty") as srv:
        samples = scrape(srv.url)
        assert value(samples, "herd_loaded_models") == 0
        assert value(samples, "herd_queue_depth") == 0
        assert srv.runner_pids() == []
        # The scrape itself is a counted request like any other.
        assert value(scrape(srv.url), "herd_http_requests_total", method="GET", route="/metrics",
                     status="200") >= 1


