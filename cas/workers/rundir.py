"""An isolated run directory: a queued experiment's workspace, materialized from the store.

    .tally/tmp/run-<id16>/         the workspace tree of the entry, checked out by link
      .git                         a file: "gitdir: <abs>/.tally/tmp/run-<id16>.git"
    .tally/tmp/run-<id16>.git/     a private Git dir: HEAD = the entry's baseline commit
                                   (detached), commondir = the project's Git dir, and
                                   an index read from the baseline
    .tally/tmp/run-<id16>.checkpoints   checkpoints appended by cas.live during the run

Why a private Git dir: the experiment code (cas.experiments.runs.run) reads the baseline
from `.git` and lists "every file Git would see" with `git ls-files`. Pointing the run
directory at a Git dir of its own, which shares the project's objects and refs through
`commondir`, makes both answer for the run directory and the queued baseline, without
touching the user's index, HEAD or work tree, and with no `git worktree add` (which
would write into `.git/worktrees/` and check out files we already linked).

The checkout records what it wrote in the shared stat cache, so nothing in the run
directory is hashed again when the run snapshots its deps and workspace.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from cas.workspace import checkout as co
from cas.core import fsops
from cas.queue import rundirs
from cas.workspace import git
from cas.workspace import treeplan
from cas.objects import tree
from cas.workspace.project import Project

# In hardlink/symlink link modes, files smaller than this that are not tally data are
# copied into a run directory instead of linked (code and configs are small).
LOOSE_MAX = 1024 * 1024  # bytes


class RunProject(Project):
    """A Project whose workspace is a run directory but whose store is the project's.

    `store_dir` is the real `.tally/`, so objects, refs, locks and the stat cache are
    shared; the `workspace` lock is per run directory, so queued runs go in parallel.
    """

    def __init__(self, root: Path, config, *, real_store_dir: Path, run_id: str) -> None:
        super().__init__(root, config)
        self.real_store_dir = real_store_dir
        self.run_id = run_id

    @property
    def store_dir(self) -> Path:  # type: ignore[override]
        assert self.real_store_dir is not None
        return self.real_store_dir

    def lock(self, name: str, *, shared: bool = False, timeout: float = 0.0, purpose: str = ""):
        if name == "workspace":
            name = f"workspace-run-{self.run_id}"
        return super().lock(name, shared=shared, timeout=timeout, purpose=purpose)


def git_common_dir(root: Path) -> Path:
    """The project's Git common dir (objects and refs), absolute."""
    out = git.output(Path(root), ["rev-parse", "--path-format=absolute", "--git-common-dir"])
    return Path(git.decode_line(out))


def prepare(project: Project, *, run_id: str, workspace: str, baseline: str,
            common_dir: Path, overlay: str | None = None) -> RunProject:
    """Materialize tree `workspace` (plus checkpoint tree `overlay`, winning where both
    have a file) into a fresh run directory and give it a private Git dir.

    Any earlier run directory of the same id (a failed attempt) is removed first.
    Raises:
        ObjectMissing / CorruptObject: the snapshot is not (fully) in the store.
    """
    d = project.store_dir / "tmp" / f"run-{run_id}"
    gitdir = d.with_name(d.name + ".git")
    rundirs.forget(project, d)
    for p in (d, gitdir):
        fsops.remove_tree(p)
    d.mkdir(parents=True)
    target = workspace
    # The merged tree is named by nothing but this writer's in-flight file until the
    # checkout has read it (spec/gc.md, "In-flight roots"): merged in a burst under
    # the store lock, then checked out without it, as a run's stage runs.
    with project.store.writer(inflight=True) as w:
        if overlay is not None:
            with project.lock("store", shared=True, timeout=60, purpose="tally queue: run directory"):
                w.keep(workspace)
                w.keep(overlay)
                target = treeplan.overlay(project.store, workspace, overlay, w)
                w.flush()
        links = project.config.link_order
        # A workspace may hold any symlink Git would commit; one pointing outside the
        # run directory is never written (cas/core/paths.py).
        co.checkout(project.store, co.Target(oid=target, is_dir=True), d,
                    links=links, statcache=project.statcache, force=True, unsafe_links="skip")
        if any(m in ("hardlink", "symlink") for m in links):
            _unprotect_loose(project, target, d)
    gitdir.mkdir()
    (gitdir / "HEAD").write_text(baseline + "\n")
    (gitdir / "commondir").write_text(os.fspath(common_dir) + "\n")
    (d / ".git").write_text(f"gitdir: {gitdir}\n")
    _baseline_index(project, d, gitdir, baseline)
    return RunProject(root=d, config=project.config, real_store_dir=project.store_dir,
                      run_id=run_id)


def _baseline_index(project: Project, d: Path, gitdir: Path, baseline: str) -> None:
    """Give the run's Git dir the index of `baseline`, so files Git tracks stay "seen"
    even where an ignore rule matches them, as in the user's workspace.

    `git read-tree` makes it once per baseline (a commit never changes, so neither
    does its index); later runs copy the cached file instead of starting a git process.
    """
    cache = project.store_dir / "queue" / "index" / baseline
    try:
        shutil.copyfile(cache, gitdir / "index")
        return
    except FileNotFoundError:
        pass
    git.output(d, ["read-tree", baseline])
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_name(f".{baseline}.tmp-{os.getpid()}-{os.urandom(4).hex()}")
    shutil.copyfile(gitdir / "index", tmp)
    os.replace(tmp, cache)


def _unprotect_loose(project: Project, root_oid: str, d: Path) -> None:
    """Make the small files that are not data (code, params, .gitignore) independent,
    writable copies, as restore does: a read-only hardlink or a symlink there breaks
    stages that edit a file in place, and Git ignores a symlinked .gitignore. Data (a
    path with a `.tally` pointer beside it, or any file of LOOSE_MAX or more) stays
    linked. The copies are recorded in the stat cache, so they are not hashed again.
    """

    load = tree.CachedLoader(tree.reader(project.store.get))

    plan = treeplan.plan_tree(root_oid, load, set())
    fixed: list[tuple[os.stat_result, str]] = []
    objects = os.fspath(project.store.objects)
    for rel, e in plan.loose.items():
        if e.kind != tree.FILE or e.size >= LOOSE_MAX:
            continue
        p = d / rel
        if co.unprotect(p, objects_dir=objects):
            fixed.append((os.stat(p), e.oid))
    if fixed:
        newest = max(max(st.st_mtime_ns, st.st_ctime_ns) for st, _ in fixed)
        project.statcache.record(fixed, clock_ns=project.statcache.wait_past(newest))


__all__ = ["RunProject", "prepare", "git_common_dir"]
