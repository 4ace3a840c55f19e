"""The filter language: `--filter` expressions over experiment rows, parsed and
compiled into predicates. Pure, no I/O, never eval.

    compile_filter(text, columns) -> Predicate (row -> bool)

Keys in an expression name columns the way cas/experiments/table.py's Resolver reads them
(`metrics.json:acc`, `metrics.acc`, `acc`, ...); rows are mappings from column ids to
values, a missing column being query.MISSING.

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

import fnmatch
import re
from dataclasses import dataclass
from typing import Any, Callable, Iterable

from cas.core.errors import UsageError
from cas.experiments.table import MISSING, Column, FilterError, Resolver, Row, value_kind

# Deeper nesting than this is refused before Python's own recursion limit is near.
MAX_DEPTH = 64
MAX_EXPR_LEN = 10_000  # characters; a filter is typed by a person

Predicate = Callable[[Row], bool]


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


# -- evaluation -----------------------------------------------------------------------

def compare(op: str, a: Any, b: Any) -> bool:
    """Apply `op` to two present-or-missing values per the module's semantics.

    The literal-null forms (`k == null`, `k != null`) are handled by the caller.
    """
    ka, kb = value_kind(a), value_kind(b)
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
            return lambda row: value_kind(other(row)) == 0
        if op == "!=":
            if lnull and rnull:
                return lambda row: False
            return lambda row: value_kind(other(row)) != 0
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


__all__ = ["MAX_DEPTH", "MAX_EXPR_LEN", "BoolOp", "Compare", "Key", "Lit", "Node", "Not", "Predicate",
           "Token", "Truth", "compare", "compile_filter", "parse", "tokenize"]
