"""`herd run`'s saved input history follows ollama's OLLAMA_NOHISTORY."""

from __future__ import annotations

import pytest

from herd.cli.line_history import history_file


@pytest.mark.parametrize("value", ["", "0", "false", "F"])
def test_history_is_kept_in_the_ollama_folder(value: str, monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    assert history_file({"OLLAMA_NOHISTORY": value}) == str(tmp_path / ".ollama" / "history")


@pytest.mark.parametrize("value", ["1", "true", "yes", "anything"])
def test_nohistory_keeps_none(value: str) -> None:
    assert history_file({"OLLAMA_NOHISTORY": value}) is None
