"""Durations and ages as users type them: `90s`, `30m`, `24h`, `30d`, `2w`."""

from __future__ import annotations

import re

from cas.core.errors import UsageError

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_RE = re.compile(r"\A\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*\Z")


def parse_duration(text: str) -> float:
    """Seconds in `text` (`0`, `45s`, `30m`, `24h`, `30d`, `2w`).

    Raises:
        UsageError: anything else, with the accepted forms.
    """
    if text.strip() == "0":
        return 0.0
    m = _RE.match(text)
    if not m:
        raise UsageError(f"bad duration {text!r}", hint="use a number and a unit: 45s, 30m, 24h, 30d, 2w")
    return float(m.group(1)) * _UNITS[m.group(2)]
