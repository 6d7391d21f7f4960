"""Herd installs under one `herd.` namespace, so it never shadows (or is shadowed by) another
distribution's top-level `protocol`, `worker`, `gateway` or `cli`."""

from __future__ import annotations

import pathlib
import tomllib

from support import ROOT

FOLDERS = {"gateway", "worker", "protocol", "cli"}


def test_every_package_folder_installs_under_the_herd_namespace() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert config["package-dir"] == {f"herd.{f}": f for f in FOLDERS}
    on_disk = {"herd." + ".".join(init.parent.relative_to(ROOT).parts)
               for folder in FOLDERS for init in (ROOT / folder).rglob("__init__.py")}
    assert set(config["packages"]) == on_disk


def test_no_top_level_import_names_are_left() -> None:
    for path in ROOT.glob("*/**/*.py"):
        if path.parts[len(ROOT.parts)] in FOLDERS | {"tests", "bench"}:
            text = path.read_text()
            for name in FOLDERS:
                assert f"\nfrom {name}." not in text and f"\nimport {name}." not in text, path


def test_the_console_script_is_the_cli() -> None:
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts == {"herd": "herd.cli.main:main"}


def test_installed_names_do_not_depend_on_the_working_directory() -> None:
    import herd.protocol.wire

    assert pathlib.Path(herd.protocol.wire.__file__).parent.name == "protocol"
