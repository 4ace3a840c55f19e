"""The end of a run directory: its files, Git dir, stat-cache rows and lock files go.

A queued run works in `.tally/tmp/run-<id16>/` with a private Git dir beside it
(cas/workers/rundir.py makes them). When the run has published its record (or failed,
its outputs and log already in the store), nothing in them is needed any more:
`cleanup` deletes them now, `discard` moves them into the worker's trash to be deleted
off the path from one run to the next. Both forget the directory's stat-cache rows
first, so dead rows never count against the cache's bound.
"""

from __future__ import annotations

import os
from pathlib import Path

from cas.core import fsops
from cas.core.errors import TallyError
from cas.workspace.project import Project


def cleanup(project: Project, run_id: str) -> None:
    """Remove a run directory and its private Git dir (outputs are in the store)."""
    d = project.store_dir / "tmp" / f"run-{run_id}"
    forget(project, d)
    for p in (d, d.with_name(d.name + ".git")):
        fsops.remove_tree(p)
    _drop_lock_files(project, run_id)


def forget(project: Project, d: Path) -> None:
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
    forget(project, d)  # here, in the executor: the worker that empties the trash has no cache open
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
                fsops.remove_tree(p)  # e.g. a leftover of the same name in the trash: delete now
                break
        else:
            fsops.remove_tree(p)
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


__all__ = ["cleanup", "discard", "forget"]
