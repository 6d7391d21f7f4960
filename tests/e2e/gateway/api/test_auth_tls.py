"""Optional API keys and HTTPS (ollama#14003): HERD_API_KEYS guards every route but GET/HEAD /,
with a bearer token or the Anthropic SDK's x-api-key; HERD_TLS_CERT/HERD_TLS_KEY serve HTTPS.
One server here has both, with its keys in an @file and a self-signed certificate."""

from __future__ import annotations

import pathlib
import ssl
import subprocess

import anthropic
import httpx
import ollama
import openai
import pytest
from support.herd_server import HerdServer

KEYS = ("key-one", "key-two")


def self_signed(directory: pathlib.Path) -> tuple[pathlib.Path, pathlib.Path]:
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    return cert, key


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory, tiny_gguf: pathlib.Path):
    work = tmp_path_factory.mktemp("guarded")
    cert, key = self_signed(work)
    keys_file = work / "keys"
    keys_file.write_text(f"# one key a line\n{KEYS[0]}\n\n  {KEYS[1]}  \n")
    srv = HerdServer(work / "srv", env={"HERD_API_KEYS": f"@{keys_file}",
                                         "HERD_TLS_CERT": str(cert), "HERD_TLS_KEY": str(key)})
    with srv:
        client = ollama.Client(host=srv.url, verify=ssl.create_default_context(cafile=str(cert)),
                               headers={"Authorization": f"Bearer {KEYS[0]}"})
        client.create(model="tiny", files={"tiny.gguf": client.create_blob(tiny_gguf)})
        srv.tls_context = ssl.create_default_context(cafile=str(cert))  # type: ignore[attr-defined]
        yield srv


def get(srv, path: str, **headers: str) -> httpx.Response:
    return httpx.get(srv.url + path, headers=headers, verify=srv.tls_context)


def test_root_answers_without_a_key(guarded) -> None:
    assert get(guarded, "/").status_code == 200
    assert httpx.head(guarded.url + "/", verify=guarded.tls_context).status_code == 200


def test_every_other_route_needs_a_key(guarded) -> None:
    for path in ("/api/tags", "/api/version", "/api/ps", "/healthz", "/readyz", "/metrics"):
        r = get(guarded, path)
        assert r.status_code == 401, path
        assert r.json() == {"error": "unauthorized"}
    r = httpx.post(guarded.url + "/api/chat", json={"model": "tiny"}, verify=guarded.tls_context)
    assert r.status_code == 401 and r.json() == {"error": "unauthorized"}


def test_a_wrong_or_malformed_key_is_refused(guarded) -> None:
    for headers in ({"Authorization": "Bearer key-three"}, {"Authorization": "Bearer"},
                    {"Authorization": f"Basic {KEYS[0]}"}, {"Authorization": KEYS[0]},
                    {"x-api-key": "nope"}):
        assert get(guarded, "/api/tags", **headers).status_code == 401, headers


def test_any_listed_key_as_bearer_or_x_api_key(guarded) -> None:
    assert get(guarded, "/api/tags", Authorization=f"Bearer {KEYS[0]}").status_code == 200
    assert get(guarded, "/api/tags", Authorization=f"bearer {KEYS[1]}").status_code == 200
    assert get(guarded, "/api/tags", **{"x-api-key": KEYS[1]}).status_code == 200


def test_dialect_envelopes_on_401(guarded) -> None:
    r = get(guarded, "/v1/models")
    assert r.status_code == 401
    assert r.json()["error"]["message"] == "unauthorized"
    r = httpx.post(guarded.url + "/v1/messages", json={}, verify=guarded.tls_context)
    assert r.status_code == 401
    assert r.json() == {"type": "error", "error": {"type": "authentication_error",
                                                    "message": "unauthorized"}}


def test_sdks_send_their_keys(guarded) -> None:
    http = httpx.Client(verify=guarded.tls_context)
    oai = openai.OpenAI(base_url=guarded.url + "/v1", api_key=KEYS[1], http_client=http)
    assert [m.id for m in oai.models.list()] == ["tiny:latest"]
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=guarded.url + "/v1", api_key="wrong", http_client=http,
                      max_retries=0).models.list()
    import httpx2  # the Anthropic SDK's own HTTP package

    http = httpx2.Client(verify=guarded.tls_context)
    claude = anthropic.Anthropic(base_url=guarded.url, api_key=KEYS[0], http_client=http)
    reply = claude.messages.create(model="tiny", max_tokens=3,
                                   messages=[{"role": "user", "content": "hi"}])
    assert reply.usage.output_tokens == 3
    with pytest.raises(anthropic.AuthenticationError):
        anthropic.Anthropic(base_url=guarded.url, api_key="wrong", http_client=http,
                            max_retries=0).messages.create(
            model="tiny", max_tokens=3, messages=[{"role": "user", "content": "hi"}])


def test_https_only(guarded) -> None:
    """The certificate verifies for 127.0.0.1; plain HTTP on the port gets no answer."""
    r = httpx.get(guarded.url + "/", verify=guarded.tls_context)
    assert r.status_code == 200 and r.url.scheme == "https"
    with pytest.raises(httpx.HTTPError):
        httpx.get(guarded.url.replace("https://", "http://") + "/api/version", timeout=5)
