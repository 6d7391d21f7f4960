"""Key files and the authorized folder (protocol/curve.py), without sockets."""

from __future__ import annotations

import os

import pytest
import zmq.auth

from herd.protocol.curve import AuthorizedKeys, ClientKeys, CurveKeyError, ServerKeys, keygen


def test_keygen_files_are_zmq_certificates(tmp_path) -> None:
    secret, public = keygen(str(tmp_path / "a"))
    pub, sec = zmq.auth.load_certificate(secret)
    assert sec and len(pub) == 40
    assert zmq.auth.load_certificate(public) == (pub, None)
    assert oct(os.stat(secret).st_mode & 0o777) == "0o600"


def test_authorized_folder_is_re_read_when_it_changes(tmp_path) -> None:
    keygen(str(tmp_path / "one"))
    keygen(str(tmp_path / "two"))
    folder = tmp_path / "authorized"
    folder.mkdir()
    one = zmq.auth.load_certificate(str(tmp_path / "one.pub"))[0]
    two = zmq.auth.load_certificate(str(tmp_path / "two.pub"))[0]
    (folder / "one.pub").write_bytes((tmp_path / "one.pub").read_bytes())
    keys = AuthorizedKeys(str(folder))
    assert keys.callback("*", one) and not keys.callback("*", two)
    (folder / "two.pub").write_bytes((tmp_path / "two.pub").read_bytes())
    os.utime(folder, (1, 1))  # a new stamp even within the file system's time granularity
    assert keys.callback("*", two)


def test_half_configured_keys_are_an_error(tmp_path) -> None:
    keygen(str(tmp_path / "k"))
    assert ServerKeys.load("", "") is None and ClientKeys.load("", "") is None
    with pytest.raises(CurveKeyError, match="HERD_CURVE_AUTHORIZED"):
        ServerKeys.load(str(tmp_path / "k.key"), "")
    with pytest.raises(CurveKeyError, match="HERD_CURVE_SERVER_KEY"):
        ClientKeys.load(str(tmp_path / "k.key"), "")
    with pytest.raises(CurveKeyError, match="no secret key"):
        ClientKeys.load(str(tmp_path / "k.pub"), str(tmp_path / "k.pub"))
