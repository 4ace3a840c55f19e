"""The flat YAML subset: `KEY: VALUE` files read and edited without a YAML library.

`tally run -S lr=0.01` on a params.yaml of `key: value` lines would import ruamel.yaml
(~25 ms, a quarter of a run's budget) to change one number. Text in the small subset
below is read and edited here without it, giving exactly what ruamel gives (the tests
compare the two on generated files); for anything else these functions decline (None,
or NOT_FLAT) and the caller goes to ruamel (cas/pipeline/params.py).

The subset: lines `KEY: VALUE` at column 0, KEY a plain identifier, VALUE a decimal
int, a decimal float, a YAML 1.2 bool or null, or a plain word; `#` comment lines and
blank lines (read only: an edit leaves those files to ruamel, which decides how they
come out). No duplicate keys, no trailing comments, no quoting, no nesting. Exactly:

    KEY    KEY_PATTERN, and not a bool or null spelling
    VALUE  INT_PATTERN | FLOAT_PATTERN | a bool or null spelling | WORD_PATTERN

The patterns are checked with string methods, not regular expressions: `tally run -S`
would compile them at every start-up (0.1-0.3 ms each). tests/test_params_properties.py
proves each check equal to its pattern.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterable

if TYPE_CHECKING:
    from cas.pipeline.params import Override

# What the string checks below accept, as regular expressions (full match). Never
# compiled here: the specification of _is_name, _is_int and _is_float.
KEY_PATTERN = r"[A-Za-z_][A-Za-z0-9_-]*"
INT_PATTERN = r"[-+]?(?:0|[1-9][0-9]*)"
FLOAT_PATTERN = r"[-+]?(?:0|[1-9][0-9]*)(?:\.[0-9]+(?:[eE][-+]?[0-9]+)?|[eE][-+]?[0-9]+)"
WORD_PATTERN = r"[A-Za-z_][A-Za-z0-9_./-]*"

_NAME_START = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz_"
_KEY_CHARS = _NAME_START + "0123456789-"  # KEY_PATTERN's second class
_WORD_CHARS = _KEY_CHARS + "./"  # WORD_PATTERN's second class
_SIGNS = ("-", "+")
_FLAT_BOOLS = {"true": True, "True": True, "TRUE": True, "false": False, "False": False,
               "FALSE": False}
_FLAT_NULLS = frozenset({"null", "Null", "NULL", "~"})
NOT_FLAT = object()  # flat_scalar's "not in the subset"


def _is_name(text: str, chars: str) -> bool:
    """Does `text` fullmatch `[A-Za-z_][<chars>]*`? (`chars` holds the first class too.)"""
    # str.strip removes every leading and trailing character in `chars`: nothing is
    # left exactly when every character is one of them.
    return text != "" and text[0] in _NAME_START and not text.strip(chars)


def _is_digits(text: str, *, leading_zero: bool) -> bool:
    """`[0-9]+`, or with leading_zero=False `0|[1-9][0-9]*`. isdigit() alone would also
    take other scripts' digits and superscripts; every ASCII digit is 0-9."""
    return text.isascii() and text.isdigit() and (leading_zero or text == "0" or text[0] != "0")


def _is_int(text: str) -> bool:
    """Does `text` fullmatch INT_PATTERN?"""
    return _is_digits(text[1:] if text[:1] in _SIGNS else text, leading_zero=False)


def _is_float(text: str) -> bool:
    """Does `text` fullmatch FLOAT_PATTERN? An int part, then a fraction, an exponent or both."""
    body = text[1:] if text[:1] in _SIGNS else text
    if not body.isascii():
        return False
    mantissa, e, exponent = body.replace("E", "e").partition("e")
    if e and not _is_digits(exponent[1:] if exponent[:1] in _SIGNS else exponent, leading_zero=True):
        return False
    whole, dot, fraction = mantissa.partition(".")
    if dot and not _is_digits(fraction, leading_zero=True):
        return False
    return bool(dot or e) and _is_digits(whole, leading_zero=False)


def flat_scalar(text: str) -> Any:
    """The YAML 1.2 value of `text` if it is a flat-subset scalar, else NOT_FLAT."""
    if _is_int(text):
        return int(text)
    if _is_float(text):
        return float(text)
    if text in _FLAT_BOOLS:
        return _FLAT_BOOLS[text]
    if text in _FLAT_NULLS:
        return None
    if _is_name(text, _WORD_CHARS):
        return text
    return NOT_FLAT


def _flat_text(value: Any) -> str | None:
    """How ruamel writes a new int, float or bool value (its represent_* for YAML 1.2)."""
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
    return None


def _flat_kept(raw: str, value: Any) -> bool:
    """Does ruamel's round trip write this value back as `raw`? A plain word, an int or
    bool as ruamel writes one, or a float in fixed notation with at most 15 significant
    digits as Python writes it (ruamel rebuilds a float's text from its width and
    precision, which can respell an exponent form with the same value)."""
    if isinstance(value, str):
        return True
    if isinstance(value, float):
        digits = raw.lstrip("-").replace(".", "").lstrip("0")
        return "e" not in raw and "E" not in raw and len(digits) <= 15 and repr(value) == raw
    return value is not None and _flat_text(value) == raw


def parse_flat(text: str) -> dict[str, Any] | None:
    """The mapping `text` holds if it is in the flat subset, else None."""
    out: dict[str, Any] = {}
    for line in text.split("\n"):
        if not line or line[0] == "#":
            continue
        key, sep, raw = line.partition(": ")
        if not sep or not _is_name(key, _KEY_CHARS) or key in out \
                or key in _FLAT_BOOLS or key in _FLAT_NULLS:
            return None
        value = flat_scalar(raw)
        if value is NOT_FLAT:
            return None
        out[key] = value
    return out


def parse_flat_yaml(text: str) -> dict[str, Any] | None:
    """What a YAML 1.2 loader (ruamel's, safe or round-trip) makes of `text`, as plain
    values, if `text` is in the flat `KEY: VALUE` subset (module doc); else None (parse it with
    ruamel). For callers that only read, such as metrics files written by a stage.
    A text without any key is declined too: ruamel reads an empty document as null."""
    return parse_flat(text) or None


def edit_flat(text: str, overrides: Iterable[Override]) -> str | None:
    """`text` with `overrides` applied, if the file holds only flat `KEY: VALUE` lines
    written as ruamel writes them and every override sets an existing key to an int,
    float or bool; else None (ruamel edits it)."""
    data = parse_flat(text)
    if data is None or not text.endswith("\n"):
        return None
    lines = text[:-1].split("\n")
    index = {}
    for i, line in enumerate(lines):
        key, _, raw = line.partition(": ")
        if key not in data or not _flat_kept(raw, data[key]):
            return None  # a comment or blank line, or a value ruamel might respell
        index[key] = i
    for ov in overrides:
        new = _flat_text(ov.value)
        if ov.op != "set" or ov.key not in index or new is None:
            return None
        lines[index[ov.key]] = f"{ov.key}: {new}"
    return "\n".join(lines) + "\n"


__all__ = ["FLOAT_PATTERN", "INT_PATTERN", "KEY_PATTERN", "NOT_FLAT", "WORD_PATTERN", "edit_flat",
           "flat_scalar", "parse_flat", "parse_flat_yaml"]
