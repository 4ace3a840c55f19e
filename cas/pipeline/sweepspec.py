"""The sweep syntax of `-S`: one spec to several values, several specs to a grid.

    [FILE:]KEY=V1,V2,...                 commas outside quotes, brackets, braces and
                                         parentheses separate values
    [FILE:]KEY=choice(V1, V2, ...)       the same, spelled out
    [FILE:]KEY=range([START,] STOP[, STEP])  DVC's (Hydra's) range: end exclusive;
                                         with a float, the floats' exact binary values
                                         are stepped in Decimal, so range(0.01, 0.05,
                                         0.01) has 5 values, as in DVC

What DVC's Hydra grammar refuses is refused here too, never taken as a string: an
unquoted `=` in the value (`-S lr==0.1`), and any `name(...)` but choice() and range()
(interval() and glob() DVC refuses; sort(), shuffle(), the casts and tag() tally does
not support).

`sweep_values` gives one VALUE text's values, each read by the value parser its caller
passes (cas/pipeline/params.py's parse_value; this module knows the syntax of sweeps,
not of values). params.expand_grid gives the cartesian product of several specs, for
`tally run --queue`. A workspace run takes one value per spec: params.parse_override
comes here only for a VALUE that has a comma, a quote, a bracket or a parenthesis, so
`tally run -S lr=0.1` never imports this module (nor compiles its regular expression,
nor imports decimal).
"""

from __future__ import annotations

import re
from typing import Any, Callable

from cas.core.errors import ParamError

# Safety nets against `range(0, 1e9)` and grids nobody meant to queue: a sweep or a
# grid this large is almost certainly a typo, and expanding it would exhaust memory.
MAX_SWEEP_VALUES = 10_000



def sweep_values(raw: str, *, parse_value: Callable[[str], Any]) -> list[Any]:
    """The values of one spec's VALUE text: one, or several for a sweep (module doc).

    Raises ParamError (without the spec: parse_override adds it) for unbalanced
    quotes or brackets, an empty value in a list, a bad range, or more than
    MAX_SWEEP_VALUES values.
    """
    s = raw.strip()
    _refuse_unsupported(s)
    m = re.fullmatch(r"(range|choice)\s*\((.*)\)", s, flags=re.S) if s.endswith(")") else None
    if m:
        args = split_top(m.group(2))
        if m.group(1) == "choice" and any(not a.strip() for a in args):
            raise ParamError("empty value in choice()")
        values = _range(args, parse_value) if m.group(1) == "range" else [parse_value(a) for a in args]
    else:
        pieces = split_top(s)
        if len(pieces) > 1 and any(not p.strip() for p in pieces):
            raise ParamError("empty value in sweep list", hint="quote a value that contains commas: x=\"'a,b'\"")
        values = [parse_value(p) for p in pieces]
    if not values:
        raise ParamError("the sweep has no values")
    return values



# Hydra's grammar functions other than choice() and range(): DVC refuses interval()
# (BasicSweeper) and glob(); the others tally does not implement.
_DVC_REFUSES = {"interval": "DVC refuses it too: its sweeper takes no continuous interval",
                "glob": "DVC refuses it too"}


def _refuse_unsupported(s: str) -> None:
    """ParamError for what DVC's grammar refuses and a string would silently hide."""
    m = re.match(r"([A-Za-z_][A-Za-z0-9_]*)\s*\(", s)
    if m and m.group(1) not in ("choice", "range"):
        name = m.group(1)
        why = _DVC_REFUSES.get(name, "tally supports choice() and range()")
        raise ParamError(f"{name}() is not supported ({why})",
                         hint="list the values (a,b,c), or use choice(...) or range(start, stop, step); "
                              "quote the value to mean the text itself: x=\"'f(1)'\"")
    if "=" in _unquoted(s):
        raise ParamError("'=' in a value must be quoted (DVC refuses it too)",
                         hint="write KEY=VALUE once, e.g. -S lr=0.1; to set the text itself: x=\"'a=b'\"")


def _unquoted(s: str) -> str:
    """`s` without its quoted parts ('...' and "...")."""
    out, quote, escaped = [], "", False
    for ch in s:
        if escaped:
            escaped = False
        elif quote:
            if ch == quote:
                quote = ""
            escaped = quote == '"' and ch == "\\"
        elif ch in "'\"":
            quote = ch
        else:
            out.append(ch)
    return "".join(out)


def split_top(text: str) -> list[str]:
    """Split on commas that are not inside quotes, brackets, braces or parentheses."""
    pieces, buf, depth, quote, escaped = [], [], 0, "", False
    pairs = {"[": "]", "{": "}", "(": ")"}
    closers = set(pairs.values())
    for ch in text:
        if escaped:
            escaped = False
        elif quote:
            if ch == quote:
                quote = ""
            escaped = quote == '"' and ch == "\\"  # YAML "..." escapes; '...' doubles quotes
        elif ch in "'\"":
            quote = ch
        elif ch in pairs:
            depth += 1
        elif ch in closers:
            depth -= 1
            if depth < 0:
                raise ParamError(f"unbalanced {ch!r} in value")
        elif ch == "," and depth == 0:
            pieces.append("".join(buf))
            buf = []
            continue
        buf.append(ch)
    if quote or depth:
        raise ParamError(f"unclosed {quote or 'bracket'} in value")
    pieces.append("".join(buf))
    return pieces



def _range(args: list[str], parse_value: Callable[[str], Any]) -> list[Any]:
    """DVC's range(): the points of Hydra's RangeSweep (end exclusive), float-safe.

    Integers: Python's range. With a float among the numbers, which points there are
    is Hydra's FloatRange rule: the exact binary values of start, stop and step, as
    Decimal, stepped by Decimal addition while short of stop. So `range(0.01, 0.05,
    0.01)` has 5 points, as in DVC (0.01's binary value times five stays below 0.05's),
    and `range(0, 0.3, 0.1)` has 3. The values themselves are computed from the numbers
    as written, `start + i * step` in Decimal, so they read 0.3 and 0.8 where DVC's
    give 0.30000000000000004 and 0.7999999999999999.
    """
    nums = [parse_value(a) for a in args]
    if not 1 <= len(nums) <= 3 or any(isinstance(n, bool) or not isinstance(n, (int, float)) for n in nums):
        raise ParamError("range() takes 1 to 3 numbers: range([start,] stop[, step])")
    if len(nums) == 1:
        args, nums = ["0", args[0]], [0, nums[0]]
    if len(nums) == 2:
        args, nums = [*args, "1"], [*nums, 1]
    if nums[2] == 0:
        raise ParamError("range() step must not be zero")
    if all(isinstance(n, int) for n in nums):
        count = len(range(*nums))
        if count > MAX_SWEEP_VALUES:  # before building the list: range(0, 1e12) must not hang
            raise ParamError(f"{count} values (limit {MAX_SWEEP_VALUES})")
        return list(range(*nums))
    import decimal  # float ranges only

    with decimal.localcontext(decimal.Context()):  # Hydra's: the default context, 28 digits
        at, stop, step = (decimal.Decimal(float(n)) for n in nums)
        if not all(x.is_finite() for x in (at, stop, step)):
            raise ParamError("range() takes finite numbers")
        if (stop - at) / step > MAX_SWEEP_VALUES + 1:  # the loop must not run 1e12 times
            raise ParamError(f"more than {MAX_SWEEP_VALUES} values (limit {MAX_SWEEP_VALUES})")
        count = 0
        while (at < stop) if step > 0 else (at > stop):
            count += 1
            at += step
        if count > MAX_SWEEP_VALUES:
            raise ParamError(f"{count} values (limit {MAX_SWEEP_VALUES})")
        try:
            start, step = decimal.Decimal(args[0].strip()), decimal.Decimal(args[2].strip())
        except decimal.InvalidOperation:  # a spelling Decimal does not read (YAML's 1e-1 does)
            start, step = (decimal.Decimal(repr(float(n))) for n in (nums[0], nums[2]))
        return [float(start + i * step) for i in range(count)]



__all__ = ["MAX_SWEEP_VALUES", "split_top", "sweep_values"]
