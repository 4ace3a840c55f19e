"""`tally show`: the experiment table.

Fast path: the most frequent read command (10,000 experiments list in well under a
second, and Typer with pydantic would add ~0.1-0.2 s), so cli/entry.py parses it with
cli/parse.py.
"""

from __future__ import annotations

import sys
from typing import Any

from ..flags import ALL, ALL_COMMITS, FILTER, JSON, PRECISION, SORT_BY
from ..output import err, table
from ..spec import FLAG, MANY, ONE, Command, Opt, count
from .push import REMOTE

DEFAULT_PRECISION = 5  # significant digits of floats in tables, as DVC shows them


def body(a) -> None:
    from cas.core.errors import UsageError
    from cas.experiments import listing
    from cas.workspace.project import open_project

    if sum((a.json, a.csv, a.md)) > 1:
        raise UsageError("tally show: choose one of --json, --csv, --md")
    every = a.all_commits or a.all
    if a.remote is not None:  # the remote's experiments, read without any data
        from cas.sync import exps
        tab = exps.show(open_project(), remote=a.remote, all_baselines=every, filter=a.filter,
                        sort_by=a.sort_by, keep=a.keep, drop=a.drop,
                        only_changed=a.only_changed, limit=a.num)
    else:
        tab = listing.show(open_project(), all_baselines=every, filter=a.filter,
                           sort_by=a.sort_by, keep=a.keep, drop=a.drop,
                           only_changed=a.only_changed, limit=a.num)
    for e in tab.experiments:
        if e.problem is not None:  # listed (status unreadable) so it can be seen and removed
            err(f"warning: experiment {e.ref} is unreadable: {e.problem}")
    if a.json:
        keep = {c.id for c in tab.columns}
        _json_lines([e.to_json(keep) for e in tab.experiments])
        return
    if a.csv:
        _csv(tab, a.precision)
        return
    if not tab.experiments:
        if tab.total == 0:
            where = f"baseline {tab.baseline[:7]}" if tab.baseline else "any baseline"
            err(f"No experiments for {where}. Run one with `tally run`"
                + ("" if every else "; `tally show -A` lists every baseline") + ".")
        else:
            err(f"No experiment matches ({tab.total} listed).")
        if not a.md:
            return
    headers, rows = _cells(tab, DEFAULT_PRECISION if a.precision is None else a.precision,
                           human=not a.md)
    if a.md:
        esc = [[c.replace("|", "\\|") for c in r] for r in [headers] + rows]
        lines = ["| " + " | ".join(esc[0]) + " |", "|" + "|".join("---" for _ in headers) + "|"]
        lines += ["| " + " | ".join(r) + " |" for r in esc[1:]]
        sys.stdout.write("\n".join(lines) + "\n")
        return
    sys.stdout.write(table(headers, rows) + "\n")


def _cells(tab: Any, precision: int | None, *, human: bool) -> tuple[list[str], list[list[str]]]:
    from cas.experiments.table import FIELD, format_value

    headers = [c.name if c.group != FIELD or c.key != "deps" else "changed deps" for c in tab.columns]
    ids = [c.id for c in tab.columns]
    columns = []  # one list of cells per column: formatting a column at a time is cheaper
    for cid in ids:
        if cid == "created" and human:
            columns.append([_local_time(e.created) for e in tab.experiments])
            continue
        values = [r.get(cid) for r in tab.rows]
        if cid in ("baseline", "record") and human:
            columns.append([v[:7] if v else "-" for v in values])
        elif precision is not None and all(type(v) is float for v in values):
            # A metric column is all floats: one format call each, no dispatch (10,000
            # rows x 10 columns: ~60 ms saved). NaN and inf format as nan/inf here too.
            f = f"{{:.{precision}g}}".format
            columns.append([f(v) for v in values])
        else:
            columns.append([format_value(v, precision) for v in values])
    return headers, [list(r) for r in zip(*columns)] if columns else []


_minute_cache: dict[int, str] = {}


def _local_time(ns: int) -> str:
    """Unix ns -> `2024-05-01 14:00` in the local time zone ("-" for 0: unknown)."""
    if not ns:
        return "-"
    minute = ns // 60_000_000_000
    got = _minute_cache.get(minute)
    if got is None:
        import time
        got = _minute_cache[minute] = time.strftime("%Y-%m-%d %H:%M", time.localtime(minute * 60))
    return got


def _csv(tab: Any, precision: int | None) -> None:
    import csv

    from cas.experiments.table import format_value

    w = csv.writer(sys.stdout, lineterminator="\n")
    w.writerow([c.name for c in tab.columns])
    for r in tab.rows:
        w.writerow(["" if (v := r.get(c.id)) is None else format_value(v, precision) for c in tab.columns])


def _json_lines(items: list[Any]) -> None:
    # One object per line: json's C encoder only runs without indent, and 10,000
    # indented rows would cost more than the whole listing.
    import json

    if not items:
        sys.stdout.write("[]\n")
        return
    sys.stdout.write("[\n" + ",\n".join(json.dumps(i, default=str) for i in items) + "\n]\n")


COMMAND = Command(
    "show",
    "List experiments: name, created, status, metrics, params and changed deps.\n\n"
    "Newest first unless --sort-by (missing values sort last either way). Columns are "
    "named FILE:KEY (metrics.json:acc, params.yaml:train.lr); a filter, a sort key or a "
    "--keep/--drop glob may also say metrics.acc, acc, params.train.lr or lr, as long as "
    "that names one column. --keep beats --drop, which beats --only-changed.",
    body,
    opts=(
        ALL_COMMITS,
        ALL._replace(help="Every experiment: the same as -A here (kept for scripts)."),
        FILTER,
        SORT_BY,
        Opt(("--num",), "num", ONE, "At most N rows.", metavar="N", type=count),
        Opt(("--only-changed",), "only_changed", FLAG, "Hide metric/param columns equal in every row shown."),
        Opt(("--keep",), "keep", MANY, "Keep matching columns even if dropped (repeatable).", metavar="GLOB"),
        Opt(("--drop",), "drop", MANY, "Hide matching columns, e.g. 'params.yaml:*' (repeatable).",
            metavar="GLOB"),
        PRECISION._replace(help="Significant digits of floats, 1-30 (table default 5; csv and "
                                "json: full unless given)."),
        JSON._replace(help="Machine-readable output on stdout: a JSON list, one object per experiment."),
        Opt(("--csv",), "csv", FLAG, "CSV on stdout."),
        Opt(("--md",), "md", FLAG, "A Markdown table on stdout."),
        REMOTE._replace(help="The experiments of the remote NAME (read without any data; "
                             "`tally pull --exp` brings them)."),
    ),
    exits=((2, "bad usage: a malformed --filter or --sort-by, an unknown or ambiguous key, "
               "two of --json/--csv/--md"),),
    fast=True)
