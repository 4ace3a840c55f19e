"""Compare experiments: params and metrics of one against another, or a commit.

The B side is another experiment, a Git revision, or (by default) the baseline commit
of A, whose params and metrics files are read from Git as they were committed.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from cas.core.errors import NotFound, TallyError, UsageError
from cas.experiments import table as query
from cas.experiments.lookup import load
from cas.objects import record
from cas.workspace import gitobjects

if TYPE_CHECKING:
    from cas.workspace.project import Project


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


def diff(project: Project, a: str, b: str | None = None) -> Diff:
    """Params and metrics of experiment `a` against `b`: another experiment, a Git
    revision, or (None) the baseline commit of `a`, whose files are read from Git.

    Raises:
        NotFound: `a` is unknown, or `b` is neither an experiment nor a commit.
    """
    ab, aname, arec = load(project, a)
    notes: list[str] = []
    if b is None:
        blabel, bparams, bmetrics = f"baseline {ab[:7]}", *files_at(project, ab, arec, notes)
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
            blabel, bparams, bmetrics = f"commit {b}", *files_at(project, b, arec, notes)
    rows = diff_rows("params", arec.flat_params(), bparams) + \
        diff_rows("metrics", arec.flat_metrics(), bmetrics)
    return Diff(f"{ab[:7]}/{aname}", blabel, rows, notes)


def diff_rows(group: str, a: dict[str, Any], b: dict[str, Any]) -> list[DiffRow]:
    """One row per key of `a` or `b` (flattened `file:key`), sorted, with its change."""
    out = []
    for k in sorted(set(a) | set(b)):
        va, vb = a.get(k, query.MISSING), b.get(k, query.MISSING)
        changed = query.value_kind(va) != query.value_kind(vb) or va != vb
        delta = None
        if all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in (va, vb)):
            delta = va - vb
        out.append(DiffRow(group, k, va, vb, changed, delta))
    return out


def files_at(project: Project, commit: str, rec: record.Record,
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


__all__ = ["diff", "Diff", "DiffRow", "diff_rows", "files_at"]
