"""Properties: the checks written with string methods equal the pattern they state.

Object ids (cas/core/hashing.py, cas/workspace/git.py) are checked with `str.strip`, and
refs.name_problem takes a shortcut for printable names (a third of listing 10,000
refs); each is compared here with the regular expression or the slow rule it stands
for, on generated text biased towards the characters where the two could disagree.
"""

from __future__ import annotations

import re

from hypothesis import example, given, settings, strategies as st

from cas.workspace import git
from cas.core import hashing
from cas.store import refs

# Characters around every boundary the fast paths draw: digits, signs, dots, exponent
# letters, quotes and backslashes, controls, DEL, non-ASCII digits and letters,
# separators YAML treats as line breaks, surrogates.
EDGY = st.sampled_from(list("0123456789+-.eEaf/_ @=,%()\"\\'\t\n\r\x00\x1f\x7f\x80\x9f"
                            "\u00e9\u00b2\u0661\u2028\ufeff\ud800 :#-"))
TEXT = st.one_of(st.text(EDGY, max_size=12), st.text(max_size=12))

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
