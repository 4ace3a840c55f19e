"""The sweep syntax of `-S`: one spec to several values, several specs to a grid.

    [FILE:]KEY=V1,V2,...                 commas outside quotes, brackets, braces and
                                         parentheses separate values
    [FILE:]KEY=choice(V1, V2, ...)       the same, spelled out
    [FILE:]KEY=range([START,] STOP[, STEP])  Python's range, end exclusive; float
                                         steps are stepped in Decimal from their text

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
    """Python's range(), extended to float steps, end exclusive.

    Floats are stepped in Decimal from their written form, so range(0,1,0.1) gives
    0.3, not 0.30000000000000004, and never an extra value from accumulated error.
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
    else:
        from decimal import ROUND_CEILING, Decimal, InvalidOperation  # float ranges only

        try:
            start, stop, step = (Decimal(a.strip()) for a in args)
        except InvalidOperation:
            start, stop, step = (Decimal(repr(float(n))) for n in nums)
        count = max(0, int(((stop - start) / step).to_integral_value(rounding=ROUND_CEILING)))
    if count > MAX_SWEEP_VALUES:  # checked before building the list: range(0, 1e12) must not hang
        raise ParamError(f"{count} values (limit {MAX_SWEEP_VALUES})")
    if all(isinstance(n, int) for n in nums):
        return list(range(*nums))
    return [float(start + i * step) for i in range(count)]



__all__ = ["MAX_SWEEP_VALUES", "split_top", "sweep_values"]
