"""cas/experiments/table.py and cas/experiments/filterexpr.py: the filter language, sorting, column selection and cell formatting."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cas.experiments import filterexpr as fx
from cas.experiments import table as q
from cas.core.errors import UsageError

COLS = [q.field("name"), q.field("created"), q.field("status"),
        q.metric("metrics.json", "acc"), q.metric("metrics.json", "loss"),
        q.metric("eval/scores.json", "f1"), q.metric("eval/scores.json", "acc.test"),
        q.param("params.yaml", "train.lr"), q.param("params.yaml", "train.epochs"),
        q.param("params.yaml", "model"), q.param("params.yaml", "use_gpu"),
        q.param("other.toml", "seed"), q.dep("data/raw.csv")]

ROWS = [
    {"name": "a", "status": "success", "metrics:metrics.json:acc": 0.95, "metrics:metrics.json:loss": 0.1,
     "params:params.yaml:train.lr": 0.01, "params:params.yaml:train.epochs": 10,
     "params:params.yaml:model": "resnet", "params:params.yaml:use_gpu": True,
     "params:other.toml:seed": 1, "deps:data/raw.csv": "aa"},
    {"name": "b", "status": "failed", "metrics:metrics.json:loss": 0.7,
     "params:params.yaml:train.lr": 0.1, "params:params.yaml:train.epochs": 5,
     "params:params.yaml:model": "vit", "params:params.yaml:use_gpu": False,
     "params:other.toml:seed": 1, "deps:data/raw.csv": "aa"},
    {"name": "lr-c", "status": "success", "metrics:metrics.json:acc": 0.85, "metrics:metrics.json:loss": 0.3,
     "params:params.yaml:train.lr": 0.001, "params:params.yaml:train.epochs": 10,
     "params:params.yaml:model": "resnet", "params:params.yaml:use_gpu": None,
     "params:other.toml:seed": 1, "deps:data/raw.csv": "bb"},
]


def names(expr: str, rows=ROWS) -> list[str]:
    pred = fx.compile_filter(expr, COLS)
    return [r["name"] for r in rows if pred(r)]


# -- parsing and precedence -----------------------------------------------------------

def test_example_from_the_issue() -> None:
    assert names("metrics.acc > 0.9 and params.train.lr <= 0.01") == ["a"]


@pytest.mark.parametrize("expr,expected", [
    ("metrics.loss == 0.7", ["b"]),
    ("metrics.loss != 0.7", ["a", "lr-c"]),
    ("metrics.loss < 0.3", ["a"]),
    ("metrics.loss <= 0.3", ["a", "lr-c"]),
    ("metrics.loss > 0.3", ["b"]),
    ("metrics.loss >= 0.3", ["b", "lr-c"]),
    ('name ~ "lr-*"', ["lr-c"]),
    ('name !~ "lr-*"', ["a", "b"]),
    ('status == "failed"', ["b"]),
    ("status == 'success'", ["a", "lr-c"]),
    ("use_gpu == true", ["a"]),
    ("use_gpu == false", ["b"]),
    ("use_gpu", ["a"]),
    ("not use_gpu", ["b", "lr-c"]),
    ("train.epochs == 10", ["a", "lr-c"]),
    ("train.epochs == 10.0", ["a", "lr-c"]),  # ints and floats compare as numbers
    ("0.9 < metrics.acc", ["a"]),  # a literal on the left
    ("metrics.acc > metrics.loss", ["a", "lr-c"]),  # two keys
    ("seed == 1 AND model == 'vit'", ["b"]),  # keywords in any case
])
def test_every_operator(expr: str, expected: list[str]) -> None:
    assert names(expr) == expected


def test_precedence_not_and_or() -> None:
    # and binds tighter than or: a or (b and c)
    assert names("name == 'a' or name == 'b' and status == 'success'") == ["a"]
    assert names("(name == 'a' or name == 'b') and status == 'success'") == ["a"]
    # not binds tighter than and
    assert names("not status == 'failed' and train.epochs == 10") == ["a", "lr-c"]
    assert names("not (status == 'failed' or train.lr < 0.005)") == ["a"]
    assert names("not not name == 'b'") == ["b"]
    node = fx.parse("a == 1 or b == 2 and not c == 3")
    assert isinstance(node, fx.BoolOp) and node.op == "or"
    assert isinstance(node.args[1], fx.BoolOp) and node.args[1].op == "and"
    assert isinstance(node.args[1].args[1], fx.Not)


def test_missing_values_compare_false_whatever_the_operator() -> None:
    # b has no acc: no comparison with it is true, not even !=
    for op in ("==", "!=", "<", "<=", ">", ">="):
        assert "b" not in names(f"metrics.acc {op} 0.5"), op
    assert "b" in names("not metrics.acc > 0.5")  # negation of false
    # null (lr-c's use_gpu) behaves like missing
    assert names("use_gpu != true") == ["b"]
    # the literal null asks about absence
    assert names("metrics.acc == null") == ["b"]
    assert names("metrics.acc != null") == ["a", "lr-c"]
    assert names("use_gpu == null") == ["lr-c"]
    assert names("null == metrics.acc") == ["b"]
    assert names("metrics.acc > null") == []


def test_types_do_not_mix() -> None:
    assert names("model > 1") == []  # a string is not ordered against a number
    assert names("model != 1") == ["a", "b", "lr-c"]  # but it is not equal to it
    assert names("use_gpu == 1") == []  # booleans are not numbers
    assert names("model < 's'") == ["a", "lr-c"]  # strings order as strings
    assert names("train.lr ~ '0*'") == []  # glob only matches strings


def test_strings_escapes_and_backquoted_keys() -> None:
    cols = [q.field("name"), q.param("my params.yaml", "odd key")]
    rows = [{"name": 'say "hi"', "params:my params.yaml:odd key": "x\ty"}]
    assert fx.compile_filter(r'name == "say \"hi\""', cols)(rows[0])
    assert fx.compile_filter(r"`my params.yaml:odd key` == 'x\ty'", cols)(rows[0])


def test_numbers() -> None:
    cols = [q.metric("m.json", "x")]
    for text, value in (("-1", -1), ("+2.5", 2.5), ("1e3", 1000.0), (".5", 0.5), ("3.", 3.0)):
        assert fx.compile_filter(f"x == {text}", cols)({"metrics:m.json:x": value}), text


# -- keys -----------------------------------------------------------------------------

@pytest.mark.parametrize("spelling", ["metrics.json:loss", "metrics.loss", "loss",
                                      "metrics:metrics.json:loss"])
def test_key_spellings(spelling: str) -> None:
    assert q.Resolver(COLS).resolve(spelling) == q.metric("metrics.json", "loss")


def test_param_spellings_with_file_prefix() -> None:
    r = q.Resolver(COLS)
    assert r.resolve("params.yaml:train.lr") == q.param("params.yaml", "train.lr")
    assert r.resolve("params.train.lr") == q.param("params.yaml", "train.lr")
    assert r.resolve("other.toml:seed") == q.param("other.toml", "seed")
    assert r.resolve("deps.data/raw.csv") == q.dep("data/raw.csv")
    assert r.resolve("eval/scores.json:acc.test") == q.metric("eval/scores.json", "acc.test")


def test_ambiguous_short_key_lists_candidates() -> None:
    cols = COLS + [q.metric("eval/scores.json", "loss")]
    with pytest.raises(UsageError) as exc:
        fx.compile_filter("metrics.loss < 1", cols)
    assert "ambiguous key 'metrics.loss'" in exc.value.message
    assert "metrics.json:loss" in exc.value.message and "eval/scores.json:loss" in exc.value.message


def test_unknown_key_suggests_a_close_match_with_a_caret() -> None:
    with pytest.raises(q.FilterError) as exc:
        fx.compile_filter("status == 'success' and metrics.acuracy > 0.9", COLS)
    e = exc.value
    assert "unknown key 'metrics.acuracy'" in e.message
    assert e.hint and "metrics.acc" in e.hint
    assert e.pos == 24
    lines = e.message.splitlines()
    assert lines[2].index("^") - 2 == e.pos  # the caret sits under the key
    assert e.exit_code == 2


def test_a_field_name_always_means_the_field() -> None:
    cols = COLS + [q.param("params.yaml", "status")]
    assert q.Resolver(cols).resolve("status") == q.field("status")
    assert q.Resolver(cols).resolve("params.status") == q.param("params.yaml", "status")


def test_bare_word_value_hints_at_quoting() -> None:
    with pytest.raises(q.FilterError) as exc:
        fx.compile_filter("status == failed", COLS)
    assert exc.value.hint and '"failed"' in exc.value.hint


def test_without_columns_only_the_syntax_is_checked() -> None:
    pred = fx.compile_filter("whatever > 1", None)
    assert pred({}) is False
    with pytest.raises(q.FilterError):
        fx.compile_filter("whatever >", None)


# -- syntax errors --------------------------------------------------------------------

@pytest.mark.parametrize("expr,pos,words", [
    ("", 0, "expected an expression"),
    ("metrics.acc >", 13, "a value after '>'"),
    ("metrics.acc = 1", 12, "use =="),
    ("(metrics.acc > 1", 0, "never closed"),
    ("metrics.acc > 1)", 15, "unbalanced"),
    ("metrics.acc > 'x", 14, "unterminated string"),
    ("metrics.acc > 1 metrics.loss < 2", 16, "expected `and`, `or`"),
    ("1 < metrics.acc < 2", 16, "do not chain"),
    ("name ~ 3", 7, "glob pattern"),
    ("metrics.acc > 1.2.3", 14, "malformed number"),
    ("metrics.acc > 0.9 and", 21, "a key or a value"),
    ("metrics.acc $ 1", 12, "unexpected character"),
    ("`unclosed", 0, "unterminated"),
    ("0.5", 3, "an operator after a value"),
    ("'a' \\", 4, "unexpected character"),
    (r"'bad \q escape'", 5, "bad escape"),
])
def test_syntax_errors_point_at_the_position(expr: str, pos: int, words: str) -> None:
    with pytest.raises(q.FilterError) as exc:
        fx.compile_filter(expr, COLS)
    e = exc.value
    assert words in e.message + (e.hint or ""), e.message
    assert e.pos == pos, e.message


def test_deep_nesting_is_refused_not_a_recursion_error() -> None:
    with pytest.raises(q.FilterError, match="nested deeper"):
        fx.parse("(" * 3000 + "a" + ")" * 3000)
    with pytest.raises(q.FilterError, match="nested deeper"):
        fx.parse("not " * 2000 + "a")


@settings(max_examples=400, deadline=None)
@given(st.text(max_size=80))
def test_parser_raises_only_usage_error_on_arbitrary_text(text: str) -> None:
    try:
        pred = fx.compile_filter(text, COLS)
    except UsageError:
        return
    for row in ROWS + [{}]:
        assert pred(row) in (True, False)


_ALPHABET = list("()'\"`~!=<>.:-+ _") + ["and", "or", "not", "null", "true", "acc", "loss", "name",
                                           "1", "0.5", "e3", "metrics.", "params.", "\\"]


@settings(max_examples=400, deadline=None)
@given(st.lists(st.sampled_from(_ALPHABET), max_size=25).map(" ".join))
def test_parser_raises_only_usage_error_on_near_miss_expressions(text: str) -> None:
    try:
        pred = fx.compile_filter(text, COLS)
    except UsageError:
        return
    for row in ROWS:
        assert pred(row) in (True, False)


# -- sorting --------------------------------------------------------------------------

def test_sort_ascending_descending_missing_last() -> None:
    asc = q.sort_rows(ROWS, q.parse_sort("metrics.acc", COLS))
    assert [r["name"] for r in asc] == ["lr-c", "a", "b"]
    desc = q.sort_rows(ROWS, q.parse_sort("metrics.json:acc:desc", COLS))
    assert [r["name"] for r in desc] == ["a", "lr-c", "b"]
    assert q.parse_sort("acc.test:ASC", COLS) == q.Sort(q.metric("eval/scores.json", "acc.test"), False)


def test_sort_is_stable_and_orders_mixed_types() -> None:
    rows = [{"name": "n", "metrics:m.json:x": "text"}, {"name": "m", "metrics:m.json:x": 2},
            {"name": "z", "metrics:m.json:x": float("nan")}, {"name": "k", "metrics:m.json:x": 2},
            {"name": "j", "metrics:m.json:x": None}, {"name": "i", "metrics:m.json:x": 1.5}]
    s = q.sort_rows(rows, q.parse_sort("x", [q.metric("m.json", "x")]))
    assert [r["name"] for r in s] == ["i", "m", "k", "n", "z", "j"]


def test_sort_errors() -> None:
    with pytest.raises(q.FilterError, match="empty sort key"):
        q.parse_sort(":desc", COLS)
    with pytest.raises(q.FilterError, match="unknown key"):
        q.parse_sort("metrics.nope", COLS)


# -- columns and formatting -----------------------------------------------------------

def ids(cols: list[q.Column]) -> list[str]:
    return [c.id for c in cols]


def test_drop_keep_only_changed() -> None:
    everything = q.select_columns(COLS, ROWS)
    assert everything == COLS
    dropped = q.select_columns(COLS, ROWS, drop=["params.yaml:*"])
    assert not any(c.file == "params.yaml" for c in dropped)
    # keep beats drop; name is always kept
    kept = q.select_columns(COLS, ROWS, drop=["*"], keep=["acc", "train.*"])
    assert ids(kept) == ["name", "metrics:metrics.json:acc", "params:params.yaml:train.lr",
                         "params:params.yaml:train.epochs"]
    changed = q.select_columns(COLS, ROWS, only_changed=True)
    assert "params:other.toml:seed" not in ids(changed)  # 1 everywhere
    assert "deps:data/raw.csv" in ids(changed)
    assert "status" in ids(changed)  # fields stay
    # keep beats only-changed too
    assert "params:other.toml:seed" in ids(q.select_columns(COLS, ROWS, only_changed=True, keep=["seed"]))
    # with one row nothing "changes"
    assert ids(q.select_columns(COLS, ROWS[:1], only_changed=True)) == ["name", "created", "status"]


def test_format_value() -> None:
    assert q.format_value(q.MISSING) == "-"
    assert q.format_value(None) == "-"
    assert q.format_value(True) == "true"
    assert q.format_value(0.123456789, 3) == "0.123"
    assert q.format_value(1234567.0, 3) == "1.23e+06"
    assert q.format_value(0.1) == "0.1"
    assert q.format_value(3) == "3"
    assert q.format_value([1, {"a": 2}]) == '[1,{"a":2}]'


def test_column_ids_round_trip() -> None:
    for col in COLS:
        assert q.column_of(col.id) == col


def test_a_trailing_part_of_a_dotted_key_is_a_short_form() -> None:
    r = q.Resolver(COLS)
    assert r.resolve("lr") == q.param("params.yaml", "train.lr")
    assert r.resolve("params.epochs") == q.param("params.yaml", "train.epochs")
    assert r.resolve("test") == q.metric("eval/scores.json", "acc.test")
    # an exact spelling wins over a trailing part: `acc` is metrics.json:acc, not acc.test
    cols = COLS + [q.metric("b.json", "x.acc")]
    with pytest.raises(q.FilterError, match="ambiguous"):
        q.Resolver(cols + [q.metric("c.json", "acc")]).resolve("acc")
    assert q.Resolver([q.metric("a.json", "acc"), q.metric("b.json", "x.acc")]).resolve("acc") == \
        q.metric("a.json", "acc")
    with pytest.raises(q.FilterError, match="ambiguous"):
        q.Resolver([q.param("p.yaml", "a.lr"), q.param("p.yaml", "b.lr")]).resolve("lr")
