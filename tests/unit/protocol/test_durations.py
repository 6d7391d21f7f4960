"""protocol/durations.py: Go-style durations and keep_alive values (spec §0.5, §9)."""

from __future__ import annotations

import pytest

from herd.protocol.durations import (
    FOREVER_NS,
    DurationError,
    env_keep_alive_ns,
    keep_alive_ns,
    parse_go_duration,
)

NS = 1
MS = 1_000_000
S = 1_000_000_000
MIN = 60 * S
H = 60 * MIN
DEFAULT_NS = 5 * MIN


def test_forever_is_go_max_int64() -> None:
    assert FOREVER_NS == 2**63 - 1


@pytest.mark.parametrize(
    ("text", "expected_ns"),
    [
        ("5m", 5 * MIN),
        ("1h30m", H + 30 * MIN),
        ("300ms", 300 * MS),
        ("1.5s", 1500 * MS),
        ("-1m", -MIN),
        ("0", 0),
        ("0s", 0),
        ("5m0s", 5 * MIN),
        ("10us", 10_000 * NS),
        ("10µs", 10_000 * NS),
        (".5s", 500 * MS),
        ("+2h", 2 * H),
        (" 5m ", 5 * MIN),
    ],
)
def test_parse_go_duration_accepts_go_syntax(text: str, expected_ns: int) -> None:
    assert parse_go_duration(text) == expected_ns


def test_bare_number_is_rejected_with_gos_missing_unit_message() -> None:
    with pytest.raises(DurationError) as excinfo:
        parse_go_duration("3600")
    assert str(excinfo.value) == 'time: missing unit in duration "3600"'


@pytest.mark.parametrize("text", ["abc", "5x", "1h30", "m", "-", "1h 30m"])
def test_malformed_durations_are_rejected(text: str) -> None:
    with pytest.raises(DurationError):
        parse_go_duration(text)


def test_duration_error_is_a_value_error() -> None:
    # Route handlers map ValueError to 400; DurationError must be one.
    assert issubclass(DurationError, ValueError)


@pytest.mark.parametrize("text", ["", "   "])
def test_empty_duration_is_rejected_as_invalid(text: str) -> None:
    with pytest.raises(DurationError, match="invalid duration"):
        parse_go_duration(text)


# keep_alive in a request body (§0.5)


def test_absent_keep_alive_uses_the_server_default() -> None:
    assert keep_alive_ns(None, DEFAULT_NS) == DEFAULT_NS


@pytest.mark.parametrize(
    ("value", "expected_ns"),
    [(0, 0), (30, 30 * S), (1.5, 1500 * MS), (0.25, 250 * MS), (3600, H)],
)
def test_number_keep_alive_is_seconds(value: float, expected_ns: int) -> None:
    assert keep_alive_ns(value, DEFAULT_NS) == expected_ns


@pytest.mark.parametrize("value", [-1, -0.5, -3600, "-1m", "-1s"])
def test_negative_keep_alive_means_forever(value: float | str) -> None:
    assert keep_alive_ns(value, DEFAULT_NS) == FOREVER_NS


@pytest.mark.parametrize(
    ("value", "expected_ns"),
    [("5m", 5 * MIN), ("1h30m", H + 30 * MIN), ("300ms", 300 * MS), ("0", 0), ("0s", 0)],
)
def test_string_keep_alive_is_a_go_duration(value: str, expected_ns: int) -> None:
    assert keep_alive_ns(value, DEFAULT_NS) == expected_ns


def test_string_keep_alive_rejects_bare_seconds() -> None:
    with pytest.raises(DurationError, match="missing unit"):
        keep_alive_ns("3600", DEFAULT_NS)


# OLLAMA_KEEP_ALIVE (§9)


@pytest.mark.parametrize(
    ("text", "expected_ns"),
    [
        ("3600", H),
        ("0", 0),
        ("10m", 10 * MIN),
        ("1h", H),
        ("-1", FOREVER_NS),
        ("-1s", FOREVER_NS),
        (' "10m" ', 10 * MIN),
        ("'30'", 30 * S),
    ],
)
def test_env_keep_alive_accepts_durations_and_bare_seconds(text: str, expected_ns: int) -> None:
    assert env_keep_alive_ns(text) == expected_ns
