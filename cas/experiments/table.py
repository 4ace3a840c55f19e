"""Experiment rows as a table: columns, how users name them, sorting, column selection
and cell text. Pure, no I/O. The filter language over these rows is cas/experiments/filterexpr.py.

A row is a mapping from a column id to a value; a Column names one of them. Ids:

    name, baseline, created, status, ...     fields of the record ("field" group)
    metrics:<file>:<key>                     a metric, e.g. metrics:metrics.json:acc
    params:<file>:<key>                      a param,  e.g. params:params.yaml:train.lr
    deps:<path>                              a dependency's id, e.g. deps:data/raw.csv

A column is shown, and can be written in a filter, sort key or glob, as `<file>:<key>`
(`metrics.json:acc`, `params.yaml:train.lr`) or by a short form: the bare key (`acc`,
`train.lr`) or the key under its group (`metrics.acc`, `params.train.lr`,
`deps.data/raw.csv`); failing those, a trailing part of a dotted key (`lr`,
`params.lr` for train.lr). A short form that names more than one column is ambiguous
(FilterError listing the candidates); a field name always means the field.

Every error is a FilterError (a UsageError, exit 2) whose message shows the text
with a caret under the offending position.
"""

from __future__ import annotations

import difflib
import fnmatch
import json
import math
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

from cas.core.errors import UsageError

FIELD, METRICS, PARAMS, DEPS = "field", "metrics", "params", "deps"
GROUPS = (METRICS, PARAMS, DEPS)


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


# -- values ---------------------------------------------------------------------------

Row = Mapping[str, Any]


def value_kind(v: Any) -> int:
    """0 null/missing, 1 bool, 2 number, 3 string, 4 anything else (list, mapping).

    The kinds the filter language compares within (cas/experiments/filterexpr.py), sorting orders
    by, and `only_changed` tells apart: 1 is never 2, although True == 1 in Python.
    """
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

    `:max` and `:min` are aliases of `:desc` and `:asc` (the highest or the lowest
    first), so one syntax serves show, promote, remove and gc's retention.

    Raises:
        FilterError: an empty key.
    """
    key, descending, explicit = spec.strip(), False, False
    for suffix, desc in ((":asc", False), (":desc", True), (":min", False), (":max", True)):
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
        k = value_kind(v)
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
        elif value_kind(v) != value_kind(first) or v != first:
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
