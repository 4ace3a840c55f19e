"""Promote experiments to Git branches (spec/promote.md).

One branch per experiment, `<prefix><name>` (default prefix `exp/`), holding one
commit whose parent is the experiment's baseline and whose tree is the baseline's
with the experiment's changed files applied: code, params, `tally.lock` and `*.tally`
pointers, added, changed or deleted. Data stays in the store: the files under a
pointer and whatever Git ignores in the experiment's workspace (pipeline outputs, a DVC
project's `dvc add`-ed data) are never committed (their pointers, `*.dvc` files and
`tally.lock` name them).

The commit is built with Git plumbing in a temporary index (cas/gitobjects.commit_tree) and
published with one compare-and-swap ref update that requires the branch not to
exist: the user's working tree, index and HEAD are never touched, and an experiment
is promoted whole or not at all. An existing branch is a Conflict for that
experiment only; the others go on, and the report says what happened to each.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Sequence

from cas.experiments import listing
from cas.experiments import lookup
from cas.workspace import git
from cas.workspace import gitobjects
from cas.core import hashing
from cas.objects import record
from cas.objects import tree
from cas.core.errors import Conflict, NotFound, TallyError, UsageError
from cas.workspace.treeplan import NEVER_TOUCHED, plan_tree

if TYPE_CHECKING:
    from cas.workspace.project import Project

DEFAULT_PREFIX = "exp/"
CREATED, EXISTS, FAILED, WOULD_CREATE = "created", "exists", "failed", "would-create"
_PREFIX_RE = re.compile(r"[A-Za-z0-9._/-]*")


@dataclass
class Promoted:
    """What happened to one experiment."""

    name: str
    baseline: str
    record: str
    branch: str
    status: str  # created | exists | failed | would-create
    commit: str | None = None
    changed: list[str] = field(default_factory=list)  # files added or modified
    deleted: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # symlinks: a commit_tree cannot write them
    error: str | None = None
    exit_code: int = 0

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "baseline": self.baseline, "record": self.record,
                "branch": self.branch, "status": self.status, "commit": self.commit,
                "changed": self.changed, "deleted": self.deleted, "skipped": self.skipped,
                "error": self.error}


@dataclass
class PromoteReport:
    results: list[Promoted]

    @property
    def exit_code(self) -> int:
        """0 when every experiment was promoted, else the first failure's code."""
        return next((r.exit_code for r in self.results if r.exit_code), 0)


def check_prefix(prefix: str) -> str:
    """Return `prefix` if `<prefix><name>` is always a valid branch name; else UsageError."""
    if not _PREFIX_RE.fullmatch(prefix) or prefix.startswith(("/", "-", ".")) or "//" in prefix \
            or ".." in prefix or "/." in prefix or ".lock/" in prefix:
        raise UsageError(f"invalid branch prefix {prefix!r}",
                         hint="use letters, digits, '.', '_', '-' and '/', e.g. exp/ or results-")
    return prefix


def select(project: Project, *, names: Sequence[str] = (), filter: str | None = None,
           top: int | None = None, sort_by: str | None = None,
           all_baselines: bool = False) -> list[tuple[str, str, str]]:
    """The (baseline, name, record id) of the experiments to promote.

    Names pick those experiments; otherwise `filter` picks the matching ones and
    `top N --sort-by KEY:desc|asc` the first N of them (experiments without a value
    for KEY are never among them).

    Raises:
        UsageError: nothing selected, names mixed with a filter or top, top without a
            directed sort key. NotFound: an unknown name (nothing is promoted then).
    """
    if names and (filter is not None or top is not None):
        raise UsageError("give experiment names, or --filter / --top, not both")
    if not names and filter is None and top is None:
        raise UsageError("nothing selected", hint="name experiments, or use --filter EXPR or "
                                                  "--top N --sort-by KEY:desc")
    if sort_by is not None and top is None:
        raise UsageError("--sort-by only makes sense with --top")
    if names:
        return list(dict.fromkeys(lookup.find(project, n) for n in names))
    if top is not None:
        exps = listing.top(project, top, sort_by or "", filter=filter, all_baselines=all_baselines)
    else:
        exps = [e for e in listing.show(project, all_baselines=all_baselines, filter=filter).experiments]
    return [(e.baseline, e.name, e.oid) for e in exps]


def promote(project: Project, *, branch_prefix: str = DEFAULT_PREFIX, dry_run: bool = False,
            **selectors: Any) -> PromoteReport:
    """Create one branch per selected experiment (see select() for the selectors).

    Raises (before anything is created):
        UsageError, NotFound: as select(); an invalid prefix.
    Failures of one experiment (branch exists, record missing, git refusing) are in
    its Promoted entry; the others are still promoted.
    """
    check_prefix(branch_prefix)
    chosen = select(project, **selectors)
    results = []
    for baseline, name, oid in chosen:
        results.append(_one(project, baseline, name, oid, branch_prefix + name, dry_run))
    return PromoteReport(results)


def _one(project: Project, baseline: str, name: str, oid: str, branch: str, dry_run: bool) -> Promoted:
    res = Promoted(name, baseline, oid, branch, FAILED)
    ref = f"refs/heads/{branch}"
    try:
        existing = gitobjects.resolve_ref(project.root, ref)
        if existing is not None:
            raise Conflict(f"branch {branch} already exists (at {existing[:12]})",
                           hint="delete or rename it, or promote with another --branch-prefix")
        rec = record.load(project.store, oid)
        changes, executable = _changes(project, rec, res)
        if dry_run:
            res.status = WOULD_CREATE
            return res
        commit = gitobjects.commit_tree(project.root, base=baseline, changes=changes,
                                 message=commit_message(name, rec, oid), executable=executable)
        gitobjects.update_ref(project.root, ref, commit, old=None, message=f"tally promote {name}")
        res.commit, res.status = commit, CREATED
    except Conflict as exc:
        res.status, res.error, res.exit_code = EXISTS, exc.message, exc.exit_code
    except TallyError as exc:
        res.status, res.error, res.exit_code = FAILED, exc.message, exc.exit_code
    return res


def _changes(project: Project, rec: record.Record, res: Promoted) -> tuple[dict[str, bytes | None], list[str]]:
    """The files to write (content) or delete (None) on top of the baseline, and which
    of the written ones are executable."""
    if rec.workspace is None:
        raise NotFound(f"experiment {rec.name!r} has no workspace snapshot (status {rec.status})",
                       hint="nothing to promote: it never ran far enough to record one")
    store = project.store
    load = tree.CachedLoader(tree.reader(store.get))

    # Outputs Git ignores are data; an output Git would see (a metrics file with
    # cache: false) is committed like any other file.
    ignored_outs = git.is_ignored(project.root, list(rec.outs)) if rec.outs else set()
    plan = plan_tree(rec.workspace, load, ignored_outs)
    data = set(plan.data_dirs) | set(plan.data_files)
    files = {p: e for p, e in plan.loose.items() if e.kind == tree.FILE}
    res.skipped = sorted(p for p, e in plan.loose.items() if e.kind == tree.SYMLINK)

    at_base: list[str] = []

    def match(p: str) -> bool:
        at_base.append(p)
        return p in files
    with gitobjects.TreeReader(project.root) as reader:
        base_content = reader.read_files(rec.baseline, match)
    # What Git would commit from the experiment's workspace: a file the baseline tracks,
    # or one its ignore rules (its own .gitignore files, info/exclude, excludesFile) let
    # in. A DVC project's `dvc add`-ed data is ignored, named by its .dvc file: the
    # workspace tree holds it (a dep), the commit must not (a checkout of the branch
    # and back would delete the user's copy).
    tracked = set(at_base)
    untracked = [p for p in files if p not in tracked]
    if untracked:
        rules = {p: store.get(e.oid) for p, e in files.items() if p.rsplit("/", 1)[-1] == ".gitignore"}
        for p in gitobjects.ignored_under(project.root, rules, untracked):
            del files[p]
    changes: dict[str, bytes | None] = {}
    executable = []
    for p, e in sorted(files.items()):
        old = base_content.get(p)
        if old is not None and hashing.hash_bytes(old) == e.oid:
            continue  # unchanged content (a mode-only change is not promoted)
        changes[p] = store.get(e.oid)
        res.changed.append(p)
        if e.mode == 0o755:
            executable.append(p)

    def under_data(p: str) -> bool:
        return p in data or any(p.startswith(d + "/") for d in plan.data_dirs)
    for p in sorted(at_base):
        # `.tally/config` and `.tally/.gitignore` are committed but never in a workspace
        # tree: absent from it does not mean deleted.
        if p not in files and p not in plan.loose and not under_data(p) and not p.startswith(NEVER_TOUCHED):
            changes[p] = None
            res.deleted.append(p)
    return changes, executable


def commit_message(name: str, rec: record.Record, oid: str) -> str:
    """The promote commit's message (spec/promote.md): a subject, the experiment's
    params and metrics as sorted `key: value` lines, then `Tally-*` Git trailers."""
    lines = [f"tally: experiment {name}"]
    for title, values in (("Params", rec.flat_params()), ("Metrics", rec.flat_metrics())):
        if values:
            lines += ["", f"{title}:"]
            lines += [f"  {k}: {_text(v)}" for k, v in sorted(values.items())]
    # Trailers last: Git reads trailers only from the final paragraph.
    lines += ["", f"Tally-Experiment: {name}", f"Tally-Record: {oid}",
              f"Tally-Baseline: {rec.baseline}", f"Tally-Status: {rec.status}"]
    return "\n".join(lines) + "\n"


def _text(v: Any) -> str:
    import json
    if isinstance(v, float):
        return repr(v)
    if isinstance(v, str):
        return v
    return json.dumps(v, sort_keys=True, separators=(",", ":"))


__all__ = ["promote", "select", "PromoteReport", "Promoted", "commit_message", "DEFAULT_PREFIX"]
