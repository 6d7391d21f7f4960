"""`herd list|show|cp|rm|create` run as subprocesses against a real server over real HTTP."""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess
import sys
from collections.abc import Callable
from datetime import datetime, timedelta, timezone

import httpx
import pytest

from herd.cli.models import human_time
from herd.cli.common import base_url, human_bytes
from support.herd_server import ROOT, free_port
from support.tiny_models import write_tiny_llama, write_tiny_lora

Result = subprocess.CompletedProcess[str]
Run = Callable[..., Result]


def run_many(host: str, *commands: list[str], cwd: pathlib.Path = ROOT) -> list[Result]:
    """Runs the commands side by side: each start pays ~0.6 s of imports, so this keeps the
    file fast. Only for commands that do not depend on each other."""
    # The caller's PYTHONPATH first: a worktree's herd.* namespace, not the installed one.
    path = os.pathsep.join(p for p in (os.environ.get("PYTHONPATH", ""), str(ROOT)) if p)
    env = {**os.environ, "OLLAMA_HOST": host, "PYTHONPATH": path}
    procs = [subprocess.Popen([sys.executable, "-m", "herd.cli", *args], cwd=cwd, env=env,
                              text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for args in commands]
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        results.append(subprocess.CompletedProcess(proc.args, proc.returncode, out, err))
    return results


def run_cli(host: str, *args: str, cwd: pathlib.Path = ROOT) -> Result:
    return run_many(host, list(args), cwd=cwd)[0]


@pytest.fixture
def host(server) -> str:
    return f"127.0.0.1:{server.port}"


@pytest.fixture
def herd(host: str) -> Run:
    def run(*args: str, cwd: pathlib.Path = ROOT) -> Result:
        return run_cli(host, *args, cwd=cwd)
    return run


def ok(result: Result) -> str:
    assert result.returncode == 0, result.stderr
    return result.stdout


def tags(server) -> dict[str, dict]:
    return {m["name"]: m for m in httpx.get(f"{server.url}/api/tags").json()["models"]}


def show(server, name: str) -> dict:
    return httpx.post(f"{server.url}/api/show", json={"model": name}).json()


def test_list_shows_tiny(server, host: str) -> None:
    digest = tags(server)["tiny:latest"]["digest"]
    for result in run_many(host, ["list"], ["ls"]):
        header, *rows = ok(result).splitlines()
        assert header.split() == ["NAME", "ID", "SIZE", "MODIFIED"]
        row = next(r for r in rows if r.startswith("tiny:latest "))
        assert row.split()[1] == digest[:12]
        assert row.split()[3] == "KB" and row.endswith(" ago")


def test_show_summary_and_fields(server, host: str) -> None:
    summary, modelfile, template, both, ghost = run_many(
        host, ["show", "tiny"], ["show", "tiny", "--modelfile"], ["show", "tiny", "--template"],
        ["show", "tiny", "--system", "--license"], ["show", "ghost"])
    assert ok(summary).startswith("  Model\n")
    for expected in ("architecture        llama", "context length      2048",
                     "embedding length    64", "quantization        F32",
                     "  Capabilities\n    completion"):
        assert expected in summary.stdout
    assert "Parameters" not in summary.stdout  # tiny has none
    reference = show(server, "tiny")
    assert ok(modelfile).startswith("# Modelfile generated")
    assert modelfile.stdout == reference["modelfile"] + "\n"
    assert ok(template).rstrip("\n") == reference["template"]
    assert both.returncode != 0 and "not allowed with" in both.stderr
    assert ghost.returncode == 1 and ghost.stderr == "Error: model 'ghost:latest' not found\n"


def test_copy_then_delete(server, host: str, herd: Run) -> None:
    first, second, ghost = run_many(
        host, ["cp", "tiny", "tiny-copy"], ["cp", "tiny", "tiny-copy2"], ["rm", "ghost"])
    assert ok(first) == "copied 'tiny' to 'tiny-copy'\n"
    ok(second)
    assert ghost.returncode == 1
    assert ghost.stderr == "Error: model 'ghost' not found\n"
    assert "tiny-copy:latest" in ok(herd("list"))

    removed = herd("rm", "tiny-copy", "tiny-copy2")
    assert ok(removed) == "deleted 'tiny-copy'\ndeleted 'tiny-copy2'\n"
    assert [name for name in tags(server) if name.startswith("tiny")] == ["tiny:latest"]


def test_create_from_local_gguf_with_adapter(server, host: str, herd: Run,
                                             tiny_gguf: pathlib.Path, tmp_path: pathlib.Path
                                             ) -> None:
    folder = tmp_path / "build"
    folder.mkdir()
    shutil.copy(tiny_gguf, folder / "tiny.gguf")
    # A new file, so the upload really goes over POST /api/blobs (tiny.gguf is there already).
    write_tiny_lora(folder / "lora.gguf")
    (folder / "Modelfile").write_text(
        "FROM ./tiny.gguf\n"
        "ADAPTER ./lora.gguf\n"
        "PARAMETER temperature 0.25\n"
        'PARAMETER stop "<|im_end|>"\n'
        'PARAMETER stop "END"\n'
        'SYSTEM """You are a\nterse assistant."""\n'
        "LICENSE MIT\n"
        "MESSAGE user hi\n")
    # From another folder: paths resolve against the Modelfile's folder, not the cwd.
    result = herd("create", "made", "-f", str(folder / "Modelfile"), cwd=tmp_path)
    assert ok(result) == "success\n"
    assert "copying file sha256:" in result.stderr and "writing manifest" in result.stderr

    info = show(server, "made")
    assert info["system"] == "You are a\nterse assistant."
    assert info["license"] == "MIT"
    assert info["messages"] == [{"role": "user", "content": "hi"}]
    assert "temperature                    0.25" in info["parameters"]
    assert "ADAPTER " in info["modelfile"]
    params, system, license_, summary = run_many(
        host, ["show", "made", "--parameters"], ["show", "made", "--system"],
        ["show", "made", "--license"], ["show", "made"])
    assert [line.split(None, 1) for line in ok(params).splitlines()] == [
        ["stop", '"<|im_end|>"'], ["stop", '"END"'], ["temperature", "0.25"]]
    assert ok(system) == "You are a\nterse assistant.\n"
    assert ok(license_) == "MIT\n"
    assert "  Parameters\n    stop" in ok(summary)
    assert "  System\n    You are a\n    terse assistant.\n" in summary.stdout


def test_create_with_a_projector_from_a_second_from_line(server, herd: Run,
                                                         tiny_gguf: pathlib.Path,
                                                         tmp_path: pathlib.Path) -> None:
    """Ollama's vision Modelfiles: FROM the model, FROM its projector; both uploaded."""
    from support.tiny_vision import write_tiny_projector

    shutil.copy(tiny_gguf, tmp_path / "tiny.gguf")
    write_tiny_projector(tmp_path / "mmproj.gguf")
    (tmp_path / "Modelfile").write_text("FROM ./tiny.gguf\nFROM ./mmproj.gguf\n")
    assert ok(herd("create", "seeing", "-f", str(tmp_path / "Modelfile"))) == "success\n"
    info = show(server, "seeing")
    assert "vision" in info["capabilities"] and info["projector_info"]


def test_create_with_a_draft_model(server, herd: Run, tiny_gguf: pathlib.Path,
                                   tmp_path: pathlib.Path) -> None:
    """DRAFT names a local GGUF: uploaded and sent as draft_files."""
    shutil.copy(tiny_gguf, tmp_path / "tiny.gguf")
    write_tiny_llama(tmp_path / "small.gguf", seed=4, block_count=1)
    (tmp_path / "Modelfile").write_text("FROM ./tiny.gguf\nDRAFT ./small.gguf\n")
    assert ok(herd("create", "drafting", "-f", str(tmp_path / "Modelfile"))) == "success\n"
    assert "\nDRAFT " in show(server, "drafting")["modelfile"]
    (tmp_path / "Modelfile").write_text("FROM ./tiny.gguf\nDRAFT ./missing.gguf\n")
    result = herd("create", "drafting2", "-f", str(tmp_path / "Modelfile"))
    assert result.returncode != 0 and "missing.gguf" in result.stderr


def test_create_quantized_from_model(server, host: str, herd: Run, tmp_path: pathlib.Path
                                     ) -> None:
    # 256-wide so every row is whole Q8_0 blocks.
    write_tiny_llama(tmp_path / "wide.gguf", embedding_length=256, seed=5)
    (tmp_path / "Modelfile").write_text("FROM wide.gguf\n")
    assert ok(herd("create", "wide-f32", cwd=tmp_path)) == "success\n"  # default ./Modelfile
    assert tags(server)["wide-f32:latest"]["details"]["quantization_level"] == "F32"

    (tmp_path / "Q8").write_text("FROM wide-f32\nPARAMETER num_ctx 512\n")
    result, bad_type = run_many(
        host, ["create", "wide-q8", "-f", "Q8", "-q", "q8_0"],
        ["create", "wide-q2", "-f", "Q8", "--quantize", "q2_K"], cwd=tmp_path)
    assert ok(result) == "success\n"
    assert "quantizing F32 model to Q8_0" in result.stderr
    assert tags(server)["wide-q8:latest"]["details"]["quantization_level"] == "Q8_0"
    assert "num_ctx" in show(server, "wide-q8")["parameters"]
    assert bad_type.returncode == 1
    assert bad_type.stderr.splitlines()[-1].startswith("Error: unsupported quantization type")


def test_create_errors(server, host: str, tmp_path: pathlib.Path) -> None:
    (tmp_path / "Modelfile").write_text("FROM tiny\nPARAMETER bogus 1\n")
    (tmp_path / "Ghost").write_text("FROM ghost-model\n")
    (tmp_path / "Nowhere").write_text("FROM ./nowhere.gguf\n")
    bad, missing_base, missing_file, absent = run_many(
        host, ["create", "bad"], ["create", "bad", "-f", "Ghost"],
        ["create", "bad", "-f", "Nowhere"], ["create", "bad", "-f", "absent"], cwd=tmp_path)
    assert bad.returncode == 1
    assert bad.stderr == "Error: (line 2): unknown parameter 'bogus'\n"
    assert bad.stdout == ""
    assert missing_base.returncode == 1
    assert missing_base.stderr.splitlines()[-1] == 'Error: model "ghost-model" not found'
    assert missing_file.returncode == 1
    assert missing_file.stderr == "Error: ./nowhere.gguf: no such file or directory\n"
    assert absent.returncode == 1
    assert absent.stderr == "Error: absent: No such file or directory\n"
    assert "bad:latest" not in tags(server)


def test_unreachable_server() -> None:
    result = run_cli(f"127.0.0.1:{free_port()}", "list")
    assert result.returncode == 1
    assert result.stderr.startswith("Error: could not connect to a server at http://127.0.0.1:")


def test_base_url_follows_ollama_host() -> None:
    assert base_url("") == "http://127.0.0.1:11434"
    assert base_url("0.0.0.0") == "http://127.0.0.1:11434"
    assert base_url("0.0.0.0:9000") == "http://127.0.0.1:9000"
    assert base_url(":9000") == "http://127.0.0.1:9000"
    assert base_url("example.com") == "http://example.com:11434"
    assert base_url("https://example.com") == "https://example.com:443"
    assert base_url("http://example.com/prefix/") == "http://example.com:80/prefix"
    assert base_url("[::1]:9000") == "http://[::1]:9000"
    assert base_url('"10.0.0.2:1234"') == "http://10.0.0.2:1234"


def test_humanized_values() -> None:
    assert [human_bytes(n) for n in (512, 1000, 253_400_000, 1_234_000_000, 2_000_000_000,
                                     15_600_000_000)] == ["512 B", "1 KB", "253 MB", "1.2 GB",
                                                          "2 GB", "15 GB"]
    now = datetime(2025, 5, 4, 12, 0, tzinfo=timezone.utc)

    def ago(**delta: float) -> str:
        return human_time((now - timedelta(**delta)).isoformat(), now)

    assert ago(seconds=0.2) == "Less than a second ago"
    assert ago(minutes=2, seconds=5) == "2 minutes ago"
    assert ago(minutes=1) == "About a minute ago"
    assert ago(hours=5) == "5 hours ago"
    assert ago(days=3) == "3 days ago"
    assert ago(days=20) == "2 weeks ago"
    assert ago(days=100) == "3 months ago"
    assert ago(days=800) == "2 years ago"
    # Ollama's own format: nanoseconds and an offset.
    assert human_time("2025-05-04T04:58:30.123456789-07:00", now) == "About a minute ago"
