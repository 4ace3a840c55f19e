"""Checkpoints of an experiment: find one, restore one, resume a run from the last one.

A checkpoint is a (step, tree) pair in the experiment record (field `checkpoints`,
steps strictly increasing). The tree holds exactly the paths `Live.checkpoint(paths)`
named, plus the live directory, at their places relative to the workspace root
(cas/live.py, spec/live.md). Restoring writes those files into the workspace and
touches nothing else; like every checkout, it refuses to overwrite changes that are
not in the store unless `force`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cas.workspace import checkout as co
from cas.objects import record
from cas.store import refs
from cas.objects import tree
from cas.experiments.request import RunRequest
from cas.core.errors import NotFound, UsageError

if TYPE_CHECKING:
    from cas.workspace.project import Project


def find_record(project: Project, name: str) -> tuple[str, str, record.Record]:
    """(baseline, record id, record) of experiment `name`: under HEAD's baseline if it
    has one there, else under the only baseline that has it.

    Raises:
        NotFound: no experiment of that name. UsageError: several baselines have it.
    """
    from cas.workspace import fullsnapshot as worktree

    try:
        head = worktree.baseline_commit(project.root)
    except Exception:  # noqa: BLE001 - no commit yet: search every baseline
        head = None
    if head is not None:
        oid = refs.read(project, head, name)
        if oid is not None:
            return head, oid, record.load(project.store, oid)
    hits = refs.find(project, name)
    if not hits:
        raise NotFound(f"no experiment named {name!r}", hint="see `tally show` for the names")
    if len(hits) > 1:
        raise UsageError(f"experiment {name!r} exists under {len(hits)} baselines",
                         hint="check out the baseline commit you mean first")
    b, _, oid = hits[0]
    return b, oid, record.load(project.store, oid)


def pick(rec: record.Record, step: int | None) -> tuple[int, str]:
    """The checkpoint at `step` (None: the last one) of `rec`.

    Raises:
        UsageError: the record has no checkpoints. NotFound: no checkpoint at `step`.
    """
    if not rec.checkpoints:
        raise UsageError(f"experiment {rec.name!r} has no checkpoints",
                         hint="call live.checkpoint(paths) in the stage to make some")
    if step is None:
        return rec.checkpoints[-1]
    for s, oid in rec.checkpoints:
        if s == step:
            return s, oid
    steps = ", ".join(str(s) for s, _ in rec.checkpoints[-10:])
    raise NotFound(f"experiment {rec.name!r} has no checkpoint at step {step}",
                   hint=f"steps with a checkpoint: ...{steps}" if len(rec.checkpoints) > 10
                   else f"steps with a checkpoint: {steps}")


def last(project: Project, name: str) -> tuple[str, record.Record, int, str]:
    """(record id, record, step, tree) of the last checkpoint of experiment `name`."""
    _, oid, rec = find_record(project, name)
    step, t = pick(rec, None)
    return oid, rec, step, t


def restore(project: Project, name: str, *, step: int | None = None, force: bool = False,
            dest: Path | None = None) -> dict[str, Any]:
    """Write the files of checkpoint `step` (default: the last) of `name` into the
    workspace (or `dest`), leaving every other file alone.

    Returns {"name", "record", "step", "tree", "written": [paths]}.
    Raises:
        WouldOverwrite: a file in the way holds changes not in the store (nothing is
            written then), unless `force`.
    """
    _, oid, rec = find_record(project, name)
    s, t = pick(rec, step)
    written = materialize(project, t, dest or project.root, force=force)
    return {"name": rec.name, "record": oid, "step": s, "tree": t, "written": written}


def materialize(project: Project, tree_oid: str, dest: Path, *, force: bool = False) -> list[str]:
    """Check out every file of `tree_oid` at its path under `dest`; nothing else changes."""
    from cas.core.errors import WouldOverwrite

    load = tree.CachedLoader(tree.reader(project.store.get))
    files = list(tree.walk(tree_oid, load))
    if not force:
        # Judge every file before writing any, so a refusal leaves the workspace as it
        # was: what is in the way must be the same file, or recoverable from the store.
        from cas.core import hashing
        lost = []
        for rel, e in files:
            p = Path(dest) / rel
            try:
                st = os.lstat(p)
            except FileNotFoundError:
                continue
            if p.is_dir() and not p.is_symlink():
                lost.append(rel)
                continue
            cur = project.statcache.lookup(st) if p.is_file() and not p.is_symlink() else None
            if cur is None and p.is_file() and not p.is_symlink():
                cur = hashing.hash_file(p)
            if cur is None or not (cur == e.oid or project.store.has(cur)):
                lost.append(rel)
        if lost:
            raise WouldOverwrite(sorted(lost), action="restoring the checkpoint")
    written = []
    for rel, e in files:
        p = Path(dest) / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        target = co.Target(oid=e.oid, is_dir=False, mode=e.mode or 0o644) if e.kind == tree.FILE \
            else None
        if target is None:
            continue  # symlinks in a checkpoint are not restored one by one
        rep = co.checkout(project.store, target, p, links=project.config.link_order,
                          statcache=project.statcache, force=force)
        if rep.written:
            written.append(rel)
    return written


def run_resumed(project: Project, request: RunRequest, *, force_restore: bool = False, **context: Any):
    """`tally run --resume NAME`: restore experiment `request.resume`'s last checkpoint
    into the workspace, then run `request`; the new record's parent is its record.

    The restored files stay for the stage that continues from them: an output holding
    one is not removed before its stage runs (as if `persist: true`), and that stage
    does not take its outputs from the run-cache (spec/live.md, "Resuming").
    `context` goes to cas.experiments.runs.run as it is (echo, wait, notify).

    Raises:
        UsageError: NAME has no checkpoint; or NAME ran a command-line stage
            (`-o ... -- CMD`) and `request` names none (the pipeline file would run
            instead of NAME's command).
    """
    oid, rec, step, t = last(project, request.resume)
    if request.quick_stage is None and was_quick(project, rec):
        cmd = rec.stages[0].cmd[0] if rec.stages and rec.stages[0].cmd else "CMD"
        raise UsageError(f"experiment {rec.name!r} ran a command-line stage ({cmd}), not the "
                         "pipeline: resuming it would run the pipeline file instead",
                         hint=f"give the stage again: tally run --resume {rec.name} -o OUT ... -- CMD")
    materialize(project, t, project.root, force=force_restore)
    return run_with_checkpoints(project, request._replace(parent=oid), resume_step=step,
                                resumed=paths(project, t), **context)


def paths(project: Project, tree_oid: str) -> list[str]:
    """Every file path of checkpoint tree `tree_oid`, relative to the workspace root."""
    load = tree.CachedLoader(tree.reader(project.store.get))
    return [rel for rel, _ in tree.walk(tree_oid, load)]


def was_quick(project: Project, rec: record.Record) -> bool:
    """Whether `rec` is a run of a command-line stage: its one stage is named `run`
    (cas/experiments/runs.py names a quick stage so) and the pipeline file has none."""
    if len(rec.stages) != 1 or rec.stages[0].name != "run":
        return False
    from cas.pipeline.pipelinefile import PIPELINE_FILES, load_pipeline

    if not any((project.root / f).is_file() for f in PIPELINE_FILES):
        return True
    try:
        return all(s.name != "run" for s in load_pipeline(project.root).stages)
    except Exception:  # noqa: BLE001 - a broken pipeline file: the run reports it
        return False


def run_with_checkpoints(project: Project, request: RunRequest, *, resume_step: int | None = None,
                         **context: Any):
    """cas.experiments.runs.run of `request`, continuing its parent from checkpoint
    step `resume_step` (the stage reads it from cas/live.py's environment)."""
    from cas.experiments import runs as experiments
    from cas.pipeline import livefiles as live

    env = {live.ENV_RESUME_STEP: str(resume_step)} if resume_step is not None else {}
    return experiments.run(project, request, env={**env, **context.pop("env", {})}, **context)


__all__ = ["find_record", "pick", "last", "restore", "materialize", "paths", "run_resumed", "was_quick",
           "run_with_checkpoints"]
