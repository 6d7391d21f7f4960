"""The `herd` command's import boundaries, each checked in a fresh interpreter (this process
has imported everything already): the CLI reaches the server only over HTTP, so no cli module
imports herd.gateway or herd.worker, and `herd worker` / `herd serve` build their parser without
loading the HTTP client stack (httpx), rich or aiohttp."""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys

import pytest

CLI = pathlib.Path(__file__).resolve().parents[3] / "cli"
MODULES = sorted(f"herd.cli.{p.stem}" for p in CLI.glob("*.py")
                 if p.stem not in ("__init__", "__main__"))


def _modules_after(code: str) -> list[str]:
    """The names in sys.modules after running `code` in a new interpreter."""
    out = subprocess.run([sys.executable, "-c", f"{code}\nimport json, sys\n"
                          "print(json.dumps(sorted(sys.modules)))"],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.splitlines()[-1])


@pytest.mark.parametrize("role", ["worker", "serve", "gateway"])
def test_a_server_role_loads_no_http_client_stack(role: str) -> None:
    loaded = _modules_after("import herd.cli.main\nfrom herd.cli.commands import build_parser\n"
                            f"build_parser().parse_args([{role!r}])")
    heavy = [name for name in loaded if name.split(".")[0] in ("httpx", "rich", "aiohttp")]
    assert heavy == []
    # Nor any command's module: each is imported when its command runs.
    assert [n for n in loaded if n.startswith("herd.cli.")] == ["herd.cli.commands",
                                                               "herd.cli.common", "herd.cli.main"]


def test_the_cli_modules_are_all_checked() -> None:
    assert {"herd.cli.client", "herd.cli.main", "herd.cli.run", "herd.cli.chat"} <= set(MODULES)


@pytest.mark.parametrize("module", MODULES)
def test_no_cli_module_imports_the_server(module: str) -> None:
    loaded = _modules_after(f"import {module}")
    assert [n for n in loaded if n.split(".")[:2] in (["herd", "gateway"], ["herd", "worker"])] == []
