"""`herd run|ps|stop` against a real server: the CLI as a subprocess (and on a real terminal
through a pty), the chat loop in-process with its input scripted."""

from __future__ import annotations

import os
import pathlib
import pty
import select
import signal
import subprocess
import sys
import time

import httpx
import pytest
from support.herd_server import ROOT, free_port, wait_until
from support.tool_templates import THINKING_TEMPLATE

from herd.cli.chat import chat_loop, parameter_value
from herd.cli.client import HerdClient
from herd.cli.run import show_or_pull
from herd.cli.session import Session, go_duration, metrics_summary
from herd.protocol.modelfile import ModelfileError
from herd.protocol.api import Metrics

Result = subprocess.CompletedProcess[str]
GREEDY = {"temperature": 0, "num_predict": 8}


@pytest.fixture(scope="module")
def host(server) -> str:
    """The server, with `short` (tiny answering 8 greedy tokens) and `think` (the same with a
    template that opens a <think> block, so the answer is all thinking)."""
    for name, extra in (("short", {}), ("think", {"template": THINKING_TEMPLATE})):
        r = httpx.post(f"{server.url}/api/create", json={
            "model": name, "from": "tiny", "parameters": GREEDY, "stream": False, **extra})
        assert r.status_code == 200, r.text
    return f"127.0.0.1:{server.port}"


def env(host: str) -> dict[str, str]:
    return {**os.environ, "OLLAMA_HOST": host, "PYTHONPATH": str(ROOT), "TERM": "dumb"}


def herd(host: str, *args: str, stdin: str = "") -> Result:
    """The CLI with stdin piped (so never a TTY): `stdin` is what it reads."""
    return subprocess.run([sys.executable, "-m", "herd.cli", *args], cwd=ROOT, env=env(host),
                          input=stdin, text=True, capture_output=True, timeout=120)


def ok(result: Result) -> str:
    assert result.returncode == 0, result.stderr
    return result.stdout


def chat_answer(server, model: str, *messages: tuple[str, str], **body: object) -> str:
    r = httpx.post(f"{server.url}/api/chat", json={
        "model": model, "stream": False, **body,
        "messages": [{"role": role, "content": text} for role, text in messages]})
    assert r.status_code == 200, r.text
    return r.json()["message"]["content"]


def loaded(server) -> list[str]:
    return [m["name"] for m in httpx.get(f"{server.url}/api/ps").json()["models"]]


def test_run_with_a_prompt_prints_the_streamed_answer(server, host: str) -> None:
    result = herd(host, "run", "short", "why", "is", "the", "sky", "blue")
    expected = chat_answer(server, "short", ("user", "why is the sky blue"))
    assert expected and ok(result) == expected + "\n"
    assert result.stderr == ""
    # Flags may come before, between or after the prompt's words, as with ollama.
    mixed = herd(host, "run", "--verbose", "short", "why", "is", "--hidethinking", "the", "sky",
                 "blue", "--nothink")
    assert ok(mixed) == expected + "\n"


def test_piped_stdin_is_the_prompt_or_comes_before_it(server, host: str) -> None:
    alone = herd(host, "run", "short", stdin="a piped question\n")
    assert ok(alone) == chat_answer(server, "short", ("user", "a piped question\n")) + "\n"
    # ollama joins stdin and the arguments with a space, stdin first.
    both = herd(host, "run", "short", "summarize", "this", stdin="some text\n")
    assert ok(both) == chat_answer(server, "short", ("user", "some text\n summarize this")) + "\n"


def test_verbose_prints_the_final_chunk_metrics_to_stderr(server, host: str) -> None:
    result = herd(host, "run", "short", "hello", "--verbose")
    assert ok(result) == chat_answer(server, "short", ("user", "hello")) + "\n"
    lines = result.stderr.splitlines()
    assert "eval count:           8 token(s)" in lines
    assert any(line.startswith("prompt eval count:    ") for line in lines)
    for label in ("total duration:", "eval duration:", "eval rate:"):
        assert any(line.startswith(label) for line in lines), result.stderr
    assert lines[-1].endswith(" tokens/s")


def test_format_json_is_sent(server, host: str) -> None:
    result = herd(host, "run", "short", "describe", "a", "cat", "--format", "json")
    expected = chat_answer(server, "short", ("user", "describe a cat"), format="json")
    assert ok(result) == expected + "\n"
    assert expected.lstrip().startswith("{")


def test_unknown_model_is_pulled_first_and_the_failure_is_an_error(host: str) -> None:
    # A registry that is not there: the pull fails at once, with ollama's wording around it.
    missing = herd(host, "run", f"127.0.0.1:{free_port()}/library/ghost", "hi", "--insecure")
    assert missing.returncode == 1 and missing.stdout == ""
    assert "pulling manifest" in missing.stderr
    assert missing.stderr.splitlines()[-1].startswith("Error: ")
    invalid = herd(host, "run", "no good/name/at/all", "hi")  # not a registry name: no pull
    assert invalid.returncode == 1
    assert invalid.stderr == "Error: invalid model name\n"


def test_run_pulls_a_model_from_a_registry(server, host: str, tmp_path) -> None:
    from support.registry_server import Registry, require_registry_binary

    require_registry_binary()
    with Registry(tmp_path / "registry") as registry:
        name = f"{registry.host}/herd/short:v1"
        httpx.post(f"{server.url}/api/copy", json={"source": "short", "destination": name})
        pushed = httpx.post(f"{server.url}/api/push", timeout=120,
                            json={"model": name, "insecure": True, "stream": False})
        assert pushed.json() == {"status": "success"}
        httpx.request("DELETE", f"{server.url}/api/delete", json={"model": name})
        result = herd(host, "run", name, "hello", "--insecure")
    assert ok(result) == chat_answer(server, "short", ("user", "hello")) + "\n"
    assert "pulling manifest" in result.stderr and "success" not in result.stdout
    assert name in [m["name"] for m in httpx.get(f"{server.url}/api/tags").json()["models"]]


def test_ps_lists_the_model_a_run_loaded_and_stop_unloads_it(server, host: str) -> None:
    ok(herd(host, "run", "short", "hello"))
    header, *rows = ok(herd(host, "ps")).splitlines()
    assert header.split() == ["NAME", "ID", "SIZE", "PROCESSOR", "CONTEXT", "UNTIL"]
    row = next(r for r in rows if r.startswith("short:latest "))
    digest = next(m["digest"] for m in httpx.get(f"{server.url}/api/ps").json()["models"]
                  if m["name"] == "short:latest")
    assert row.split()[1] == digest.removeprefix("sha256:")[:12]
    assert "100% CPU" in row and row.endswith("from now")

    stopped = herd(host, "stop", "short")
    assert ok(stopped) == "" and stopped.stderr == ""
    assert wait_until(lambda: "short:latest" not in loaded(server))
    assert "short:latest" not in ok(herd(host, "ps"))
    ghost = herd(host, "stop", "ghost")
    assert ghost.returncode == 1
    assert ghost.stderr == 'Error: couldn\'t find model "ghost" to stop\n'


def test_keepalive_zero_unloads_after_the_answer(server, host: str) -> None:
    ok(herd(host, "run", "short", "hello", "--keepalive", "0"))
    assert wait_until(lambda: "short:latest" not in loaded(server))
    bad = herd(host, "run", "short", "hello", "--keepalive", "5x")
    assert bad.returncode == 1 and bad.stderr == 'Error: time: invalid duration "5x"\n'


def test_thinking_is_shown_first_unless_hidden(host: str) -> None:
    shown = ok(herd(host, "run", "think", "hi"))
    assert shown.startswith("Thinking...\n") and len(shown) > len("Thinking...\n\n")
    assert "\033[" not in shown  # no colours when stdout is not a terminal
    assert ok(herd(host, "run", "think", "hi", "--hidethinking")) == "\n"
    plain = ok(herd(host, "run", "think", "hi", "--nothink"))
    assert "Thinking..." not in plain and plain.strip()
    refused = herd(host, "run", "short", "hi", "--think")
    assert refused.returncode == 1
    assert refused.stderr == 'Error: "short" does not support thinking\n'
    assert herd(host, "run", "think", "hi", "--think=maybe").stderr.startswith(
        'Error: invalid value for --think: "maybe"')


def _script(lines: list[str | BaseException]):
    feed = iter(lines)

    def read_line(prompt: str) -> str:
        print(prompt, end="")
        item = next(feed, EOFError())
        if isinstance(item, BaseException):
            raise item
        print(item)
        return item

    return read_line


def test_chat_loop_keeps_the_history_and_applies_set_commands(
        server, host: str, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("OLLAMA_HOST", host)
    with HerdClient() as client:
        show = show_or_pull(client, "short", insecure=False)
        session = Session(model="short")
        status = chat_loop(client, session, show, _script([
            "/set parameter num_predict 3", "/set verbose", "hello", KeyboardInterrupt(),
            '"""and', "again", 'now"""', "/show info", "/set parameter bogus 1",
            "/set parameter top_k many", "/nope", "/?"]))
        assert status == 0
        out, err = capsys.readouterr()
        first, second = session.history[1].content, session.history[3].content
        assert [m.role for m in session.history] == ["user", "assistant"] * 2
        assert session.history[2].content == "and\nagain\nnow"
        # The second answer saw the whole conversation, with num_predict from /set parameter.
        assert second == chat_answer(server, "short", ("user", "hello"), ("assistant", first),
                                     ("user", "and\nagain\nnow"), options={"num_predict": 3})
        assert f">>> hello\n{first}\n\n>>> " in out
        assert "Set parameter 'num_predict' to '3'" in out and "Set 'verbose' mode." in out
        assert err.count("eval count:           3 token(s)") == 2
        assert "Use Ctrl + d or /bye to exit." in out
        assert "  Model\n    architecture        llama" in out
        assert "Couldn't set parameter: unknown parameter 'bogus'" in out
        assert "Couldn't set parameter: invalid int value 'many' for parameter 'top_k'" in out
        assert "Unknown command '/nope'. Type /? for help" in out
        assert "/clear          Clear session context" in err

        assert chat_loop(client, session, show, _script(
            ["/clear", "/set system You are terse.", "hi", "/bye", "never read"])) == 0
        assert session.system == "You are terse."
        assert [m.role for m in session.history] == ["user", "assistant"]
        assert session.history[1].content == chat_answer(
            server, "short", ("system", "You are terse."), ("user", "hi"),
            options={"num_predict": 3})


def test_parameter_values_are_typed_like_modelfile_parameters() -> None:
    assert parameter_value("temperature", ["0.5"]) == 0.5
    assert parameter_value("num_ctx", ["4096", "ignored"]) == 4096
    assert parameter_value("stop", ["<|im_end|>", "END"]) == ["<|im_end|>", "END"]
    assert parameter_value("use_mmap", ["false"]) is False
    with pytest.raises(ModelfileError):
        parameter_value("mirostat", ["1"])  # dropped by Ollama, so not settable either


def test_verbose_lines_read_like_ollamas() -> None:
    assert [go_duration(ns) for ns in (0, 999, 1_500, 12_345_678, 1_234_567_891, 62_500_000_000,
                                       3_600_000_000_000)] == [
        "0s", "999ns", "1.5µs", "12.345678ms", "1.234567891s", "1m2.5s", "1h0m0s"]
    summary = metrics_summary(Metrics(total_duration=2_000_000_000, prompt_eval_count=10,
                                      prompt_eval_duration=500_000_000, eval_count=20,
                                      eval_duration=1_000_000_000))
    assert summary == ("total duration:       2s\n"
                       "prompt eval count:    10 token(s)\n"
                       "prompt eval duration: 500ms\n"
                       "prompt eval rate:     20.00 tokens/s\n"
                       "eval count:           20 token(s)\n"
                       "eval duration:        1s\n"
                       "eval rate:            20.00 tokens/s\n")


class Terminal:
    """`herd run` on a pseudo-terminal: stdin and stdout are a TTY, Ctrl-C is a real SIGINT
    from the line discipline."""

    def __init__(self, host: str, *args: str, home: pathlib.Path) -> None:
        self.pid, self.fd = pty.fork()
        if self.pid == 0:  # the child: become the CLI, its ~/.ollama/history under `home`
            os.execve(sys.executable, [sys.executable, "-m", "herd.cli", *args],
                      {**env(host), "HOME": str(home)})
        self.output = b""

    def read_until(self, predicate, timeout: float = 60.0) -> bool:
        """Reads until predicate(output) holds; the timeout only guards against a hang."""
        deadline = time.monotonic() + timeout
        while not predicate(self.output) and time.monotonic() < deadline:
            ready, _, _ = select.select([self.fd], [], [], 0.1)
            if ready:
                try:
                    self.output += os.read(self.fd, 4096)
                except OSError:  # the child exited
                    break
        return predicate(self.output)

    def prompts(self) -> int:
        return self.output.count(b">>> ")

    def send(self, text: str) -> None:
        os.write(self.fd, text.encode())

    def wait(self) -> int:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                return os.waitstatus_to_exitcode(status)
            self.read_until(lambda out: False, timeout=0.1)
        os.kill(self.pid, signal.SIGKILL)
        os.waitpid(self.pid, 0)
        raise AssertionError(f"herd run did not exit:\n{self.output.decode(errors='replace')}")

    def close(self) -> None:
        os.close(self.fd)


def test_interactive_chat_on_a_terminal_with_ctrl_c(server, host: str,
                                                    tmp_path: pathlib.Path) -> None:
    term = Terminal(host, "run", "short", home=tmp_path)
    try:
        assert term.read_until(lambda out: b">>> " in out)
        term.send("/set parameter num_predict -1\n")  # an answer that goes on and on
        assert term.read_until(lambda out: out.count(b">>> ") == 2)
        assert b"Set parameter 'num_predict' to '-1'" in term.output
        term.send("tell me a long story\n")
        start = len(term.output)
        # Some of the answer has arrived (not just the echo of the question): stop it.
        assert term.read_until(lambda out: len(out) > start + 200)
        prompts = term.prompts()
        term.send("\x03")
        assert term.read_until(lambda out: out.count(b">>> ") > prompts), term.output
        prompts = term.prompts()
        term.send("/set parameter num_predict 4\n")
        assert term.read_until(lambda out: out.count(b">>> ") > prompts)
        assert b"Set parameter 'num_predict' to '4'" in term.output
        prompts = term.prompts()
        term.send("hello\n")
        assert term.read_until(lambda out: out.count(b">>> ") > prompts)
        term.send("/bye\n")
        assert term.wait() == 0
    finally:
        term.close()
    answer = chat_answer(server, "short", ("user", "hello"), options={"num_predict": 4})
    shown = answer.replace("\n", "\r\n")  # the terminal turns every \n into \r\n
    assert f"{shown}\r\n\r\n>>> ".encode() in term.output
    # What was typed is kept as ollama keeps it, for the up arrow of the next chat.
    history = (tmp_path / ".ollama" / "history").read_text()
    assert "tell me a long story" in history and "hello" in history
    assert (tmp_path / ".ollama" / "history").stat().st_mode & 0o077 == 0


def test_a_terminal_chat_with_ollama_nohistory_keeps_no_file(server, host: str,
                                                             tmp_path: pathlib.Path,
                                                             monkeypatch) -> None:
    monkeypatch.setenv("OLLAMA_NOHISTORY", "1")
    term = Terminal(host, "run", "short", home=tmp_path)
    try:
        assert term.read_until(lambda out: b">>> " in out)
        term.send("/bye\n")
        assert term.wait() == 0
    finally:
        term.close()
    assert not (tmp_path / ".ollama" / "history").exists()
