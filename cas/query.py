"""Filter, sort and column selection over experiment rows: pure, no I/O, never eval.

A row is a mapping from a column id to a value; a Column names one of them. Ids:

    name, baseline, created, status, ...     fields of the record ("field" group)
    metrics:<file>:<key>                     a metric, e.g. metrics:metrics.json:acc
    params:<file>:<key>                      a param,  e.g. params:params.yaml:train.lr
    deps:<path>                              a dependency's id, e.g. deps:data/raw.csv

A column is shown, and can be written in an expression, as `<file>:<key>`
(`metrics.json:acc`, `params.yaml:train.lr`) or by a short form: the bare key (`acc`,
`train.lr`) or the key under its group (`metrics.acc`, `params.train.lr`,
`deps.data/raw.csv`); failing those, a trailing part of a dotted key (`lr`,
`params.lr` for train.lr). A short form that names more than one column is ambiguous
(UsageError listing the candidates); a field name always means the field.

Filter grammar (keywords case-insensitive; `not` binds tighter than `and`, `and`
tighter than `or`):

    expr     := and ("or" and)*
    and      := unary ("and" unary)*
    unary    := "not" unary | "(" expr ")" | compare
    compare  := operand [OP operand]          a bare operand tests `== true`
    OP       := == | != | < | <= | > | >= | ~ (glob match) | !~ (glob mismatch)
    operand  := KEY | `KEY WITH ODD CHARACTERS` | "string" | 'string' | NUMBER
                | true | false | null

Semantics: ints and floats compare as numbers, strings as strings, booleans only by
== and !=; an ordering between different types is false, and `!=` between present
values of different types is true. A comparison involving a missing value (the row
has no such column, or its value is null) is false, whatever the operator; the one
way to ask about absence is the literal null: `k == null` is true when k is missing
or null, `k != null` when it is present and not null. `~` matches a string against a
shell glob (`name ~ "lr-*"`), case-sensitively.

Every error is a FilterError (a UsageError, exit 2) whose message shows the
expression with a caret under the offending position.
"""

from __future__ import annotations

import difflib
import fnmatch
import json
import math
import re
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping, Sequence

from .errors import UsageError

FIELD, METRICS, PARAMS, DEPS = "field", "metrics", "params", "deps"
GROUPS = (METRICS, PARAMS, DEPS)
# Deeper nesting than this is refused before Python's own recursion limit is near.
MAX_DEPTH = 64
MAX_EXPR_LEN = 10_000  # characters; a filter is typed by a person


class _Missing:
    __slots__ = ()

    def __repr__(self) -> str:
        return "MISSING"


MISSING: Any = _Missing()  # a row without the column


@dataclass(frozen=True, slots=True)
class Column:
    """One column of the experiment table."""

    group: str  # field | metrics | params | deps
    file: str  # the params/metrics file; "" for fields and deps
    key: str  # the flattened key, the field name, or the dep path

    @property
    def id(self) -> str:
        """The row key: `name`, `metrics:<file>:<key>`, `params:...`, `deps:<path>`."""
        if self.group == FIELD:
            return self.key
        if self.group == DEPS:
            return f"deps:{self.key}"
        return f"{self.group}:{self.file}:{self.key}"

    @property
    def name(self) -> str:
        """The header: `name`, `metrics.json:acc`, `params.yaml:train.lr`, `data/raw.csv`."""
        return f"{self.file}:{self.key}" if self.file else self.key


def field(name: str) -> Column:
    return Column(FIELD, "", name)


def metric(file: str, key: str) -> Column:
    return Column(METRICS, file, key)


def param(file: str, key: str) -> Column:
    return Column(PARAMS, file, key)


def dep(path: str) -> Column:
    return Column(DEPS, "", path)


def column_of(cid: str) -> Column:
    """The Column whose id is `cid` (the inverse of Column.id)."""
    group, sep, rest = cid.partition(":")
    if sep and group in (METRICS, PARAMS):
        file, _, key = rest.partition(":")
        return Column(group, file, key)
    if sep and group == DEPS:
        return Column(DEPS, "", rest)
    return Column(FIELD, "", cid)


class FilterError(UsageError):
    """A filter, sort key or column pattern that cannot be parsed or resolved."""

    def __init__(self, message: str, text: str, pos: int, *, hint: str | None = None) -> None:
        pos = max(0, min(pos, len(text)))
        # Show the line with a caret; tabs and newlines flattened so the caret lines up.
        shown = text.replace("\t", " ").replace("\n", " ").replace("\r", " ")
        super().__init__(f"{message} (at column {pos + 1})\n  {shown}\n  {' ' * pos}^", hint=hint)
        self.pos = pos
        self.text = text


# -- tokens ---------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Token:
    kind: str  # ( ) OP AND OR NOT STR NUM TRUE FALSE NULL KEY EOF
    value: Any
    pos: int


_OPS = ("==", "!=", "<=", ">=", "!~", "<", ">", "~")
_KEYWORDS = {"and": "AND", "or": "OR", "not": "NOT", "true": "TRUE", "false": "FALSE",
             "null": "NULL"}
_NUMBER = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")
_ESCAPES = {"\\": "\\", '"': '"', "'": "'", "n": "\n", "t": "\t", "r": "\r", "0": "\0"}


def _key_start(c: str) -> bool:
    return c.isalpha() or c == "_"


def _key_char(c: str) -> bool:
    return c.isalnum() or c in "_.-/:@+[]"


def tokenize(text: str) -> list[Token]:
    """Split a filter expression into tokens. Raises FilterError."""
    if not isinstance(text, str):
        raise UsageError("a filter must be text")
    if len(text) > MAX_EXPR_LEN:
        raise FilterError(f"filter is longer than {MAX_EXPR_LEN} characters", text[:60] + "...", 60)
    toks: list[Token] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c.isspace():
            i += 1
        elif c in "()":
            toks.append(Token(c, c, i))
            i += 1
        elif c in "=!<>~":
            op = next((o for o in _OPS if text.startswith(o, i)), None)
            if op is None:
                hint = "use == to compare" if c == "=" else "operators: == != < <= > >= ~ !~"
                raise FilterError(f"unknown operator {text[i:i + 2].strip()!r}", text, i, hint=hint)
            toks.append(Token("OP", op, i))
            i += len(op)
        elif c in "\"'":
            j, buf = i + 1, []
            while True:
                if j >= n:
                    raise FilterError("unterminated string", text, i,
                                      hint=f"close it with {c}")
                ch = text[j]
                if ch == c:
                    break
                if ch == "\\":
                    if j + 1 >= n or text[j + 1] not in _ESCAPES:
                        raise FilterError("bad escape in string", text, j,
                                          hint='escapes: \\\\ \\" \\\' \\n \\t \\r \\0')
                    buf.append(_ESCAPES[text[j + 1]])
                    j += 2
                    continue
                buf.append(ch)
                j += 1
            toks.append(Token("STR", "".join(buf), i))
            i = j + 1
        elif c == "`":
            j = text.find("`", i + 1)
            if j < 0:
                raise FilterError("unterminated `quoted key`", text, i, hint="close it with `")
            if j == i + 1:
                raise FilterError("empty `quoted key`", text, i)
            toks.append(Token("KEY", text[i + 1:j], i))
            i = j + 1
        elif c.isdigit() or (c in "-+." and i + 1 < n and (text[i + 1].isdigit() or text[i + 1] == ".")):
            m = _NUMBER.match(text, i)
            if m is None or m.end() == i or (m.end() < n and (_key_char(text[m.end()]))):
                end = m.end() if m else i + 1
                while end < n and _key_char(text[end]):
                    end += 1
                raise FilterError(f"malformed number {text[i:end]!r}", text, i,
                                  hint="a key must start with a letter or _; quote odd keys with `backticks`")
            s = m.group()
            try:
                value: Any = int(s) if re.fullmatch(r"[-+]?\d+", s) else float(s)
            except ValueError:  # more digits than int() accepts: a float (inf) is honest
                value = float(s)
            toks.append(Token("NUM", value, i))
            i = m.end()
        elif _key_start(c):
            j = i + 1
            while j < n and _key_char(text[j]):
                j += 1
            word = text[i:j]
            kind = _KEYWORDS.get(word.lower())
            if kind is None:
                toks.append(Token("KEY", word, i))
            else:
                toks.append(Token(kind, {"TRUE": True, "FALSE": False}.get(kind), i))
            i = j
        else:
            raise FilterError(f"unexpected character {c!r}", text, i,
                              hint="quote text with \"...\" and odd keys with `backticks`")
    toks.append(Token("EOF", None, n))
    return toks


# -- syntax tree ----------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Key:
    text: str
    pos: int


@dataclass(frozen=True, slots=True)
class Lit:
    value: Any  # str, int, float, bool or None
    pos: int


@dataclass(frozen=True, slots=True)
class Compare:
    op: str
    left: Key | Lit
    right: Key | Lit
    pos: int  # of the operator


@dataclass(frozen=True, slots=True)
class Truth:
    operand: Key | Lit


@dataclass(frozen=True, slots=True)
class Not:
    arg: "Node"


@dataclass(frozen=True, slots=True)
class BoolOp:
    op: str  # and | or
    args: tuple["Node", ...]


Node = Compare | Truth | Not | BoolOp


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.toks = tokenize(text)
        self.i = 0

    def peek(self) -> Token:
        return self.toks[self.i]

    def take(self) -> Token:
        t = self.toks[self.i]
        self.i += 1
        return t

    def fail(self, what: str, tok: Token, hint: str | None = None) -> FilterError:
        nxt = self.toks[min(self.i + 1, len(self.toks) - 1)].pos if tok is self.peek() else len(self.text)
        found = "the end" if tok.kind == "EOF" else repr(self.text[tok.pos:max(nxt, tok.pos + 1)].strip()[:30])
        return FilterError(f"invalid filter: expected {what}, found {found}", self.text, tok.pos,
                           hint=hint)

    def parse(self) -> Node:
        if self.peek().kind == "EOF":
            raise self.fail("an expression", self.peek(),
                            hint='e.g. metrics.acc > 0.9 and params.train.lr <= 0.01')
        node = self.expr(0)
        tok = self.peek()
        if tok.kind != "EOF":
            hint = "join conditions with `and` / `or`" if tok.kind in ("KEY", "STR", "NUM", "(") else None
            if tok.kind == ")":
                raise FilterError("invalid filter: unbalanced ')'", self.text, tok.pos)
            raise self.fail("`and`, `or` or the end", tok, hint=hint)
        return node

    def _deeper(self, depth: int, tok: Token) -> int:
        if depth >= MAX_DEPTH:
            raise FilterError(f"filter nested deeper than {MAX_DEPTH} levels", self.text, tok.pos)
        return depth + 1

    def expr(self, depth: int) -> Node:
        args = [self.conj(depth)]
        while self.peek().kind == "OR":
            self.take()
            args.append(self.conj(depth))
        return args[0] if len(args) == 1 else BoolOp("or", tuple(args))

    def conj(self, depth: int) -> Node:
        args = [self.unary(depth)]
        while self.peek().kind == "AND":
            self.take()
            args.append(self.unary(depth))
        return args[0] if len(args) == 1 else BoolOp("and", tuple(args))

    def unary(self, depth: int) -> Node:
        tok = self.peek()
        if tok.kind == "NOT":
            self.take()
            return Not(self.unary(self._deeper(depth, tok)))
        if tok.kind == "(":
            self.take()
            node = self.expr(self._deeper(depth, tok))
            close = self.peek()
            if close.kind != ")":
                raise FilterError("invalid filter: '(' is never closed", self.text, tok.pos,
                                  hint="add the matching ')'")
            self.take()
            return node
        return self.compare()

    def operand(self) -> Key | Lit:
        tok = self.peek()
        if tok.kind == "KEY":
            self.take()
            return Key(tok.value, tok.pos)
        if tok.kind in ("STR", "NUM", "TRUE", "FALSE", "NULL"):
            self.take()
            return Lit(tok.value, tok.pos)
        raise self.fail("a key or a value", tok)

    def compare(self) -> Node:
        left = self.operand()
        tok = self.peek()
        if tok.kind != "OP":
            if isinstance(left, Lit):
                raise self.fail("an operator after a value", tok, hint="e.g. metrics.acc > 0.9")
            return Truth(left)
        self.take()
        if self.peek().kind not in ("KEY", "STR", "NUM", "TRUE", "FALSE", "NULL"):
            raise self.fail(f"a value after {tok.value!r}", self.peek())
        right = self.operand()
        if tok.value in ("~", "!~") and not (isinstance(right, Lit) and isinstance(right.value, str)):
            raise FilterError(f"invalid filter: {tok.value} needs a quoted glob pattern on its right",
                              self.text, right.pos, hint='e.g. name ~ "lr-*"')
        if self.peek().kind == "OP":
            raise FilterError("invalid filter: comparisons do not chain", self.text, self.peek().pos,
                              hint="write `a < b and b < c`")
        return Compare(tok.value, left, right, tok.pos)


def parse(text: str) -> Node:
    """Parse a filter expression into a syntax tree (keys not yet resolved).

    Raises:
        FilterError: a syntax error, with its position.
    """
    return _Parser(text).parse()


# -- key resolution -------------------------------------------------------------------

class Resolver:
    """Resolves the ways a user writes a column to the Column itself."""

    def __init__(self, columns: Iterable[Column]) -> None:
        self.columns = list(dict.fromkeys(columns))
        self._spellings: dict[str, list[Column]] = {}
        self._suffixes: dict[str, list[Column]] = {}  # `lr` for train.lr, only if no spelling
        for col in self.columns:
            for s in self.spellings(col):
                lst = self._spellings.setdefault(s, [])
                if col not in lst:
                    lst.append(col)
            if col.group in (METRICS, PARAMS):
                parts = col.key.split(".")
                for i in range(1, len(parts)):
                    tail = ".".join(parts[i:])
                    for s in (tail, f"{col.group}.{tail}"):
                        lst = self._suffixes.setdefault(s, [])
                        if col not in lst:
                            lst.append(col)

    @staticmethod
    def spellings(col: Column) -> list[str]:
        """Every string that names `col`, most specific first."""
        if col.group == FIELD:
            return [col.key]
        if col.group == DEPS:
            return [col.id, f"deps.{col.key}", col.key]
        return [col.id, col.name, f"{col.group}.{col.key}", col.key]

    def resolve(self, key: str, *, text: str | None = None, pos: int = 0) -> Column:
        """The one column `key` names.

        Raises:
            FilterError: no column, or more than one, is named so (with candidates or
                a close-match suggestion).
        """
        text = key if text is None else text
        for col in self.columns:  # a field name always means the field
            if col.group == FIELD and col.key == key:
                return col
        found = self._spellings.get(key) or self._suffixes.get(key, [])
        if len(found) == 1:
            return found[0]
        if found:
            names = ", ".join(c.name for c in found)
            raise FilterError(f"ambiguous key {key!r}: it matches {names}", text, pos,
                              hint=f"write the full name, e.g. {found[0].name}")
        close = difflib.get_close_matches(key, list(self._spellings), n=3, cutoff=0.6)
        hint = (f"did you mean {' or '.join(repr(c) for c in close)}?" if close else
                "no experiment has such a column" + (
                    "; known: " + ", ".join(c.name for c in self.columns[:12]) if self.columns else ""))
        if not close and key in _STATUS_WORDS:
            hint = f'to compare with text, quote it: "{key}"'
        raise FilterError(f"unknown key {key!r}", text, pos, hint=hint)


_STATUS_WORDS = {"success", "failed", "interrupted", "running", "queued", "done"}


# -- evaluation -----------------------------------------------------------------------

Row = Mapping[str, Any]
Predicate = Callable[[Row], bool]


def _kind(v: Any) -> int:
    """0 null/missing, 1 bool, 2 number, 3 string, 4 anything else (list, mapping)."""
    if v is None or v is MISSING:
        return 0
    t = type(v)
    if t is bool:
        return 1
    if t is int or t is float:
        return 2
    if t is str:
        return 3
    if isinstance(v, bool):
        return 1
    if isinstance(v, (int, float)):
        return 2
    return 3 if isinstance(v, str) else 4


def compare(op: str, a: Any, b: Any) -> bool:
    """Apply `op` to two present-or-missing values per the module's semantics.

    The literal-null forms (`k == null`, `k != null`) are handled by the caller.
    """
    ka, kb = _kind(a), _kind(b)
    if ka == 0 or kb == 0:
        return False
    if op == "~" or op == "!~":
        if ka != 3 or kb != 3:
            return False
        return fnmatch.fnmatchcase(a, b) == (op == "~")
    if op == "==":
        return ka == kb and a == b
    if op == "!=":
        return ka != kb or a != b
    if ka != kb or ka not in (2, 3):
        return False
    if op == "<":
        return a < b
    if op == "<=":
        return a <= b
    if op == ">":
        return a > b
    return a >= b  # ">="


def _getter(operand: Key | Lit, resolver: Resolver | None, text: str) -> tuple[Callable[[Row], Any], bool]:
    """(value getter, is-literal-null) for one operand."""
    if isinstance(operand, Lit):
        v = operand.value
        return (lambda row: v), v is None
    if resolver is None:
        cid = operand.text
    else:
        cid = resolver.resolve(operand.text, text=text, pos=operand.pos).id
    return (lambda row: row.get(cid, MISSING)), False


def _compile(node: Node, resolver: Resolver | None, text: str) -> Predicate:
    if isinstance(node, BoolOp):
        parts = [_compile(a, resolver, text) for a in node.args]
        if node.op == "and":
            return lambda row: all(p(row) for p in parts)
        return lambda row: any(p(row) for p in parts)
    if isinstance(node, Not):
        inner = _compile(node.arg, resolver, text)
        return lambda row: not inner(row)
    if isinstance(node, Truth):
        get, _ = _getter(node.operand, resolver, text)
        return lambda row: get(row) is True
    left, lnull = _getter(node.left, resolver, text)
    right, rnull = _getter(node.right, resolver, text)
    op = node.op
    if lnull or rnull:
        other = right if lnull else left
        if op == "==":
            if lnull and rnull:
                return lambda row: True
            return lambda row: _kind(other(row)) == 0
        if op == "!=":
            if lnull and rnull:
                return lambda row: False
            return lambda row: _kind(other(row)) != 0
        return lambda row: False
    return lambda row: compare(op, left(row), right(row))


def compile_filter(text: str, columns: Iterable[Column] | None) -> Predicate:
    """Parse `text` and bind its keys to `columns`; returns row -> bool.

    Args:
        columns: the columns keys resolve against; None skips resolution (keys are
            then taken as column ids), e.g. to check the syntax when there are no rows.
    Raises:
        FilterError: a syntax error, or an unknown or ambiguous key.
    """
    node = parse(text)
    return _compile(node, None if columns is None else Resolver(columns), text)


# -- sorting --------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Sort:
    column: Column
    descending: bool


def parse_sort(spec: str, columns: Iterable[Column]) -> Sort:
    """`KEY[:asc|:desc]` -> Sort. The key resolves as in a filter.

    Raises:
        FilterError: an empty, unknown or ambiguous key.
    """
    key, descending, _ = split_sort(spec)
    return Sort(Resolver(columns).resolve(key, text=spec, pos=0), descending)


def split_sort(spec: str) -> tuple[str, bool, bool]:
    """`KEY[:asc|:desc]` -> (key, descending, whether a direction was written).

    Raises:
        FilterError: an empty key.
    """
    key, descending, explicit = spec.strip(), False, False
    for suffix, desc in ((":asc", False), (":desc", True)):
        if key.lower().endswith(suffix):
            key, descending, explicit = key[: -len(suffix)], desc, True
            break
    if not key:
        raise FilterError("empty sort key", spec, 0, hint="e.g. --sort-by metrics.acc:desc")
    return key, descending, explicit


def sort_rows(rows: Sequence[Row], sort: Sort) -> list[Row]:
    """Rows ordered by the sort column; missing (and null) values last in either order.

    Numbers sort before strings, which sort before anything else; the sort is stable,
    so rows with equal values keep their order.
    """
    cid = sort.column.id
    present, missing = [], []
    for row in rows:
        v = row.get(cid, MISSING)
        k = _kind(v)
        if k == 0 or (k == 2 and v != v):  # NaN: unordered, so with the missing ones
            missing.append(row)
        else:
            present.append((k, v, row))
    rank = {2: 0, 3: 1, 1: 2, 4: 3}

    def key(item: tuple[int, Any, Row]) -> tuple[int, Any]:
        k, v, _ = item
        if k == 4:
            return (rank[k], json.dumps(v, sort_keys=True, default=str))
        return (rank[k], v)

    present.sort(key=key, reverse=sort.descending)
    return [r for _, _, r in present] + missing


# -- column selection -----------------------------------------------------------------

def _matches(col: Column, pattern: str) -> bool:
    return any(fnmatch.fnmatchcase(s, pattern) for s in Resolver.spellings(col) + [col.name])


def select_columns(columns: Sequence[Column], rows: Sequence[Row], *, keep: Sequence[str] = (),
                   drop: Sequence[str] = (), only_changed: bool = False,
                   always: Iterable[str] = ("name",)) -> list[Column]:
    """The columns to show, in order: `keep` beats `drop`, which beats `only_changed`.

    Args:
        keep, drop: shell globs matched against every spelling of a column
            (`metrics.json:acc`, `metrics.acc`, `acc`, ...).
        only_changed: leave out metric, param and dep columns whose value is the same
            in every row given (missing counts as a value).
        always: ids of columns that are never dropped.
    """
    always = set(always)
    out = []
    for col in columns:
        if col.id in always or any(_matches(col, p) for p in keep):
            out.append(col)
            continue
        if any(_matches(col, p) for p in drop):
            continue
        if only_changed and col.group != FIELD and not _differs(col.id, rows):
            continue
        out.append(col)
    return out


def _differs(cid: str, rows: Sequence[Row]) -> bool:
    first = MISSING
    seen = False
    for row in rows:
        v = row.get(cid, MISSING)
        if not seen:
            first, seen = v, True
        elif _kind(v) != _kind(first) or v != first:
            return True
    return False


def format_value(value: Any, precision: int | None = None) -> str:
    """A cell's text: `-` for missing, floats to `precision` significant digits."""
    t = type(value)
    if t is float:  # the common case first: a table is mostly metrics
        if value != value or value in (math.inf, -math.inf):
            return str(value)
        return f"{value:.{precision}g}" if precision is not None else repr(value)
    if t is str:
        return value
    if t is int:
        return str(value)
    if value is MISSING or value is None:
        return "-"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, float):
        return format_value(float(value), precision)
    if isinstance(value, (int, str)):
        return str(value)
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
