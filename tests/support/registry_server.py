"""A real OCI registry for tests: Debian's `docker-registry` (distribution 2.8) on a free port,
plain http, TLS with a self-signed certificate, or Bearer-token auth from a tiny token service
that signs JWTs with openssl."""

from __future__ import annotations

import base64
import json
import os
import pathlib
import secrets
import ssl
import subprocess
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from support.herd_server import free_port

REGISTRY_BIN = pathlib.Path("/usr/bin/docker-registry")
SERVICE = "herd-test-registry"
ISSUER = "herd-test-issuer"


def require_registry_binary() -> None:
    """CI installs docker-registry (.ci/run): there its absence is a failure, not a skip."""
    if os.access(REGISTRY_BIN, os.X_OK):
        return
    reason = f"{REGISTRY_BIN} not found: apt-get install docker-registry"
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(reason)
    pytest.skip(reason)


def self_signed_cert(folder: pathlib.Path) -> tuple[pathlib.Path, pathlib.Path]:
    """A certificate for 127.0.0.1, valid for a day: (cert.pem, key.pem)."""
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True)
    return cert, key


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


class TokenService:
    """Hands out RS256 JWTs granting whatever scope is asked; counts the requests."""

    def __init__(self, cert: pathlib.Path, key: pathlib.Path) -> None:
        der = subprocess.run(["openssl", "x509", "-in", str(cert), "-outform", "der"],
                             check=True, capture_output=True).stdout
        self.x5c = base64.b64encode(der).decode()
        self.key = key
        self.requests: list[str] = []
        service = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                service.requests.append(self.path)
                scope = parse_qs(urlsplit(self.path).query).get("scope", [""])[0]
                body = json.dumps({"token": service.token(scope)}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.realm = f"http://127.0.0.1:{self.server.server_address[1]}/token"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def token(self, scope: str) -> str:
        access = []
        if scope.count(":") == 2:
            kind, name, actions = scope.split(":")
            access = [{"type": kind, "name": name, "actions": actions.split(",")}]
        now = int(time.time())
        header = {"typ": "JWT", "alg": "RS256", "x5c": [self.x5c]}
        claims = {"iss": ISSUER, "sub": "herd", "aud": SERVICE, "exp": now + 600,
                  "nbf": now - 60, "iat": now, "jti": secrets.token_hex(8), "access": access}
        signing_input = (_b64url(json.dumps(header).encode()) + "."
                         + _b64url(json.dumps(claims).encode()))
        signature = subprocess.run(["openssl", "dgst", "-sha256", "-sign", str(self.key)],
                                   input=signing_input.encode(), check=True,
                                   capture_output=True).stdout
        return signing_input + "." + _b64url(signature)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class Registry:
    def __init__(self, workdir: pathlib.Path, *, tls: bool = False, token_auth: bool = False):
        self.workdir = workdir
        self.port = free_port()
        self.host = f"127.0.0.1:{self.port}"
        self.storage = workdir / "storage"
        self.log_path = workdir / "registry.log"
        self.cert: pathlib.Path | None = None
        self.tokens: TokenService | None = None
        self.process: subprocess.Popen[bytes] | None = None
        workdir.mkdir(parents=True, exist_ok=True)
        lines = ["version: 0.1", "log:", "  level: info", "storage:", "  filesystem:",
                 f"    rootdirectory: {self.storage}", "  delete:", "    enabled: true",
                 "http:", f"  addr: {self.host}"]
        if tls or token_auth:
            self.cert, key = self_signed_cert(workdir)
        if tls:
            lines += ["  tls:", f"    certificate: {self.cert}", f"    key: {key}"]
        if token_auth:
            self.tokens = TokenService(self.cert, key)  # type: ignore[arg-type]
            lines += ["auth:", "  token:", f"    realm: {self.tokens.realm}",
                      f"    service: {SERVICE}", f"    issuer: {ISSUER}",
                      f"    rootcertbundle: {self.cert}"]
        self.config = workdir / "config.yml"
        self.config.write_text("\n".join(lines) + "\n")
        self.url = f"{'https' if tls else 'http'}://{self.host}"

    def _verify(self) -> ssl.SSLContext | bool:
        return ssl.create_default_context(cafile=str(self.cert)) if self.cert else True

    def start(self) -> Registry:
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen([str(REGISTRY_BIN), "serve", str(self.config)],
                                            stdout=log, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL)
        try:
            return self._wait_until_up()
        except BaseException:
            self.stop()  # __exit__ never runs when __enter__ fails
            raise

    def _wait_until_up(self) -> Registry:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"docker-registry exited:\n{self.log()}")
            try:
                status = httpx.get(f"{self.url}/v2/", verify=self._verify(),
                                   timeout=1).status_code
                if status in (200, 401):
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"docker-registry did not come up:\n{self.log()}")

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
            self.process = None
        if self.tokens is not None:
            self.tokens.close()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def _read_log(self, offset: int) -> str:
        with open(self.log_path, "rb") as f:
            f.seek(offset)
            return f.read().decode(errors="replace")

    def mark(self) -> int:
        """A point in the access log after every request answered so far: a request of our own
        is logged, and lines are written as requests complete."""
        start = self.log_path.stat().st_size
        token = uuid.uuid4().hex
        httpx.get(f"{self.url}/v2/?mark={token}", verify=self._verify())
        deadline = time.monotonic() + 10
        while token not in self._read_log(start) and time.monotonic() < deadline:
            time.sleep(0.02)
        return self.log_path.stat().st_size

    def requests_since(self, offset: int, method: str, path_part: str) -> list[str]:
        """Access-log lines after `offset` (a mark) for `method` requests whose URI holds
        `path_part`."""
        text = self._read_log(offset)[:self.mark() - offset]
        return [line for line in text.splitlines() if "response completed" in line
                and f"http.request.method={method}" in line and path_part in line]

    def blob_data(self, digest: str) -> pathlib.Path:
        hex_ = digest.split(":", 1)[1]
        return (self.storage / "docker" / "registry" / "v2" / "blobs" / "sha256" / hex_[:2]
                / hex_ / "data")

    def __enter__(self) -> Registry:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
