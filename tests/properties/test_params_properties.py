"""Hypothesis properties of the `-S` start-up path's shortcuts: each one is exactly the
slower thing it replaces.

- cas/core/flatyaml.py checks its patterns with string methods instead of compiling regular
  expressions at start-up: each check fullmatches exactly what its pattern does.
- cas/pipeline/params.py reads a `-S` value without any of `,'"()[]{}` as one value without
  importing the sweep syntax: cas/sweepspec.sweep_values gives the same.
"""

from __future__ import annotations

import math
import re

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from cas.core import flatyaml
from cas.pipeline import params
from cas.pipeline import sweepspec

FAST = settings(deadline=None, max_examples=500, suppress_health_check=[HealthCheck.too_slow])

# Characters every pattern cares about, their look-alikes (other scripts' digits,
# superscripts, a dotless i that lowercases oddly, a Kelvin sign that lowercases to k)
# and the separators a line could hold.
TRICKY = "0123456789+-.eE_aAzZ/x \t\n:#~\u0663\u00b2\U0001d7d8\u0131\u0130\u212a"


def texts(pattern: str):
    """Strings near `pattern`: ones it matches, those mutated, tricky mixes, anything."""
    matching = st.from_regex(pattern, fullmatch=True)
    mutated = st.tuples(matching, st.integers(0, 40), st.sampled_from(list(TRICKY) + [""])).map(
        lambda t: t[0][:t[1]] + t[2] + t[0][t[1] + 1:])
    return matching | mutated | st.text(alphabet=TRICKY, max_size=12) | st.text(max_size=12)


def _same(check, pattern: str, text: str) -> None:
    assert check(text) == (re.fullmatch(pattern, text) is not None), (pattern, text)


@FAST
@given(texts(flatyaml.INT_PATTERN))
@example("-0")
@example("+")
@example("")
@example("00")
@example("1²")
@example("٣")
def test_the_int_check_is_its_pattern(text: str) -> None:
    _same(flatyaml._is_int, flatyaml.INT_PATTERN, text)


@FAST
@given(texts(flatyaml.FLOAT_PATTERN))
@example("1.")
@example(".5")
@example("1e")
@example("1e+")
@example("1E5")
@example("1.5e-05")
@example("01.5")
@example("0e0")
@example("1e5e3")
@example("1.e5")
@example("-+1.0")
@example("1.0E+٣")
def test_the_float_check_is_its_pattern(text: str) -> None:
    _same(flatyaml._is_float, flatyaml.FLOAT_PATTERN, text)


@FAST
@given(texts(flatyaml.KEY_PATTERN))
@example("_")
@example("a-")
@example("-a")
@example("a.b")
@example("K")
@example("ı")
def test_the_key_check_is_its_pattern(text: str) -> None:
    _same(lambda t: flatyaml._is_name(t, flatyaml._KEY_CHARS), flatyaml.KEY_PATTERN, text)


@FAST
@given(texts(flatyaml.WORD_PATTERN))
@example("data/x.csv")
@example("v1.2")
@example("/x")
@example("a b")
@example("é")
def test_the_word_check_is_its_pattern(text: str) -> None:
    _same(lambda t: flatyaml._is_name(t, flatyaml._WORD_CHARS), flatyaml.WORD_PATTERN, text)


def _flat_scalar_by_regex(text: str):
    """flat_scalar as it was written with re.fullmatch, the reference."""
    if re.fullmatch(flatyaml.INT_PATTERN, text):
        return int(text)
    if re.fullmatch(flatyaml.FLOAT_PATTERN, text):
        return float(text)
    if text in flatyaml._FLAT_BOOLS:
        return flatyaml._FLAT_BOOLS[text]
    if text in flatyaml._FLAT_NULLS:
        return None
    if re.fullmatch(flatyaml.WORD_PATTERN, text):
        return text
    return flatyaml.NOT_FLAT


@FAST
@given(texts(flatyaml.FLOAT_PATTERN) | texts(flatyaml.WORD_PATTERN) | st.sampled_from(
    ["true", "False", "NULL", "~", "null", "yes", "-.inf", ".nan"]))
def test_flat_scalar_reads_what_the_regex_version_read(text: str) -> None:
    fast, slow = flatyaml.flat_scalar(text), _flat_scalar_by_regex(text)
    assert type(fast) is type(slow) and (fast is slow or fast == slow or (
        isinstance(fast, float) and math.isnan(fast) and math.isnan(slow))), text


SIMPLE = st.text(alphabet=st.characters(blacklist_characters=params._SWEEP_CHARS,
                                        blacklist_categories=("Cs",)), max_size=16)


@settings(deadline=None, max_examples=300)
@given(SIMPLE | st.from_regex(r"[ ]?[-+]?[0-9a-z_.]{1,8}[ ]?", fullmatch=True))
@example("0.1")
@example(" 1e-3 ")
@example("true")
@example("null")
@example("")
@example("a: b")
@example("x #y")
@example("2020-01-01")
@example(".nan")
@example("range 5")
@example("&a")
def test_a_value_without_sweep_characters_skips_the_sweep_syntax(raw: str) -> None:
    assert not any(c in raw for c in params._SWEEP_CHARS)
    assert repr(params._values(raw)) == repr(sweepspec.sweep_values(raw)), raw
