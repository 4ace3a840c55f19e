"""The experiment table: list, filter, sort and cut experiments, and pick the top N.

Each function takes an opened Project and returns plain data; the CLI and the UI
render it. Listing reads through the summary index (cas/experiments/index.py), so only
experiments new since the last listing cost a record decode; 10,000 experiments list
in well under a second. Queued and running experiments are listed too, from the
queue (cas/queue/entries.py), with their `-S` overrides as params and, while they
run, their live values as metrics; so is a foreground `tally run` in this work tree
while it runs (cas/experiments/workspacerun.py), as DVC shows its workspace row.
"""

from __future__ import annotations

import gc
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Collection, Iterator, Sequence

from cas.core.errors import UsageError
from cas.experiments import filterexpr
from cas.experiments import table as query
from cas.experiments.index import UNKNOWN, Index, Listed
from cas.experiments.lookup import current_baseline
from cas.experiments.table import Column
from cas.store import refs

if TYPE_CHECKING:
    from cas.workspace.project import Project


UNREADABLE = "unreadable"  # the status shown for a ref whose record cannot be read


BASE_FIELDS = ("name", "created", "status")


HIDDEN_FIELDS = ("baseline", "record", "exit_code", "message", "deps")


@dataclass(frozen=True, slots=True)
class ExperimentRow:
    """One experiment as listed."""

    name: str
    baseline: str
    oid: str  # the record id
    created: int  # unix ns (0 when unreadable)
    status: str
    exit_code: int | None = None
    # Metrics, params and dep ids under their query column ids: "metrics:<file>:<key>",
    # "params:<file>:<key>", "deps:<path>" (see cas/experiments/table.py).
    values: dict[str, Any] = field(default_factory=dict)
    changed_deps: tuple[str, ...] | None = None  # deps whose id differs from the baseline's
    message: str = ""
    steps: tuple[int, ...] = ()
    problem: str | None = None  # why the record could not be read

    @property
    def ref(self) -> str:
        return f"{self.baseline[:7]}/{self.name}"

    def group(self, name: str) -> dict[str, Any]:
        """`metrics`, `params` or `deps` values, keyed `file:key` (deps: by path)."""
        prefix = name + ":"
        n = len(prefix)
        return {k[n:]: v for k, v in self.values.items() if k.startswith(prefix)}

    @property
    def metrics(self) -> dict[str, Any]:
        return self.group("metrics")

    @property
    def params(self) -> dict[str, Any]:
        return self.group("params")

    def row(self) -> dict[str, Any]:
        """The query row: column id -> value."""
        r = {"name": self.name, "baseline": self.baseline, "record": self.oid,
             "created": iso_time(self.created), "status": self.status,
             "exit_code": self.exit_code, "message": self.message,
             "deps": ", ".join(self.changed_deps) if self.changed_deps else None}
        r.update(self.values)
        return r

    def to_json(self, keep: Collection[str] | None = None) -> dict[str, Any]:
        """A stable mapping for `--json`; `keep` (column ids) limits metrics and params."""
        metrics: dict[str, Any] = {}
        params: dict[str, Any] = {}
        for k, v in self.values.items():  # one pass: 10,000 rows go to --json
            if keep is not None and k not in keep:
                continue
            if k[0] == "m" and k.startswith("metrics:"):
                metrics[k[8:]] = v
            elif k[0] == "p" and k.startswith("params:"):
                params[k[7:]] = v
        return {"name": self.name, "baseline": self.baseline, "record": self.oid,
                "created": iso_time(self.created), "status": self.status,
                "exit_code": self.exit_code, "message": self.message,
                "metrics": metrics, "params": params,
                "changed_deps": None if self.changed_deps is None else list(self.changed_deps),
                "checkpoints": list(self.steps), "problem": self.problem}


_iso_cache: dict[int, str] = {}


def iso_time(ns: int) -> str:
    """`2024-05-01T12:00:00Z` (UTC, seconds), so text order is time order."""
    s = ns // 1_000_000_000
    t = _iso_cache.get(s)
    if t is None:
        t = _iso_cache[s] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(s))
    return t


@contextmanager
def paused_gc() -> Iterator[None]:
    # Building tens of thousands of small dicts triggers the cyclic GC over and over
    # (it scans every live object each time): it doubled listing time. Nothing here
    # makes cycles, so pausing it is safe; it resumes on the way out.
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def list_experiments(project: Project, *, all_baselines: bool = False) -> list[ExperimentRow]:
    """Experiments of the current baseline (or of every one), newest first.

    A ref whose record is missing or damaged is listed with status "unreadable" and
    a `problem`, so it can still be seen and removed.
    """
    return _list(project, all_baselines)[0]


def _list(project: Project, all_baselines: bool) -> tuple[list[ExperimentRow], str | None]:
    """(experiments newest first, the current baseline or None)."""
    head = current_baseline(project)
    with paused_gc():
        index = Index(project)
        try:
            if all_baselines:
                baselines = refs.list_baselines(project)
            else:
                baselines = [head] if head is not None else []
            listed = index.listed(index.list_refs(baselines))
            dep_paths: dict[str, set[str]] = {}
            for item in listed:
                if item.summary is not None and item.summary.deps:
                    dep_paths.setdefault(item.baseline, set()).update(item.summary.deps)
            base = {b: index.baseline_deps(b, paths) for b, paths in dep_paths.items()}
            out = [_experiment(item, base.get(item.baseline, {})) for item in listed]
            index.save()
        finally:
            index.discard()
        out.extend(_in_queue(project, None if all_baselines else set(baselines)))
        out.extend(_in_workspace(project, None if all_baselines else set(baselines)))
        out.sort(key=lambda e: (-e.created, e.name))
        return out, head


def _in_queue(project: Project, baselines: set[str] | None) -> list[ExperimentRow]:
    """Queued and running experiments, not yet recorded: running ones with their live
    values (the latest summary each live directory wrote) as metric columns, both with
    their `-S` overrides as param columns, so filter and sort work on them too."""
    if not (project.store_dir / "queue").is_dir():
        return []  # no queue was ever used: listing stays one stat
    from cas.queue import entries
    from cas.queue import status as queue_status

    out = []
    for it in entries.items(project, states=("pending", "running")):
        if it.error or (baselines is not None and it.entry.baseline not in baselines):
            continue
        values: dict[str, Any] = {}
        for f, op, k, v in it.entry.overrides:
            if op != "delete":
                values[f"params:{f}:{k}"] = v
        status = "queued"
        created = it.entry.queued
        if it.state == "running":
            status = "running"
            values.update(_live_columns(queue_status.live_values(project, it)))
            if it.started:
                created = int(it.started * 1e9)
        out.append(ExperimentRow(it.name, it.entry.baseline, "", created, status, None, values))
    return out


WORKSPACE_ROW = "workspace"  # the name of a running workspace run not named with -n (DVC's row)


def _in_workspace(project: Project, baselines: set[str] | None) -> list[ExperimentRow]:
    """A foreground `tally run` in this work tree, while it runs, as DVC shows its
    running workspace row: status "running", its live values as metric columns, named
    as `-n` named it, else `workspace` (cas/experiments/workspacerun.py)."""
    from cas.experiments import workspacerun

    out = []
    for run in workspacerun.live_runs(project.store_dir, project.root):
        baseline = str(run.get("baseline") or "")
        if baselines is not None and baseline not in baselines:
            continue
        out.append(ExperimentRow(str(run.get("name") or WORKSPACE_ROW), baseline, "",
                                 int(run.get("started") or 0), "running", None, _live_columns(run["live"])))
    return out


def _live_columns(live: dict[str, Any]) -> dict[str, Any]:
    """Metric columns of cas.pipeline.livefiles.read_live's values."""
    from cas.pipeline.params import flatten

    values: dict[str, Any] = {}
    for file, summary in (live.get("metrics") or {}).items():
        if isinstance(summary, dict):
            for k, v in flatten(summary).items():
                values[f"metrics:{file}:{k}"] = v
    if live.get("step") is not None:
        values["metrics:live:step"] = live["step"]
    return values


def _experiment(item: Listed, base_deps: dict[str, str | None]) -> ExperimentRow:
    s = item.summary
    if s is None:
        return ExperimentRow(item.name, item.baseline, item.oid, 0, UNREADABLE, problem=item.problem)
    # A dep is changed when its id differs from the baseline's (absent there counts);
    # one whose baseline id is unknown (a directory Git tracks) is not claimed either way.
    changed = tuple(p for p, o in s.deps.items()
                    if (b := base_deps.get(p, UNKNOWN)) != UNKNOWN and b != o)
    return ExperimentRow(item.name, item.baseline, item.oid, s.created, s.status, s.exit_code,
                      s.values, changed, s.message, s.steps)


def columns_of(exps: Sequence[ExperimentRow], *, with_baseline: bool) -> tuple[list[Column], list[Column]]:
    """(shown columns, extra columns a filter or sort may name) for these experiments.

    Shown: name, [baseline], created, status, every metric, every param, changed deps.
    """
    ids: set[str] = set()
    for e in exps:
        ids.update(e.values)
    cols = [query.column_of(i) for i in sorted(ids)]
    shown = [query.field("name")] + ([query.field("baseline")] if with_baseline else []) + \
        [query.field("created"), query.field("status")]
    shown += [c for c in cols if c.group == query.METRICS]
    shown += [c for c in cols if c.group == query.PARAMS]
    shown.append(query.field("deps"))
    extra = [query.field(f) for f in HIDDEN_FIELDS if not any(c.id == f for c in shown)]
    extra += [c for c in cols if c.group == query.DEPS]
    return shown, extra


@dataclass
class Table:
    """What `show` displays: the columns chosen and the rows, in order."""

    columns: list[Column]
    experiments: list[ExperimentRow]
    rows: list[dict[str, Any]]  # query rows, parallel to experiments
    total: int  # experiments listed before filtering and -n
    baseline: str | None  # the current baseline (None with --all or no commit)


def show(project: Project, *, all_baselines: bool = False, filter: str | None = None,
         sort_by: str | None = None, keep: Sequence[str] = (), drop: Sequence[str] = (),
         only_changed: bool = False, limit: int | None = None) -> Table:
    """The experiment table: listed, filtered, sorted, cut to `limit`, columns chosen.

    Raises:
        FilterError (UsageError): a bad filter or sort key, with its position.
    """
    if limit is not None and limit < 0:
        raise UsageError("-n must be 0 or more")
    exps, head = _list(project, all_baselines)
    return table(exps, head, all_baselines=all_baselines, filter=filter, sort_by=sort_by,
                 keep=keep, drop=drop, only_changed=only_changed, limit=limit)


def list_rows(project: Project, *, all_baselines: bool = False) -> tuple[list[ExperimentRow], str | None]:
    """(experiments newest first, the current baseline or None): what show() lists,
    for a caller that keeps it between tables (cas/ui) and passes it to table()."""
    return _list(project, all_baselines)


def table(exps: Sequence[ExperimentRow], head: str | None, *, all_baselines: bool = False,
          filter: str | None = None, sort_by: str | None = None, keep: Sequence[str] = (),
          drop: Sequence[str] = (), only_changed: bool = False, limit: int | None = None) -> Table:
    """show()'s table of experiments already listed (list_rows()); `exps` is not changed.

    Raises:
        FilterError (UsageError): a bad filter or sort key, with its position.
    """
    if limit is not None and limit < 0:
        raise UsageError("-n must be 0 or more")
    with paused_gc():
        shown, extra = columns_of(exps, with_baseline=all_baselines)
        known = shown + extra if exps else None
        pred = filterexpr.compile_filter(filter, known) if filter else None
        if sort_by and not exps:
            query.split_sort(sort_by)  # nothing to resolve against: check the syntax only
        sort = query.parse_sort(sort_by, known) if sort_by and known else None
        pairs = [(e, e.row()) for e in exps]
        if pred is not None:
            pairs = [(e, r) for e, r in pairs if pred(r)]
        if sort is not None:
            by_id = {id(r): e for e, r in pairs}
            rows = query.sort_rows([r for _, r in pairs], sort)
            pairs = [(by_id[id(r)], r) for r in rows]
        if limit is not None:
            pairs = pairs[:limit]
        rows = [r for _, r in pairs]
        columns = query.select_columns(shown, rows, keep=keep, drop=drop, only_changed=only_changed)
        return Table(columns, [e for e, _ in pairs], rows, len(exps), None if all_baselines else head)


def check_best(n: int, sort_by: str | None, flag: str) -> None:
    """Raise UsageError unless `n` >= 0 and `sort_by` says which end is best (asc/desc)."""
    if n < 0:
        raise UsageError(f"{flag} must be 0 or more")
    if not sort_by:
        raise UsageError(f"{flag} needs --sort-by KEY:desc or KEY:asc")
    if not query.split_sort(sort_by)[2]:
        raise UsageError(f"--sort-by {sort_by} does not say which end is best",
                         hint=f"write {sort_by}:desc (highest first) or {sort_by}:asc (lowest first)")


def top(project: Project, n: int, sort_by: str, *, filter: str | None = None,
        all_baselines: bool = False) -> list[ExperimentRow]:
    """The first `n` experiments by `sort_by` (which must say asc or desc), filtered."""
    check_best(n, sort_by, "--top")
    scope = list_experiments(project, all_baselines=all_baselines)
    if not scope:
        return []
    with paused_gc():
        shown, extra = columns_of(scope, with_baseline=all_baselines)
        pred = filterexpr.compile_filter(filter, shown + extra) if filter else None
        pairs = [(e, e.row()) for e in scope]
        if pred is not None:
            pairs = [(e, r) for e, r in pairs if pred(r)]
        sort = query.parse_sort(sort_by, shown + extra)
        # Experiments without a value for the key are never "top": there is nothing to rank.
        pairs = [(e, r) for e, r in pairs if r.get(sort.column.id) is not None]
        by_id = {id(r): e for e, r in pairs}
        return [by_id[id(r)] for r in query.sort_rows([r for _, r in pairs], sort)[:n]]


__all__ = ["ExperimentRow", "Table", "list_experiments", "list_rows", "table", "show", "top", "check_best", "columns_of",
           "iso_time", "paused_gc", "UNREADABLE", "BASE_FIELDS", "HIDDEN_FIELDS"]
