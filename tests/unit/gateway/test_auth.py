"""HERD_API_KEYS parsing and the key check, in-process."""

from __future__ import annotations

import pytest

from herd.gateway.http.auth import key_matches
from herd.protocol.config import settings_from_env


def test_keys_comma_separated_or_from_a_file(tmp_path) -> None:
    assert settings_from_env({"HERD_API_KEYS": " a, b ,,c "}).api_keys == ("a", "b", "c")
    assert settings_from_env({}).api_keys == ()
    keys = tmp_path / "keys"
    keys.write_text("# comment\none\n\n two \n")
    assert settings_from_env({"HERD_API_KEYS": f"@{keys}"}).api_keys == ("one", "two")


def test_an_unreadable_or_empty_key_file_stops_the_start(tmp_path) -> None:
    with pytest.raises(SystemExit):
        settings_from_env({"HERD_API_KEYS": f"@{tmp_path / 'missing'}"})
    (tmp_path / "empty").write_text("# nothing\n")
    with pytest.raises(SystemExit):
        settings_from_env({"HERD_API_KEYS": f"@{tmp_path / 'empty'}"})


def test_tls_paths() -> None:
    s = settings_from_env({"HERD_TLS_CERT": "/c.pem", "HERD_TLS_KEY": "/k.pem"})
    assert (s.tls_cert, s.tls_key) == ("/c.pem", "/k.pem")


def test_key_matches() -> None:
    assert key_matches("b", ("a", "b"))
    assert not key_matches("c", ("a", "b"))
    assert not key_matches("", ("a", ""))
    assert not key_matches("ab", ("a", "b"))
