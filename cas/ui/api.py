"""What `tally ui`'s page asks for, answered through the functions the CLI calls.

Each function takes the opened project (and the listing cache) and returns plain data
for JSON; cas/ui/app.py maps URLs onto them. Nothing here re-implements a rule of
the library: the table is listing.table over listing.list_rows (what `tally show` prints),
the diff is compare.diff, plots are cas.plots.collect (what `tally plots diff` draws),
live values come from cas.queue.status (what `tally queue status` shows), and the
actions are restore.restore, promote.promote, removal.remove and enqueue.plan +
queue.enqueue, exactly as the CLI commands call them.

Experiments are named in requests as `tally show` names them (`BASELINE/NAME`, with
the baseline's full commit): lookup.find validates the name before anything is read,
so no request can name a path.

Every row says where the experiment is (`origin`): "local" for now. Remote
experiments (listed without their data, issue "remotes") will join the same listing
as rows whose origin names the remote; the page already shows any other origin next
to the name, and actions on such a row go through the same functions, which fetch
on demand.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Sequence

from cas.core.errors import NotFound, UsageError
from cas.experiments import compare
from cas.experiments import listing
from cas.experiments import lookup
from cas.experiments import table as query
from cas.objects import record
from cas.ui.listing import ListingCache

if TYPE_CHECKING:
    from cas.workspace.project import Project

PAGE_SIZE = 100  # rows per page of the table (the page asks for more as it scrolls)
MAX_PAGE = 1000
MAX_COMPARE = 12  # experiments compared (diff and plots) at once
LOG_TAIL = 64 * 1024  # bytes of an experiment's log shown in its details


def jsonable(v: Any) -> Any:
    """`v` with non-finite floats as text (JSON has no NaN or infinity)."""
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    if isinstance(v, dict):
        return {k: jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [jsonable(x) for x in v]
    return v


def _column(c: query.Column) -> dict[str, Any]:
    # Columns are grouped on the page by file (DVC's table headers): "metrics.json"
    # over acc and loss; fields and deps have a group of their own.
    group = c.file if c.file else ("changed deps" if c.id == "deps" else c.group)
    return {"id": c.id, "name": c.name, "key": c.key or c.name, "group": c.group, "file": group}


def spec_of(e: listing.ExperimentRow) -> str:
    """How a request names experiment `e`: `BASELINE/NAME` (full commit)."""
    return f"{e.baseline}/{e.name}"


def table(cache: ListingCache, *, filter: str | None = None, sort: str | None = None,
          offset: int = 0, limit: int = PAGE_SIZE) -> dict[str, Any]:
    """One page of the experiment table of every baseline.

    Raises:
        FilterError (UsageError): a bad filter or sort key (its message points at it).
    """
    if offset < 0 or not 0 < limit <= MAX_PAGE:
        raise UsageError(f"offset must be >= 0 and limit between 1 and {MAX_PAGE}")
    listed = cache.get()
    tab = listing.table(listed.experiments, listed.head, all_baselines=True,
                      filter=filter or None, sort_by=sort or None)
    page = tab.experiments[offset:offset + limit]
    rows = []
    ids = [c.id for c in tab.columns]
    for e, r in zip(page, tab.rows[offset:offset + limit]):
        rows.append({"spec": spec_of(e), "name": e.name, "baseline": e.baseline, "record": e.oid,
                     "origin": "local",
                     "status": e.status, "steps": len(e.steps), "problem": e.problem,
                     "cells": jsonable({i: r.get(i) for i in ids if r.get(i) is not None})})
    return {"columns": [_column(c) for c in tab.columns], "rows": rows, "offset": offset,
            "matched": len(tab.experiments), "total": tab.total, "head": listed.head,
            "generation": cache.stamp_text()}


def experiment(project: Project, spec: str) -> dict[str, Any]:
    """An experiment's record: command, status, timings, outputs with sizes, log tail.

    Raises:
        NotFound, UsageError: no such experiment (lookup.find). ObjectMissing /
            Corruption: its record cannot be read.
    """
    from cas.plots.sources import tree_source

    baseline, name, oid = lookup.find(project, spec)
    rec = record.load(project.store, oid)
    src = tree_source(project.store, rec.workspace)
    outs = []
    for path, (out_oid, is_dir) in sorted(rec.outs.items()):
        size = src.entry_size(path) if src is not None else None
        outs.append({"path": path, "oid": out_oid, "is_dir": is_dir, "size": size})
    body = rec.to_json()
    body["baseline"] = baseline
    body.update({"spec": f"{baseline}/{name}", "record": oid, "outs": outs,
                 "duration": None if rec.duration_ns is None else rec.duration_ns / 1e9,
                 "log": _log_tail(project, rec.logs)})
    return jsonable(body)


def _log_tail(project: Project, oid: str | None) -> dict[str, Any] | None:
    if oid is None:
        return None
    try:
        data = project.store.get(oid)
    except NotFound:
        return {"text": "", "truncated": False, "missing": True}
    tail = data[-LOG_TAIL:]
    return {"text": tail.decode("utf-8", "replace"), "truncated": len(data) > LOG_TAIL,
            "bytes": len(data)}


def diff(project: Project, specs: Sequence[str]) -> dict[str, Any]:
    """Params, metrics and deps of 2..N experiments side by side.

    Each experiment after the first is diffed against the first with compare.diff, as
    `tally diff FIRST OTHER` would; a row is changed when any pair differs. Deps are
    the records' dep ids (a path whose id differs between any two).

    Raises:
        UsageError: fewer than 2 or more than MAX_COMPARE experiments.
        NotFound: one of them does not exist.
    """
    specs = list(dict.fromkeys(specs))
    if not 2 <= len(specs) <= MAX_COMPARE:
        raise UsageError(f"compare 2 to {MAX_COMPARE} experiments")
    first = specs[0]
    labels: list[str] = []
    rows: dict[tuple[str, str], dict[str, Any]] = {}
    for i, other in enumerate(specs[1:], start=1):
        d = compare.diff(project, first, other)
        if not labels:
            labels.append(d.a)
        labels.append(d.b)
        for r in d.rows:
            row = rows.setdefault((r.group, r.key), {"group": r.group, "key": r.key,
                                                      "values": [None] * len(specs), "changed": False})
            j = r.to_json()
            row["values"][0] = j["a"]
            row["values"][i] = j["b"]
            row["changed"] = row["changed"] or r.changed
    recs = [record.load(project.store, lookup.find(project, s)[2]) for s in specs]
    dep_paths = sorted({p for rec in recs for p in rec.deps})
    deps = []
    for p in dep_paths:
        ids = [rec.deps.get(p) for rec in recs]
        deps.append({"path": p, "values": [x[:12] if x else None for x in ids],
                     "changed": len(set(ids)) > 1})
    ordered = sorted(rows.values(), key=lambda r: (r["group"] != "params", r["key"]))
    return jsonable({"labels": labels, "specs": specs, "rows": ordered, "deps": deps})


def plots(project: Project, specs: Sequence[str]) -> dict[str, Any]:
    """The plots of these experiments overlaid: `tally plots diff`'s --json document.

    Running experiments are read from their run directories, so their curves grow.
    """
    from cas.plots import collect

    if not 1 <= len(specs) <= MAX_COMPARE:
        raise UsageError(f"plot 1 to {MAX_COMPARE} experiments")
    return jsonable(collect.collect(project, list(dict.fromkeys(specs))).to_json())


def live(project: Project, cache: ListingCache) -> dict[str, Any]:
    """Queued and running experiments with their current step and metrics, and the
    generation stamp (the page reloads its table when the stamp moves)."""
    from cas.pipeline.params import flatten

    rows = []
    if (project.store_dir / "queue").is_dir():
        from cas.queue import directory as queue
        from cas.queue import status as queue_status

        for r in queue_status.running_live(project):
            values = {}
            for file, summary in (r["live"].get("metrics") or {}).items():
                if isinstance(summary, dict):
                    for k, v in flatten(summary).items():
                        values[f"metrics:{file}:{k}"] = v
            rows.append({"spec": f"{r['baseline']}/{r['name']}", "name": r["name"], "status": "running",
                         "step": r["live"].get("step"), "updated": r["live"].get("updated"),
                         "values": values})
        for it in queue.items(project, states=("pending",)):
            rows.append({"spec": f"{it.entry.baseline}/{it.name}", "name": it.name, "status": "queued",
                         "step": None, "updated": None, "values": {}})
    return jsonable({"experiments": rows, "generation": cache.stamp_text()})


# -- actions -----------------------------------------------------------------------------

def restore(project: Project, spec: str, *, force: bool = False) -> dict[str, Any]:
    from cas.experiments import restore as restore_mod
    return restore_mod.restore(project, spec, force=force).to_json()


def promote(project: Project, spec: str, *, branch_prefix: str | None = None) -> dict[str, Any]:
    from cas.experiments import promote as promote_mod
    kw = {} if not branch_prefix else {"branch_prefix": branch_prefix}
    report = promote_mod.promote(project, names=[spec], **kw)
    return {"results": [r.to_json() for r in report.results], "exit_code": report.exit_code}


def remove(project: Project, specs: Sequence[str]) -> dict[str, Any]:
    from cas.experiments import removal
    if not specs:
        raise UsageError("name the experiments to remove")
    res = removal.remove(project, names=list(specs))
    return {"removed": [spec_of(e) for e in res.removed],
            "failed": [{"spec": spec_of(e), "error": str(exc)} for e, exc in res.failed]}


def queue_variation(project: Project, spec: str, *, set_params: Sequence[str],
                    name: str | None = None) -> dict[str, Any]:
    """Queue experiment `spec` again with `-S` edits: the entries start from its
    stored workspace and baseline (enqueue.plan's `start`), one per grid point."""
    from cas.experiments import enqueue
    from cas.experiments.request import RunRequest
    from cas.queue import directory as queue

    if not set_params:
        raise UsageError("a variation needs at least one -S edit, e.g. lr=0.01")
    baseline, _, oid = lookup.find(project, spec)
    rec = record.load(project.store, oid)
    if rec.workspace is None:
        raise NotFound(f"experiment {spec!r} has no workspace snapshot to start from")
    entries = enqueue.plan(project, RunRequest(set_params=tuple(set_params), name=name or None),
                           start=(baseline, rec.workspace))
    queue.enqueue(project, entries)
    return {"queued": [{"name": e.name, "set": e.override_specs()} for e in entries]}


__all__ = ["table", "experiment", "diff", "plots", "live", "restore", "promote", "remove",
           "queue_variation", "jsonable", "PAGE_SIZE"]
