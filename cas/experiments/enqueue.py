"""Queueing runs: `tally run --queue [-S ...]` turned into queue entries.

`plan` expands the `-S` grid (cas/pipeline/params.py expand_grid), takes the queue-time snapshot
of the workspace into the store, and names each point; cas/queue/directory.py's `enqueue` then
adds the entries in one batch under the queue lock.
"""

from __future__ import annotations

import os
import socket
import time
from typing import TYPE_CHECKING, Any

from cas.core import hashing
from cas.core.errors import UsageError
from cas.queue.directory import names_in_queue
from cas.experiments.request import RunRequest
from cas.objects.queue_entry import QueueEntry

if TYPE_CHECKING:
    from cas.workspace.project import Project


def unique_names(project: Project, baseline: str, seeds: list[str], *, base: str | None = None) -> list[str]:
    """Names for len(seeds) new entries: `base`, `base-2`, ... or generated ones."""
    from cas.store import refs

    taken = names_in_queue(project)
    out: list[str] = []
    if base is not None:
        refs.check_name(base)
        if len(seeds) == 1:
            return [base]
        for i in range(len(seeds)):
            out.append(f"{base}-{i + 1}")
        return out
    for seed in seeds:
        for attempt in range(10_000):
            name = refs.candidate_name(seed, attempt)
            if name not in taken and name not in out and refs.read(project, baseline, name) is None:
                out.append(name)
                break
    return out


def plan(project: Project, request: RunRequest = RunRequest(), *, dry_run: bool = False,
         start: tuple[str, str] | None = None) -> list[QueueEntry]:
    """The entries `tally run --queue` adds: one per point of `request`'s `-S` grid.

    Takes the queue-time snapshot of the workspace (every file Git sees, tally-tracked
    data, and the pipeline's deps and outputs present), stored, so later edits do not
    leak into the runs. With `dry_run`, nothing is stored (the ids are computed only)
    and nothing is queued: callers list the grid. `request.resume` names an experiment
    whose last checkpoint every entry starts from (its record becomes their parent).
    `start` (baseline commit, workspace tree id) starts the entries from a stored
    workspace instead, an experiment's (`tally ui`'s "queue a variation"): no
    snapshot is taken.
    A quick stage and the stage selection flags (single, downstream, keep_going)
    cannot be queued (UsageError).

    Raises:
        ParamError: a malformed `-S` or an over-large grid. StoreError: no commit yet.
        NotFound: `resume` names no experiment. UsageError: it has no checkpoint.
    """
    from cas.pipeline import params as params_mod
    from cas.workspace import fullsnapshot as worktree

    if request.quick_stage is not None:
        raise UsageError("quick stages (-o/-d/-M -- CMD) cannot be queued",
                         hint="put the stage in tally.yaml, then queue it")
    if request.single or request.downstream or request.keep_going:
        raise UsageError("-s, --downstream and -k cannot be queued")
    name, stages, message, resume = request.name, request.stages, request.message, request.resume
    force, no_run_cache = request.force, request.no_run_cache
    specs = list(request.set_params)
    grid = params_mod.expand_grid(specs)
    if start is None and specs:
        _check_against_workspace(project, specs)
    baseline = worktree.baseline_commit(project.root) if start is None else start[0]
    parent = checkpoint = None
    resume_step = None
    if resume is not None:
        from cas.experiments import checkpoints
        parent, resumed, resume_step, checkpoint = checkpoints.last(project, resume)
        if checkpoints.was_quick(project, resumed):
            raise UsageError(f"experiment {resume!r} ran a command-line stage (-o ... -- CMD): "
                             "a queued resume would run the pipeline file instead",
                             hint=f"resume it in the workspace: tally run --resume {resume} -o OUT ... -- CMD")
    if start is not None:
        ws = start[1]
    elif dry_run:
        ws = "0" * 64
    else:
        ws = snapshot_workspace(project)
    seeds = [hashing.hash_bytes(f"{ws}:{time.time_ns()}:{i}:{os.urandom(8).hex()}".encode())
             for i in range(len(grid))]
    names = unique_names(project, baseline, seeds, base=name)
    now = time.time_ns()
    opts: dict[str, Any] = {}
    if force:
        opts["force"] = True
    if no_run_cache:
        opts["no_run_cache"] = True
    if resume_step is not None:
        opts["resume_step"] = resume_step
    user = _user()
    return [QueueEntry(name=n, baseline=baseline, workspace=ws,
                  overrides=tuple((o.file, o.op, o.key, o.value) for o in point),
                  targets=tuple(stages), options=opts, queued=now + i, host=socket.gethostname(),
                  user=user, parent=parent, checkpoint=checkpoint, message=message)
            for i, (n, point) in enumerate(zip(names, grid))]


def _check_against_workspace(project: Project, specs: list[str]) -> None:
    """Fail as the run would on the workspace's params files (a missing file or key,
    `+key` of one that exists, a value the format cannot hold), before anything is
    queued, dry run included. Every value of each spec is tried, with the first value
    of the others: the sum of the axes, not their product."""
    from cas.pipeline import params as params_mod

    axes = [params_mod.parse_override(s) for s in specs]
    first = [axis[0] for axis in axes]
    params_mod.check_overrides(project.root, first)
    for i, axis in enumerate(axes):
        for ov in axis[1:]:
            params_mod.check_overrides(project.root, [*first[:i], ov, *first[i + 1:]])


def snapshot_workspace(project: Project) -> str:
    """Store the workspace as a queued run will see it; return the tree id."""
    from cas.workspace import snapshot as workspace
    from cas.workspace import fullsnapshot as worktree

    known: dict[str, Any] = {}
    with project.lock("store", shared=True, timeout=60, purpose="tally run --queue"), \
            project.store.writer() as w:
        try:
            from cas.pipeline.pipelinefile import PIPELINE_FILES, load_pipeline
            pipeline = load_pipeline(project.root) if any(
                (project.root / f).is_file() for f in PIPELINE_FILES) else None
        except Exception:  # noqa: BLE001 - a broken pipeline is reported by the run
            pipeline = None
        if pipeline is not None:
            paths = {p for st in pipeline.stages for p in (*st.deps, *(o.path for o in st.outs))}
            for p in sorted(paths):
                if not os.path.lexists(project.root / p):
                    continue
                snap = workspace.snapshot(project.root / p, statcache=project.statcache, writer=w)
                known[p] = worktree.Known(snap.oid, snap.is_dir, snap.size, snap.files, snap.mode)
        known = {p: k for p, k in known.items()
                 if not any(p.startswith(q + "/") for q in known if known[q].is_dir)}
        return worktree.snapshot(project, writer=w, extra=known).oid


def _user() -> str:
    import getpass
    try:
        return getpass.getuser()
    except Exception:  # noqa: BLE001 - no passwd entry in a container
        return ""


__all__ = ["plan", "snapshot_workspace", "unique_names"]
