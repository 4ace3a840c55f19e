"""Keeping the books: list, show, diff and rename experiments, and pick the top N.

Each function takes an opened Project and returns plain data; cli/books.py renders
it. remove lives in cas/experiments/removal.py; restore and promote, which write to the
workspace and to Git, in cas/experiments/restore.py and cas/experiments/promote.py.

Which experiment a NAME means (`find`): a name is unique only per baseline, so
`NAME` is looked up under the current baseline (HEAD) first, then under every
baseline; found under several others, it is ambiguous and must be written
`BASELINE/NAME` with a prefix of the baseline commit (at least 4 hex digits).

Listing reads through the summary index (cas/experiments/index.py), so only experiments new
since the last listing cost a record decode; 10,000 experiments list in well under a
second.
"""

from __future__ import annotations

import difflib
import gc
import os
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Collection, Iterator, Sequence

from cas.experiments import filterexpr
from cas.workspace import git
from cas.workspace import gitobjects
from cas.experiments import table as query
from cas.objects import record
from cas.store import refs
from cas.core.errors import NotFound, StoreError, TallyError, UsageError
from cas.experiments.index import UNKNOWN, Index, Listed
from cas.experiments.table import Column

UNREADABLE = "unreadable"  # the status shown for a ref whose record cannot be read
BASE_FIELDS = ("name", "created", "status")
HIDDEN_FIELDS = ("baseline", "record", "exit_code", "message", "deps")
MIN_BASELINE_PREFIX = 4  # hex digits, as `git rev-parse` wants at least


@dataclass(frozen=True, slots=True)
class Experiment:
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


# -- finding ----------------------------------------------------------------------------

def current_baseline(project: Any) -> str | None:
    """HEAD's commit: the baseline new experiments start from (None: no commit yet)."""
    from cas.workspace.fullsnapshot import baseline_commit

    try:
        return baseline_commit(project.root)  # reads .git directly: no process start
    except StoreError:
        return git.head_commit(project.root)  # None with no commit; raises if not a repo


def find(project: Any, spec: str) -> tuple[str, str, str]:
    """The (baseline, name, record id) that `spec` (`NAME` or `BASELINE/NAME`) means.

    Raises:
        NotFound: no such experiment (with the closest names as a hint).
        UsageError: a malformed spec, or a name found under several other baselines.
    """
    prefix, sep, name = spec.rpartition("/")
    if refs.name_problem(name):
        raise UsageError(f"invalid experiment name {name!r}: {refs.name_problem(name)}")
    baselines = refs.list_baselines(project)
    if sep:
        if len(prefix) < MIN_BASELINE_PREFIX or prefix.strip("0123456789abcdef"):
            raise UsageError(f"{prefix!r} is not a baseline commit prefix",
                             hint="write BASELINE/NAME with at least 4 hex digits of the commit")
        candidates = [b for b in baselines if b.startswith(prefix)]
    else:
        head = current_baseline(project)
        if head is not None and refs.read(project, head, name) is not None:
            return head, name, refs.read(project, head, name)  # type: ignore[return-value]
        candidates = baselines
    found = [(b, name, oid) for b in candidates if (oid := refs.read(project, b, name)) is not None]
    if len(found) == 1:
        return found[0]
    if found:
        where = ", ".join(b[:7] for b, _, _ in found)
        raise UsageError(f"experiment {name!r} exists under several baselines ({where})",
                         hint=f"write it as BASELINE/NAME, e.g. {found[0][0][:7]}/{name}")
    known = sorted({n for _, n, _ in refs.list_refs(project)}) if len(baselines) < 1000 else []
    close = difflib.get_close_matches(name, known, n=3, cutoff=0.6)
    hint = (f"did you mean {' or '.join(repr(c) for c in close)}?" if close
            else "`tally show --all` lists the experiments")
    raise NotFound(f"no experiment named {spec!r}", hint=hint)


def load(project: Any, spec: str) -> tuple[str, str, record.Record]:
    """(baseline, name, decoded record) of the experiment `spec` names.

    Raises:
        NotFound, UsageError: as find(). ObjectMissing / Corruption: the record is
            missing from the store or damaged.
    """
    b, name, oid = find(project, spec)
    return b, name, record.load(project.store, oid)


# -- listing ----------------------------------------------------------------------------

def list_experiments(project: Any, *, all_baselines: bool = False) -> list[Experiment]:
    """Experiments of the current baseline (or of every one), newest first.

    A ref whose record is missing or damaged is listed with status "unreadable" and
    a `problem`, so it can still be seen and removed.
    """
    return _list(project, all_baselines)[0]


def _list(project: Any, all_baselines: bool) -> tuple[list[Experiment], str | None]:
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
        out.sort(key=lambda e: (-e.created, e.name))
        return out, head


def _in_queue(project: Any, baselines: set[str] | None) -> list[Experiment]:
    """Queued and running experiments, not yet recorded: running ones with their live
    values (the latest summary each live directory wrote) as metric columns, both with
    their `-S` overrides as param columns, so filter and sort work on them too."""
    if not (project.store_dir / "queue").is_dir():
        return []  # no queue was ever used: listing stays one stat
    from cas.queue import entries
    from cas.queue import status as queue_status
    from cas.pipeline.params import flatten

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
            live = queue_status.live_values(project, it)
            for file, summary in (live.get("metrics") or {}).items():
                if isinstance(summary, dict):
                    for k, v in flatten(summary).items():
                        values[f"metrics:{file}:{k}"] = v
            if live.get("step") is not None:
                values["metrics:live:step"] = live["step"]
            if it.started:
                created = int(it.started * 1e9)
        out.append(Experiment(it.name, it.entry.baseline, "", created, status, None, values))
    return out


def _experiment(item: Listed, base_deps: dict[str, str | None]) -> Experiment:
    s = item.summary
    if s is None:
        return Experiment(item.name, item.baseline, item.oid, 0, UNREADABLE, problem=item.problem)
    # A dep is changed when its id differs from the baseline's (absent there counts);
    # one whose baseline id is unknown (a directory Git tracks) is not claimed either way.
    changed = tuple(p for p, o in s.deps.items()
                    if (b := base_deps.get(p, UNKNOWN)) != UNKNOWN and b != o)
    return Experiment(item.name, item.baseline, item.oid, s.created, s.status, s.exit_code,
                      s.values, changed, s.message, s.steps)


def columns_of(exps: Sequence[Experiment], *, with_baseline: bool) -> tuple[list[Column], list[Column]]:
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
    experiments: list[Experiment]
    rows: list[dict[str, Any]]  # query rows, parallel to experiments
    total: int  # experiments listed before filtering and -n
    baseline: str | None  # the current baseline (None with --all or no commit)


def show(project: Any, *, all_baselines: bool = False, filter: str | None = None,
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


def listing(project: Any, *, all_baselines: bool = False) -> tuple[list[Experiment], str | None]:
    """(experiments newest first, the current baseline or None): what show() lists,
    for a caller that keeps it between tables (cas/ui) and passes it to table()."""
    return _list(project, all_baselines)


def table(exps: Sequence[Experiment], head: str | None, *, all_baselines: bool = False,
          filter: str | None = None, sort_by: str | None = None, keep: Sequence[str] = (),
          drop: Sequence[str] = (), only_changed: bool = False, limit: int | None = None) -> Table:
    """show()'s table of experiments already listed (listing()); `exps` is not changed.

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


# -- diff -------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class DiffRow:
    group: str  # params | metrics
    key: str  # "file:key"
    a: Any  # query.MISSING when absent
    b: Any
    changed: bool
    delta: float | int | None  # a - b when both are numbers

    def to_json(self) -> dict[str, Any]:
        def v(x: Any) -> Any:
            return None if x is query.MISSING else x
        return {"group": self.group, "key": self.key, "a": v(self.a), "b": v(self.b),
                "changed": self.changed, "delta": self.delta}


@dataclass
class Diff:
    a: str  # labels: `BASE/NAME` or `commit abc1234`
    b: str
    rows: list[DiffRow]
    notes: list[str]  # files that could not be read on the B side, and why


def diff(project: Any, a: str, b: str | None = None) -> Diff:
    """Params and metrics of experiment `a` against `b`: another experiment, a Git
    revision, or (None) the baseline commit of `a`, whose files are read from Git.

    Raises:
        NotFound: `a` is unknown, or `b` is neither an experiment nor a commit.
    """
    ab, aname, arec = load(project, a)
    notes: list[str] = []
    if b is None:
        blabel, bparams, bmetrics = f"baseline {ab[:7]}", *_files_at(project, ab, arec, notes)
    else:
        try:
            bb, bname, brec = load(project, b)
            blabel, bparams, bmetrics = f"{bb[:7]}/{bname}", brec.flat_params(), brec.flat_metrics()
        except (NotFound, UsageError) as exc:
            try:  # not an experiment: a Git revision? (show_file raises NotFound if not)
                gitobjects.show_file(project.root, b, "tally.lock")
            except (NotFound, UsageError):
                raise NotFound(f"{b!r} is neither an experiment nor a Git commit",
                               hint=exc.hint) from None
            blabel, bparams, bmetrics = f"commit {b}", *_files_at(project, b, arec, notes)
    rows = _diff_rows("params", arec.flat_params(), bparams) + \
        _diff_rows("metrics", arec.flat_metrics(), bmetrics)
    return Diff(f"{ab[:7]}/{aname}", blabel, rows, notes)


def _diff_rows(group: str, a: dict[str, Any], b: dict[str, Any]) -> list[DiffRow]:
    out = []
    for k in sorted(set(a) | set(b)):
        va, vb = a.get(k, query.MISSING), b.get(k, query.MISSING)
        changed = query.value_kind(va) != query.value_kind(vb) or va != vb
        delta = None
        if all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in (va, vb)):
            delta = va - vb
        out.append(DiffRow(group, k, va, vb, changed, delta))
    return out


def _files_at(project: Any, commit: str, rec: record.Record,
              notes: list[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The flattened params and metrics of `rec`'s files as committed at `commit`."""
    from cas.pipeline import params as params_mod

    loaded: dict[str, dict[str, Any]] = {"params": {}, "metrics": {}}
    for group, files in (("params", rec.params), ("metrics", rec.metrics)):
        for path in files:
            data = gitobjects.show_file(project.root, commit, path)
            if data is None:
                notes.append(f"{path} does not exist at {commit[:12]}")
                continue
            suffix = os.path.splitext(path)[1]
            with tempfile.TemporaryDirectory(prefix="tally-diff-") as tmp:
                p = os.path.join(tmp, "file" + suffix)
                with open(p, "wb") as f:
                    f.write(data)
                try:
                    loaded[group][path] = params_mod.load_params(p)
                except TallyError as exc:
                    notes.append(f"{path} at {commit[:12]} cannot be read: {exc.message}")
    flat = record.Record(name="", baseline=commit, created=0, status="success",
                         params=loaded["params"], metrics=loaded["metrics"])
    return flat.flat_params(), flat.flat_metrics()


# -- rename -----------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Renamed:
    baseline: str
    old: str
    new: str
    oid: str


def rename(project: Any, old: str, new: str) -> Renamed:
    """Rename experiment `old` (a NAME or BASELINE/NAME) to `new`, under its baseline.

    Raises:
        NotFound: no experiment `old`. Conflict: `new` is taken under that baseline.
        UsageError: `new` is not a valid name.
    """
    refs.check_name(new)
    baseline, name, oid = find(project, old)
    if name == new:
        return Renamed(baseline, name, new, oid)
    oid = refs.rename(project, baseline, name, new, oid=oid)
    return Renamed(baseline, name, new, oid)


# -- top N ------------------------------------------------------------------------------

def check_best(n: int, sort_by: str | None, flag: str) -> None:
    """Raise UsageError unless `n` >= 0 and `sort_by` says which end is best (asc/desc)."""
    if n < 0:
        raise UsageError(f"{flag} must be 0 or more")
    if not sort_by:
        raise UsageError(f"{flag} needs --sort-by KEY:desc or KEY:asc")
    if not query.split_sort(sort_by)[2]:
        raise UsageError(f"--sort-by {sort_by} does not say which end is best",
                         hint=f"write {sort_by}:desc (highest first) or {sort_by}:asc (lowest first)")


def top(project: Any, n: int, sort_by: str, *, filter: str | None = None,
        all_baselines: bool = False) -> list[Experiment]:
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
