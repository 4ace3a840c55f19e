"""An isolated run directory: a queued experiment's workspace, materialized from the store.

    .tally/tmp/run-<id16>/         the workspace tree of the entry, checked out by link
      .git                         a file: "gitdir: <abs>/.tally/tmp/run-<id16>.git"
    .tally/tmp/run-<id16>.git/     a private Git dir: HEAD = the entry's baseline commit
                                   (detached), commondir = the project's Git dir, and
                                   an index read from the baseline
    .tally/tmp/run-<id16>.checkpoints   checkpoints appended by cas.pipeline.live during the run

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
import stat as stat_mod
from pathlib import Path

from cas.workspace import checkout as co
from cas.workspace import git
from cas.objects import tree
from cas.core.errors import TallyError
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
    _forget(project, d)
    for p in (d, gitdir):
        remove_tree(p)
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
                target = merge_trees(project.store, workspace, overlay, w)
                w.flush()
        links = project.config.link_order
        co.checkout(project.store, co.Target(oid=target, is_dir=True), d,
                    links=links, statcache=project.statcache, force=True)
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
    from cas.experiments.restore import plan_tree

    trees: dict[str, tree.Tree] = {}

    def load(oid: str) -> tree.Tree:
        t = trees.get(oid)
        if t is None:
            t = trees[oid] = tree.decode(project.store.get(oid))
        return t

    plan = plan_tree(root_oid, load, set())
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


def merge_trees(store, base: str, top: str, writer) -> str:
    """A tree holding every file of `base` and of `top`, `top` winning on a clash."""
    load = lambda oid: tree.decode(store.get(oid))  # noqa: E731

    def merge(a: str, b: str) -> tuple[str, int, int]:
        ta, tb = load(a), load(b)
        entries = {e.name: e for e in ta.entries}
        files: dict[str, int] = {}
        for e in ta.entries:
            if e.kind == tree.DIR:
                files[e.name] = load(e.oid).total_files
        for e in tb.entries:
            old = entries.get(e.name)
            if e.kind == tree.DIR and old is not None and old.kind == tree.DIR:
                oid, size, n = merge(old.oid, e.oid)
                entries[e.name] = tree.Entry(e.name, tree.DIR, oid, size, 0)
                files[e.name] = n
            else:
                entries[e.name] = e
                if e.kind == tree.DIR:
                    files[e.name] = load(e.oid).total_files
                else:
                    files.pop(e.name, None)
        t = tree.make(list(entries.values()), subtree_files=files)
        return writer.put_bytes(tree.encode(t), compress=True), t.total_bytes, t.total_files

    return merge(base, top)[0]


def cleanup(project: Project, run_id: str) -> None:
    """Remove a run directory and its private Git dir (outputs are in the store)."""
    d = project.store_dir / "tmp" / f"run-{run_id}"
    _forget(project, d)
    for p in (d, d.with_name(d.name + ".git")):
        remove_tree(p)
    _drop_lock_files(project, run_id)


def _forget(project: Project, d: Path) -> None:
    """Drop the stat cache rows of run directory `d`, about to be deleted (best effort).

    The run hashed its files, and nothing will stat them again: left behind, those
    rows would count against the cache's bound (spec/statcache.md, "The bound"), which
    prunes the least recently recorded rows, the project's own long-lived ones among
    them. A file hardlinked to a store object keeps its inode, but unlinking it moves
    the inode's ctime, so its row would not match again anyway."""
    from cas.workspace import statcache
    try:
        files, dirs = statcache.tree_keys(d)
        if files or dirs:
            project.statcache.forget(files, dirs)
    except (OSError, TallyError):
        pass


def _drop_lock_files(project: Project, run_id: str) -> None:
    # The per-run workspace lock (RunProject.lock) is free once the run has ended.
    for name in (f"workspace-run-{run_id}", f"workspace-run-{run_id}.holder"):
        try:
            os.unlink(project.store_dir / "locks" / name)
        except FileNotFoundError:
            pass


def discard(project: Project, run_id: str, trash: Path) -> None:
    """Move a run directory and its Git dir into `trash` (two renames): the worker
    deletes them later, off the path from one run to the next.

    The supervisor removes `trash` whenever it finds it empty (Worker._empty_trash),
    so it may vanish at any instant here: see _trash_dir. Where a rename still fails
    the directory is deleted now instead.
    Raises:
        TallyError: a directory that could not be deleted either.
    """
    d = project.store_dir / "tmp" / f"run-{run_id}"
    _forget(project, d)  # here, in the executor: the worker that empties the trash has no cache open
    for p in (d, d.with_name(d.name + ".git")):
        for _ in range(3):
            _trash_dir(trash)
            try:
                os.rename(p, trash / p.name)
                break
            except FileNotFoundError:
                # Either the run directory is gone (nothing to do), or the supervisor
                # removed the empty trash between our mkdir and rename: make it again.
                if not os.path.lexists(p):
                    break
            except OSError:
                remove_tree(p)  # e.g. a leftover of the same name in the trash: delete now
                break
        else:
            remove_tree(p)
    _drop_lock_files(project, run_id)


def _trash_dir(trash: Path) -> None:
    """Make `trash` unless it exists. Not Path.mkdir(exist_ok=True): after mkdir(2)
    fails with EEXIST that checks is_dir(), and when the supervisor rmdirs the empty
    trash in between, it raises FileExistsError although nothing is wrong (the queue
    then failed a run whose experiment was already recorded). EEXIST is enough: should
    the directory go before our rename, the rename fails with ENOENT and is retried."""
    try:
        os.mkdir(trash)
    except FileExistsError:
        pass
    except FileNotFoundError:
        trash.parent.mkdir(parents=True, exist_ok=True)  # .tally/tmp itself: never removed
        try:
            os.mkdir(trash)
        except FileExistsError:
            pass


def remove_tree(p: Path) -> None:
    """rm -rf that also removes read-only (hardlinked, protected) files and dirs."""
    def writable(func, path, exc_info):
        # Unlinking needs a writable parent, never a writable file: a hardlinked file
        # *is* a store object, whose mode must stay 0444.
        try:
            os.chmod(os.path.dirname(path), 0o755)
            if stat_mod.S_ISDIR(os.lstat(path).st_mode):
                os.chmod(path, 0o755)
            func(path)
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise TallyError(f"cannot remove {path}: {exc.strerror}", path=path) from None

    if p.is_symlink() or p.is_file():
        p.unlink()
    elif p.exists():
        shutil.rmtree(p, onerror=writable)


__all__ = ["RunProject", "prepare", "merge_trees", "cleanup", "discard", "remove_tree",
           "git_common_dir"]
