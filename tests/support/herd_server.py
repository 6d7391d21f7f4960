"""Starts a real `herd serve` (gateway + worker node + runners) for tests, on a free port."""

from __future__ import annotations

import os
import pathlib
import signal
import socket
import subprocess
import sys
import time

import httpx
import ollama

ROOT = pathlib.Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class HerdServer:
    def __init__(self, workdir: pathlib.Path, *, models_dir: pathlib.Path | None = None,
                 env: dict[str, str] | None = None, default_model: str = "",
                 command: tuple[str, ...] = ("serve",)) -> None:
        self.workdir = workdir
        self.command = command
        self.port = free_port()
        self.models_dir = models_dir or workdir / "models"
        self.run_dir = workdir / "run"
        # HERD_TLS_CERT in env: the server speaks HTTPS (with a self-signed cert the tests make).
        self.tls = bool((env or {}).get("HERD_TLS_CERT"))
        self.url = f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"
        self.log_path = workdir / "server.log"
        self.env = {
            **os.environ,
            "OLLAMA_HOST": f"127.0.0.1:{self.port}",
            "OLLAMA_MODELS": str(self.models_dir),
            "HERD_RUN_DIR": str(self.run_dir),
            "HERD_DEFAULT_MODEL": default_model,
            "HERD_NUM_THREADS": "2",
            "PYTHONFAULTHANDLER": "1",  # a crash in native code leaves a traceback in the log
            **(env or {}),
        }
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 120.0) -> HerdServer:
        self.workdir.mkdir(parents=True, exist_ok=True)
        if self.command[0] == "worker":
            return self._start_worker()
        log = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "herd.cli", *self.command], cwd=ROOT, env=self.env,
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True)  # its own process group, so a test can kill it all at once
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"herd serve exited early:\n{self.log()}")
            try:
                if httpx.get(self.url + "/", timeout=1, verify=not self.tls).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"herd serve did not come up:\n{self.log()}")

    def _start_worker(self) -> HerdServer:
        log = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "herd.cli", *self.command], cwd=ROOT, env=self.env,
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        return self

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None

    def kill_all(self) -> None:
        """SIGKILL the gateway, its node, runners and any child (a crash, not a shutdown)."""
        if self.process is not None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
            self.process = None

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-6000:]
        except OSError:
            return ""

    def client(self, timeout: float = 120.0) -> ollama.Client:
        return ollama.Client(host=self.url, timeout=timeout)

    def _processes(self, *markers: bytes) -> dict[int, list[str]]:
        """PID → command line of this server's processes whose command line has every marker."""
        found = {}
        for proc in pathlib.Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            try:
                cmdline = (proc / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if any(str(self.run_dir).encode() in a for a in cmdline) and all(
                    m in cmdline for m in markers):
                found[int(proc.name)] = [a.decode(errors="replace") for a in cmdline]
        return found

    def _pids(self, *markers: bytes) -> list[int]:
        return list(self._processes(*markers))

    def runner_pids(self) -> list[int]:
        """PIDs of this server's runner processes (their socket lives in our run dir)."""
        return self._pids(b"herd.worker.runner")

    def runner_args(self) -> list[list[str]]:
        """The command lines of this server's runner processes."""
        return list(self._processes(b"herd.worker.runner").values())

    def node_pid(self) -> int | None:
        """PID of the worker node `herd serve` started, if one is running."""
        pids = self._pids(b"worker", b"--exit-with-parent")
        return pids[0] if pids else None

    def create_model(self, name: str, gguf_path: pathlib.Path) -> None:
        client = self.client()
        digest = client.create_blob(gguf_path)
        client.create(model=name, files={gguf_path.name: digest})

    def __enter__(self) -> HerdServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def wait_until(predicate, timeout: float = 30.0, interval: float = 0.1) -> bool:
    """Polls for an eventual state (an unload, a restart); not a timing assertion."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()
