"""A resolver stub for real processes in tests: with HERD_TEST_HOSTS_FILE set (JSON: name →
list of IPv4 addresses, re-read on every lookup so a test can change what a name resolves to),
socket.getaddrinfo answers those names from the file, like several A records of one DNS name.
Put this folder first on PYTHONPATH of the process under test; other names resolve as usual."""

from __future__ import annotations

import json
import os
import socket

_real_getaddrinfo = socket.getaddrinfo


def _stub_getaddrinfo(host, port, family=0, type=0, proto=0, flags=0):
    path = os.environ.get("HERD_TEST_HOSTS_FILE", "")
    name = host.decode() if isinstance(host, bytes) else host
    try:
        with open(path) as f:
            table = json.load(f)
    except (OSError, ValueError):
        table = {}
    if name not in table:
        return _real_getaddrinfo(host, port, family, type, proto, flags)
    if not table[name]:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
    return [(socket.AF_INET, type or socket.SOCK_STREAM, proto or 6, "", (addr, int(port)))
            for addr in table[name]]


if os.environ.get("HERD_TEST_HOSTS_FILE"):
    socket.getaddrinfo = _stub_getaddrinfo
