"""The one YAML subset tally reads and writes without a YAML library.

Every `tally run` reads two YAML files: the user's params.yaml (most often flat
`key: value` lines) and tally's own tally.lock (block mappings and sequences of
scalars). ruamel.yaml costs ~25 ms of import, a quarter of a run's budget, so both are
read here when they stay inside the subset below, and handed to ruamel when they do
not (a caller sees NOT_PLAIN or None and falls back; it never guesses).

One scalar resolver serves every reader and writer: `plain_scalar(text)` is the value
a YAML 1.2 core-schema loader gives the plain (unquoted) scalar `text`, for the
spellings every such loader resolves alike:

    null   null | Null | NULL | ~
    bool   true | True | TRUE | false | False | FALSE
    int    INT_PATTERN            (no leading zeros, no 0x/0o, no underscores)
    float  FLOAT_PATTERN          (a fraction, an exponent or both) | .inf | -.inf | +.inf | .nan
    str    STR_PATTERN, and none of the above, and not a YAML 1.1 boolean word
           (yes, no, on, off, y, n in any case: YAML 1.1 loaders read those as bools);
           or ALNUM_PATTERN (a digit first, ASCII letters and digits, at least one
           letter other than e/E, no 0x/0o/0b prefix: hex ids such as `3fa9c0...`)

Anything else is NOT_PLAIN: another type spelled another way (`010`, `.5`, `1_000`,
`2024-01-01`), YAML syntax (`- a`, `a: b`, `&x`, `# c`), or a string that needs quotes.
A writer emits a string plain exactly when `plain_scalar(s) == s` (`is_plain`), so what
tally writes it reads back unchanged, and JSON-quotes it otherwise (a JSON string token
is a valid YAML double-quoted scalar).

On top of the resolver, the flat files: `parse_flat` reads `KEY: VALUE` lines (KEY_PATTERN
keys, `#` comment and blank lines) and `edit_flat` rewrites values in place, giving
exactly what ruamel's round trip gives (tests/properties compare the two on generated
files).
"""

from __future__ import annotations

import re
from typing import Any, Iterable

KEY_PATTERN = r"[A-Za-z_][A-Za-z0-9_-]*"
INT_PATTERN = r"[-+]?(?:0|[1-9][0-9]*)"
FLOAT_PATTERN = r"[-+]?(?:0|[1-9][0-9]*)(?:\.[0-9]+(?:[eE][-+]?[0-9]+)?|[eE][-+]?[0-9]+)"
# A plain string: starts with a letter, `_` or `/`; no `: ` or ` #` (a mapping or a
# comment), no `:` at the end, no flow indicators or `#`, no trailing blank, no tab or
# control character.
STR_PATTERN = r"[A-Za-z_/](?:[A-Za-z0-9_./@+=,%()'\"!?&*|<>;$^~\\-]|:(?=[^ ])| (?=[^ #]))*"
ALNUM_PATTERN = r"(?![0][xXoObB])[0-9][0-9eE]*[A-DF-Za-df-z][0-9A-Za-z]*"

_KEY = re.compile(KEY_PATTERN)
_INT = re.compile(INT_PATTERN)
_FLOAT = re.compile(FLOAT_PATTERN)
_STR = re.compile(STR_PATTERN)
_ALNUM = re.compile(ALNUM_PATTERN)

_NULLS = frozenset({"null", "Null", "NULL", "~"})
_BOOLS = {"true": True, "True": True, "TRUE": True,
          "false": False, "False": False, "FALSE": False}
_SPECIAL_FLOATS = {".inf": float("inf"), "+.inf": float("inf"), "-.inf": float("-inf"),
                   ".nan": float("nan")}
_YAML11_BOOLS = frozenset({"yes", "no", "on", "off", "y", "n"})


class _NotPlain:
    def __repr__(self) -> str:
        return "NOT_PLAIN"


NOT_PLAIN: Any = _NotPlain()  # plain_scalar's "outside the subset: ask ruamel"


def plain_scalar(text: str) -> Any:
    """The YAML 1.2 value of the plain scalar `text` (module doc), or NOT_PLAIN."""
    if text in _NULLS:
        return None
    if text in _BOOLS:
        return _BOOLS[text]
    if _INT.fullmatch(text):
        return int(text)
    if _FLOAT.fullmatch(text):
        return float(text)
    if text in _SPECIAL_FLOATS:
        return _SPECIAL_FLOATS[text]
    if _STR.fullmatch(text) and text.lower() not in _YAML11_BOOLS or _ALNUM.fullmatch(text):
        return text
    return NOT_PLAIN


def is_plain(text: str) -> bool:
    """Can the string `text` be written unquoted and read back as the same string?"""
    return plain_scalar(text) == text and isinstance(plain_scalar(text), str)


def write_scalar(value: Any) -> str | None:
    """How a new None, bool, int, float or str is written (as ruamel writes YAML 1.2);
    None for any other type. Strings are plain when `is_plain`, else JSON-quoted."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if value != value:
            return ".nan"
        if value in (float("inf"), float("-inf")):
            return ".inf" if value > 0 else "-.inf"
        return repr(value).lower()
    if isinstance(value, str):
        if is_plain(value):
            return value
        import json  # only for the rare string that needs quotes (~1.7 ms of import)
        return json.dumps(value)
    return None


def parse_flat(text: str) -> dict[str, Any] | None:
    """The mapping `text` holds if every line is blank, a `#` comment or `KEY: VALUE`
    with a plain VALUE (no duplicates, no trailing comments); else None."""
    out: dict[str, Any] = {}
    for line in text.split("\n"):
        if not line or line[0] == "#":
            continue
        key, sep, raw = line.partition(": ")
        if not sep or not _KEY.fullmatch(key) or key in out or key in _NULLS \
                or key in _BOOLS or key.lower() in _YAML11_BOOLS:
            return None
        value = plain_scalar(raw)
        if value is NOT_PLAIN:
            return None
        out[key] = value
    return out


def parse_flat_yaml(text: str) -> dict[str, Any] | None:
    """`parse_flat`, declining a text without any key too (ruamel reads an empty
    document as null). For callers that only read, such as metrics files."""
    return parse_flat(text) or None


def _kept(raw: str, value: Any) -> bool:
    """Does ruamel's round trip write this value back as `raw`? A string, an int or
    bool as ruamel writes one, or a float in fixed notation with at most 15 significant
    digits as Python writes it (ruamel rebuilds a float's text from its width and
    precision, which can respell an exponent form with the same value)."""
    if isinstance(value, str):
        return True
    if isinstance(value, float):
        digits = raw.lstrip("-").replace(".", "").lstrip("0")
        return "e" not in raw and "E" not in raw and len(digits) <= 15 and repr(value) == raw
    return value is not None and write_scalar(value) == raw


def edit_flat(text: str, edits: Iterable[tuple[str, Any]]) -> str | None:
    """`text` with each `(key, value)` set, if the file holds only flat `KEY: VALUE`
    lines written as ruamel writes them and every edit sets an existing key to an int,
    float or bool; else None (ruamel edits it)."""
    data = parse_flat(text)
    if data is None or not text.endswith("\n"):
        return None
    lines = text[:-1].split("\n")
    index = {}
    for i, line in enumerate(lines):
        key, _, raw = line.partition(": ")
        if key not in data or not _kept(raw, data[key]):
            return None  # a comment or blank line, or a value ruamel might respell
        index[key] = i
    for key, value in edits:
        if key not in index or value is None or isinstance(value, str):
            return None
        new = write_scalar(value)
        if new is None:
            return None
        lines[index[key]] = f"{key}: {new}"
    return "\n".join(lines) + "\n"


__all__ = ["ALNUM_PATTERN", "FLOAT_PATTERN", "INT_PATTERN", "KEY_PATTERN", "STR_PATTERN", "NOT_PLAIN",
           "plain_scalar", "is_plain", "write_scalar", "parse_flat", "parse_flat_yaml",
           "edit_flat"]
