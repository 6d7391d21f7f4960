"""Every status-bearing error of the gateway, in one place. Each carries its HTTP status;
herd.gateway.http.errors maps them to the body each API dialect's clients expect."""

from __future__ import annotations



class HerdError(Exception):
    status = 500
    headers: dict[str, str] | None = None  # extra response headers (Retry-After)

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        if status is not None:
            self.status = status


class BadRequest(HerdError):
    status = 400


class UnsupportedMediaType(HerdError):
    """A JSON route sent a body of another type (a page's text/plain or form-data POST)."""

    status = 415


class NotFound(HerdError):
    status = 404


class ModelNotFound(NotFound):
    def __init__(self, name: str) -> None:
        super().__init__(f"model '{name}' not found")


class ServerBusy(HerdError):
    status = 503
    headers = {"Retry-After": "1"}

    def __init__(self) -> None:
        super().__init__("server busy, please try again.  maximum pending requests exceeded")


def _gib(n: int) -> str:
    return f"{n / 2**30:.1f} GiB"


class ModelTooLarge(HerdError):
    """No device of any node holds the model, even with every idle model evicted."""

    status = 400

    def __init__(self, need: int, free: int) -> None:
        super().__init__(f"model requires more memory than is available: it needs "
                         f"{_gib(need)} ({need} bytes), the most free on any device is "
                         f"{_gib(free)} ({free} bytes)")


class ServerDraining(HerdError):
    """SIGTERM: this gateway finishes what it has and takes nothing new (the load balancer
    retries elsewhere; /readyz already says 503)."""

    status = 503

    def __init__(self) -> None:
        super().__init__("server is shutting down, please try again")


class RequestCanceled(HerdError):
    status = 499

    def __init__(self) -> None:
        super().__init__("request canceled")


class RunnerError(HerdError):
    status = 500


RUNNER_STOPPED = ("model runner has unexpectedly stopped, this may be due to resource limitations "
                  "or an internal error, check ollama server logs for details")


class StreamFailed(HerdError):
    """A generation that the runner reported as failed, or whose runner went away."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message, status)


class RegistryError(HerdError):
    """Any failure talking to a registry (status 500, as Ollama's pull and push)."""


class RegistryUnreachable(RegistryError):
    """The registry could not be reached at all: no answer, refused, DNS, TLS."""


class ManifestNotFound(RegistryError):
    def __init__(self) -> None:
        super().__init__("pull model manifest: file does not exist")


class DigestMismatch(HerdError):
    def __init__(self, want: str, got: str) -> None:
        super().__init__(f"digest mismatch, file must be downloaded again: want {want}, got {got}")


class Unauthorized(HerdError):
    """HERD_API_KEYS is set and the request carried none of them."""

    status = 401

    def __init__(self) -> None:
        super().__init__("unauthorized")


class NotReady(HerdError):
    """GET /readyz: this gateway cannot serve yet (no worker node answers, store unreadable)."""

    status = 503
