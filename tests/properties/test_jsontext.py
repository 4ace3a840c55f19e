"""Properties: the start-up fast paths equal the library or the pattern they stand for.

cas/core/jsontext.py, and the checks in cas/pipeline/tallylock.py, cas/core/hashing.py and cas/workspace/git.py that
replaced regular expressions on `tally run`'s path, are each compared here with the
`json` call or the `re` pattern they replace, on generated text biased towards the
characters where the two could disagree.
"""

from __future__ import annotations

import json
import re

from hypothesis import example, given, settings, strategies as st

from cas.workspace import git
from cas.core import hashing
from cas.core import jsontext
from cas.pipeline import tallylock as lockfile
from cas.store import refs

# Characters around every boundary the fast paths draw: digits, signs, dots, exponent
# letters, quotes and backslashes, controls, DEL, non-ASCII digits and letters,
# separators YAML treats as line breaks, surrogates.
EDGY = st.sampled_from(list("0123456789+-.eEaf/_ @=,%()\"\\'\t\n\r\x00\x1f\x7f\x80\x9f"
                            "\u00e9\u00b2\u0661\u2028\ufeff\ud800 :#-"))
TEXT = st.one_of(st.text(EDGY, max_size=12), st.text(max_size=12))

INT = r"[-+]?[0-9]+"
FLOAT = r"[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?"


@settings(max_examples=1000)
@given(TEXT)
@example("1e5E3")
@example("+.5")
@example("5.")
@example(".")
@example("\u0661")
def test_numbers_match_the_patterns(s: str) -> None:
    assert jsontext.is_int(s) == bool(re.fullmatch(INT, s))
    assert jsontext.is_float(s) == bool(re.fullmatch(FLOAT, s))


@settings(max_examples=1000)
@given(TEXT)
@example('a"b\\c/d')
@example("\x7f")
def test_quote_is_json_dumps(s: str) -> None:
    assert jsontext.quote(s) == json.dumps(s)
    assert jsontext.quote(s, ensure_ascii=False) == json.dumps(s, ensure_ascii=False)


@settings(max_examples=1000)
@given(TEXT)
def test_unquote_is_json_loads_where_it_answers(s: str) -> None:
    for token in (s, json.dumps(s), json.dumps(s, ensure_ascii=False), f'"{s}"'):
        got = jsontext.unquote(token)
        if got is not None:
            assert got == json.loads(token)
    # Every printable string without quote or backslash takes the fast path.
    if s.isprintable() and '"' not in s and "\\" not in s:
        assert jsontext.unquote(f'"{s}"') == s


@settings(max_examples=1000)
@given(TEXT)
@example("a  b")
@example("/abs/path")
def test_lock_scalars_match_the_old_rules(s: str) -> None:
    assert lockfile._is_plain(s) == bool(re.fullmatch(lockfile._PLAIN, s))
    old_quote = (json.dumps(s, ensure_ascii=True).replace("\x7f", "\\u007f")
                 if re.search(lockfile._UNSAFE, s) else json.dumps(s, ensure_ascii=False))
    assert lockfile._quote(s) == old_quote
    old_oid = json.dumps(s) if re.fullmatch(lockfile._NUMERIC_HEX, s) else s
    assert lockfile._oid_text(s) == old_oid
    # And what is written reads back as written.
    assert lockfile._parse_scalar(lockfile._scalar(s)) == s


HEXISH = st.text(st.sampled_from(list("0123456789abcdefABCDEFg\n ")), min_size=38, max_size=66)


@settings(max_examples=1000)
@given(st.one_of(HEXISH, TEXT))
@example("a" * 64 + "\n")
def test_object_id_checks_match_the_patterns(s: str) -> None:
    assert hashing.is_oid(s) == bool(re.match(r"\A[0-9a-f]{64}\Z", s))
    refused = False
    try:
        git.check_ref("refs/heads/x", s)
    except Exception:  # noqa: BLE001 - UsageError: not a full lowercase id
        refused = True
    assert refused == (not re.fullmatch(r"[0-9a-f]{40}|[0-9a-f]{64}", s))


@settings(max_examples=1000)
@given(st.one_of(TEXT, st.text(st.sampled_from(list("ab-_.~^:?*[/\\ \t\u00a0\u2028\u3000\u200b\x7f\x85")),
                                max_size=8)))
def test_the_name_check_fast_path_changes_no_verdict(name: str) -> None:
    """refs.name_problem's printable shortcut against the character-by-character rule
    (and it answers for any string, a lone surrogate included: it never raises)."""
    slow = any(c in refs._BAD_CHARS or c.isspace() for c in name)
    got = refs.name_problem(name)
    try:
        name.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # a lone surrogate: refused as such, before this rule
        assert got == "it is not valid UTF-8"
        return
    if slow and name:
        assert got is not None and ("whitespace" in got or "longer" in got)
    elif got is not None:
        assert "whitespace" not in got
