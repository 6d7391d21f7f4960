"""CORS for browser clients and the DNS-rebinding guard, as Ollama does them."""

from __future__ import annotations

import httpx



def test_server_sends_cors_headers_on_plain_and_streamed_responses(server) -> None:
    origin = {"Origin": "http://localhost:3000"}
    r = httpx.get(server.url + "/api/tags", headers=origin)
    assert r.headers["access-control-allow-origin"] == "http://localhost:3000"
    with httpx.stream("POST", server.url + "/api/generate", headers=origin, timeout=60,
                      json={"model": "tiny", "prompt": "hi", "options": {"num_predict": 2}}) as s:
        assert s.headers["access-control-allow-origin"] == "http://localhost:3000"
    r = httpx.get(server.url + "/api/tags", headers={"Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in r.headers


def test_preflight(server) -> None:
    r = httpx.options(server.url + "/api/chat", headers={
        "Origin": "http://localhost:5173", "Access-Control-Request-Method": "POST"})
    assert r.status_code == 204
    assert "Content-Type" in r.headers["access-control-allow-headers"]
    r = httpx.options(server.url + "/api/chat", headers={"Origin": "https://evil.example"})
    assert r.status_code == 403


def test_rebinding_host_is_forbidden_on_loopback(server) -> None:
    r = httpx.get(server.url + "/api/tags", headers={"Host": "attacker.example"})
    assert r.status_code == 403


def _copies(server) -> list[str]:
    return [m["name"] for m in httpx.get(server.url + "/api/tags").json()["models"]
            if m["name"].startswith("stolen")]


def test_a_disallowed_origin_is_refused_on_every_method(server) -> None:
    """Ollama puts gin-contrib/cors in front of every route (server/routes.go, GenerateRoutes);
    its applyCors aborts with 403 for an Origin it does not allow, preflight or not. A page's
    text/plain POST needs no preflight, so that is what must be refused."""
    body = '{"source": "tiny", "destination": "stolen"}'
    for headers in ({"Origin": "https://evil.example", "Content-Type": "text/plain"},
                    {"Origin": "https://evil.example", "Content-Type": "application/json"},
                    {"Origin": "null", "Content-Type": "application/x-www-form-urlencoded"}):
        r = httpx.post(server.url + "/api/copy", content=body, headers=headers)
        assert r.status_code == 403, headers
    assert httpx.get(server.url + "/api/tags",
                     headers={"Origin": "https://evil.example"}).status_code == 403
    assert _copies(server) == []
    assert httpx.get(server.url + "/api/version").status_code == 200


def test_allowed_and_same_origins_pass(server) -> None:
    """applyCors lets `Origin: http://<Host>` through as no CORS request at all."""
    own = {"Origin": server.url, "Content-Type": "application/json"}
    local = {"Origin": "http://localhost:3000", "Content-Type": "application/json"}
    for i, headers in enumerate((own, local)):
        r = httpx.post(server.url + "/api/copy", headers=headers,
                       content=f'{{"source": "tiny", "destination": "stolen{i}"}}')
        assert r.status_code == 200
    assert sorted(_copies(server)) == ["stolen0:latest", "stolen1:latest"]
    for name in _copies(server):
        httpx.request("DELETE", server.url + "/api/delete", json={"model": name})


def test_json_routes_refuse_other_content_types(server) -> None:
    """Ollama's clients send application/json and `curl -d` sends form-urlencoded: both work,
    as does no type at all; the types a page can send without a preflight are refused."""
    body = '{"model": "tiny"}'
    for media_type in ("text/plain", "text/plain;charset=UTF-8", "multipart/form-data; boundary=x",
                       "application/octet-stream"):
        r = httpx.post(server.url + "/api/show", content=body,
                       headers={"Content-Type": media_type})
        assert r.status_code == 415, media_type
        assert "application/json" in r.json()["error"]
    for media_type in ("application/json", "application/json; charset=utf-8",
                       "application/x-www-form-urlencoded"):
        r = httpx.post(server.url + "/api/show", content=body,
                       headers={"Content-Type": media_type})
        assert r.status_code == 200, media_type
    assert httpx.post(server.url + "/api/show", content=body).status_code == 200  # no type


def test_metrics_method_label_is_bounded(server) -> None:
    for method in ("BREW", "PROPFIND", "X-ANYTHING"):
        httpx.request(method, server.url + "/api/tags")
    text = httpx.get(server.url + "/metrics").text
    assert 'method="other"' in text
    assert "BREW" not in text and "PROPFIND" not in text and "X-ANYTHING" not in text
