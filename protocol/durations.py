"""Go-style durations ("5m", "1h30m", "-1s") as Ollama accepts them for keep_alive."""

from __future__ import annotations

import re

FOREVER_NS = (1 << 63) - 1
_UNIT_NS = {
    "ns": 1,
    "us": 1_000,
    "µs": 1_000,
    "μs": 1_000,
    "ms": 1_000_000,
    "s": 1_000_000_000,
    "m": 60 * 1_000_000_000,
    "h": 3600 * 1_000_000_000,
}
_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")


class DurationError(ValueError):
    pass


def parse_go_duration(text: str) -> int:
    """Parses Go's time.ParseDuration syntax into nanoseconds."""
    s = text.strip()
    if not s:
        raise DurationError(f'time: invalid duration "{text}"')
    if s in ("0", "+0", "-0"):
        return 0
    sign = 1
    if s[:1] in "+-":
        sign = -1 if s[0] == "-" else 1
        s = s[1:]
    if not s:
        raise DurationError(f'time: invalid duration "{text}"')
    total = 0.0
    pos = 0
    while pos < len(s):
        m = _PART.match(s, pos)
        if m is None:
            if re.fullmatch(r"\d+(\.\d*)?", s[pos:]):
                raise DurationError(f'time: missing unit in duration "{text}"')
            raise DurationError(f'time: invalid duration "{text}"')
        total += float(m.group(1)) * _UNIT_NS[m.group(2)]
        pos = m.end()
    return sign * int(total)


def keep_alive_ns(value: float | str | None, default_ns: int) -> int:
    """Request keep_alive → nanoseconds; negative means forever (Ollama stores MaxInt64)."""
    if value is None:
        return default_ns
    if isinstance(value, str):
        ns = parse_go_duration(value)
    else:
        seconds = value * 1_000_000_000
        # Past int64 (or infinite: 1e300 seconds) Go's conversion gives MinInt64, i.e. forever.
        ns = int(seconds) if abs(seconds) < FOREVER_NS else -1
    return FOREVER_NS if ns < 0 else ns


def env_keep_alive_ns(text: str) -> int:
    """OLLAMA_KEEP_ALIVE also accepts a bare integer number of seconds."""
    t = text.strip().strip("\"'")
    default = 5 * 60 * 1_000_000_000
    try:
        seconds = int(t)
    except ValueError:
        try:
            return keep_alive_ns(t, default)
        except DurationError:
            return default  # like Ollama: a bad value keeps the default
    return FOREVER_NS if seconds < 0 else seconds * 1_000_000_000
