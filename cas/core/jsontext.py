"""JSON string tokens and YAML-style numbers, without `json` or `re` for the common case.

`tally run` writes and reads `tally.lock` and writes its lock holder's note on every
run. Importing `json` costs ~1.7 ms of that start-up (its decoder, scanner and encoder
compile five regular expressions at import), and each regular expression compiled on
first use ~0.1-0.3 ms; a run's whole budget is 100 ms. The strings these files hold are
nearly always printable ASCII, for which a JSON string token is the text between
double quotes with only `\\` and `"` escaped. So:

- `quote(s)` equals `json.dumps(s, ensure_ascii=...)` for every `s` (either setting:
  they differ only outside ASCII, where this delegates to `json`);
- `unquote(token)` equals `json.loads(token)` for every one-string token it accepts,
  and returns None for anything it leaves to `json` (escapes, control characters,
  trailing text), so the caller's error handling stays the library's;
- `is_int` / `is_float` are exactly the YAML 1.2 core-schema patterns the lock file
  reads (`[-+]?[0-9]+` and `[-+]?(\\.[0-9]+|[0-9]+(\\.[0-9]*)?)([eE][-+]?[0-9]+)?`).

Each is checked against the library or the pattern it stands for by a Hypothesis
differential test (tests/test_jsontext.py).
"""

from __future__ import annotations

_SIGNS = ("+", "-")


def quote(s: str, *, ensure_ascii: bool = True) -> str:
    """The JSON string token of `s`: `json.dumps(s, ensure_ascii=ensure_ascii)`."""
    if s.isascii() and s.isprintable():
        # Printable ASCII has no control character: only the backslash and the quote
        # are escaped, exactly as json.dumps does (it leaves "/" alone).
        return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'
    import json
    return json.dumps(s, ensure_ascii=ensure_ascii)


def unquote(token: str) -> str | None:
    """The string a JSON string token holds, or None when the fast path does not apply.

    Applies to one double-quoted token with no escape and no control character inside;
    for it the result is `json.loads(token)`. None means "ask `json`", not "invalid".
    """
    if len(token) < 2 or token[0] != '"' or token[-1] != '"':
        return None
    inner = token[1:-1]
    if '"' in inner or "\\" in inner or not inner.isprintable():
        return None  # escapes, a second token, or characters json may refuse
    return inner


def is_int(s: str) -> bool:
    """`re.fullmatch(r"[-+]?[0-9]+", s)`."""
    t = s[1:] if s[:1] in _SIGNS else s
    return t.isascii() and t.isdigit()


def is_float(s: str) -> bool:
    """`re.fullmatch(r"[-+]?(\\.[0-9]+|[0-9]+(\\.[0-9]*)?)([eE][-+]?[0-9]+)?", s)`."""
    if not s.isascii():
        return False  # str.isdigit() also accepts other scripts' digits
    t = s[1:] if s[:1] in _SIGNS else s
    mantissa, e, exponent = t.replace("E", "e").partition("e")
    if e:
        exponent = exponent[1:] if exponent[:1] in _SIGNS else exponent
        if not exponent.isdigit():
            return False
    whole, dot, fraction = mantissa.partition(".")
    if not dot:
        return whole.isdigit()
    if not whole:
        return fraction.isdigit()
    return whole.isdigit() and (not fraction or fraction.isdigit())
