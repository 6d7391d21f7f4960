"""A scripted registry for the cases a real one never produces: uppercase digests, oversized
manifests, redirects to other hosts, upload Locations elsewhere, huge error pages. Plain
http.server in a thread; each route is a function of the request, and every request is kept
(method, path, headers) so a test can see where the gateway went and what it sent."""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]


@dataclass
class Reply:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)


Route = Callable[[Seen], Reply]


class FakeRegistry:
    """`routes` maps (method, path regex) to a Route; unmatched requests get 404."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.routes: list[tuple[str, re.Pattern[str], Route]] = []
        self.seen: list[Seen] = []
        registry = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)
                seen = Seen(self.command, self.path, {k: v for k, v in self.headers.items()})
                registry.seen.append(seen)
                reply = Reply(404, b'{"errors":[{"code":"NOT_FOUND"}]}')
                for method, pattern, route in registry.routes:
                    if method == self.command and pattern.fullmatch(self.path.split("?")[0]):
                        reply = route(seen)
                        break
                self.send_response(reply.status)
                for key, value in reply.headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(reply.body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(reply.body)

            do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = _serve

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer((host, 0), Handler)
        self.port = self.server.server_address[1]
        self.host = f"{host}:{self.port}"
        self.url = f"http://{self.host}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def route(self, method: str, path: str, route: Route) -> None:
        self.routes.append((method, re.compile(path), route))

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self) -> FakeRegistry:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
