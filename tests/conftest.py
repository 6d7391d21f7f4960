from __future__ import annotations

import functools
import pathlib
import sys

import httpx
import pytest

sys.path.insert(0, str(pathlib.Path(__file__).parent))

from support.herd_server import HerdServer  # noqa: E402


def _patient(call):
    """httpx's 5 s default is too short for a 2-core machine that is also compiling; tests
    detect hangs with pytest-timeout, not with HTTP timeouts."""

    @functools.wraps(call)
    def with_timeout(*args, **kwargs):
        kwargs.setdefault("timeout", 60.0)
        return call(*args, **kwargs)

    return with_timeout


for _name in ("get", "post", "head", "options", "delete", "request", "stream"):
    setattr(httpx, _name, _patient(getattr(httpx, _name)))
from support.tiny_models import write_tiny_llama  # noqa: E402


@pytest.fixture(scope="session")
def tiny_gguf(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    return write_tiny_llama(tmp_path_factory.mktemp("gguf") / "tiny.gguf", seed=0)


@pytest.fixture(scope="session")
def tiny_gguf_no_template(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    return write_tiny_llama(tmp_path_factory.mktemp("gguf") / "tiny-nt.gguf", seed=1,
                            chat_template=None)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, tiny_gguf: pathlib.Path):
    """A shared server with the tiny model created as `tiny`."""
    srv = HerdServer(tmp_path_factory.mktemp("herd"))
    with srv:
        srv.create_model("tiny", tiny_gguf)
        yield srv


@pytest.fixture
def make_server(tmp_path: pathlib.Path, tiny_gguf: pathlib.Path):
    """Starts servers with special settings; each gets the tiny model; all stop at teardown."""
    started: list[HerdServer] = []

    def start(**env: str) -> HerdServer:
        srv = HerdServer(tmp_path / f"srv{len(started)}", env=env).start()
        started.append(srv)
        srv.create_model("tiny", tiny_gguf)
        return srv

    yield start
    for srv in started:
        srv.stop()


@pytest.fixture(scope="module")
def models(server):
    """The module's server with `tiny-tools` (Qwen2.5's tool-aware template) and `tiny-think`
    (a template whose prompt opens a <think> block)."""
    from support.tool_templates import QWEN25_TEMPLATE, THINKING_TEMPLATE

    server.client().create(model="tiny-tools", from_="tiny", template=QWEN25_TEMPLATE)
    server.client().create(model="tiny-think", from_="tiny", template=THINKING_TEMPLATE)
    return server
