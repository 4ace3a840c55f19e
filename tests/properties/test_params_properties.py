"""Hypothesis properties of the `-S` start-up path's shortcuts: each one gives exactly
what the slower thing it stands for gives.

- cas/core/yamlsubset.py resolves plain scalars without ruamel: what it answers for,
  ruamel reads alike, and what a writer emits plain reads back unchanged.
- cas/pipeline/params.py reads a `-S` value without any of `,'"()[]{}` as one value without
  importing the sweep syntax: cas/pipeline/sweepspec.sweep_values gives the same.
"""

from __future__ import annotations

import math
import re

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from cas.core import yamlsubset
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


# Tokens near every boundary of the resolver: its own patterns, mutated, and mixes of
# the characters where YAML loaders disagree or where syntax begins.
TOKENS = (texts(yamlsubset.INT_PATTERN) | texts(yamlsubset.FLOAT_PATTERN)
          | texts(yamlsubset.STR_PATTERN) | texts(yamlsubset.ALNUM_PATTERN)
          | st.sampled_from(["true", "False", "NULL", "~", "null", "yes", "No", "on", "y",
                             "-.inf", ".nan", ".NaN", "0x1F", "0o17", "1_000", "2020-01-01",
                             "1:30", "a: b", "a:b", "a:", "c#d", "x #c", "- a", "--", "@x",
                             "a  b", "a b ", "e5", "1e5", "12e34e56", "3fa9c0"]))


def _ruamel(doc: str, typ: str):
    from ruamel.yaml import YAML
    return YAML(typ=typ, pure=True).load(doc)


@FAST
@given(TOKENS)
def test_the_resolver_reads_what_ruamel_reads(text: str) -> None:
    """Every token the one resolver answers for, ruamel's safe and round-trip loaders
    read as the same value of the same type (as a mapping value, where files hold it)."""
    value = yamlsubset.plain_scalar(text)
    if value is yamlsubset.NOT_PLAIN:
        return
    for typ in ("safe", "rt"):
        got = params.to_plain(_ruamel(f"k: {text}\n", typ))["k"]
        assert type(got) is type(value), (text, typ, got)
        assert got == value or (isinstance(got, float) and math.isnan(got) and math.isnan(value)), (text, typ)


@FAST
@given(st.text(max_size=16) | TOKENS)
def test_what_is_written_plain_reads_back_as_written(text: str) -> None:
    if yamlsubset.is_plain(text):
        assert params.to_plain(_ruamel(f"k: {text}\n", "safe"))["k"] == text
    assert yamlsubset.write_scalar(text) is not None


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
    assert repr(params._values(raw)) == repr(sweepspec.sweep_values(raw, parse_value=params.parse_value)), raw
