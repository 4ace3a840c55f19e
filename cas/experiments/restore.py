"""Restore an experiment's workspace from the store, touching only what differs.

An experiment's workspace tree (cas/workspace/fullsnapshot.py) holds every file Git saw when it
ran, the data of every pointer among them, and its pipeline deps and outputs.
Restoring makes the workspace match it:

    data roots    a path whose pointer (`PATH.tally`) is in the tree, or a recorded
                  output: materialized whole by cas/workspace/checkout.py with the configured
                  link order (reflink, hardlink, ...), inside which extra files go.
    other files   code, params, pointers, tally.lock: written where they differ,
                  always as independent writable files (reflink or copy, never a
                  read-only hardlink: these are the files people edit).
    deletions     a file tracked by Git (at HEAD or at the experiment's baseline)
                  that the experiment does not have is deleted. Untracked files the
                  experiment does not know about are left alone.

Safety: before anything is written, every path that would be overwritten or deleted
is classified. It is recoverable when its current content is in the store, or equals
its committed version at HEAD or at the baseline; anything else is uncommitted work,
and the restore is refused, naming those files (WouldOverwrite, exit 4), unless
`force`. Every file written is recorded in the stat cache after the clock tick it was
written in passes, so nothing just restored is hashed again.

`step` restores a checkpoint: the checkpoint's tree (the paths checkpointed at that
step, rooted at the workspace) laid over the experiment's workspace.
"""

from __future__ import annotations

import os
import shutil
import stat as stat_mod
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from cas.core import paths as path_safety
from cas.experiments import lookup
from cas.workspace import git
from cas.workspace import gitobjects
from cas.core import hashing
from cas.objects import record
from cas.objects import tree
from cas.workspace import snapshot as workspace
from cas.workspace import checkout as co
from cas.workspace import treeplan
from cas.workspace.materialize import remove_leftover
from cas.core.failpoints import failpoint
from cas.workspace.treeplan import NEVER_TOUCHED, TreePlan, plan_tree
from cas.core.errors import NotFound, ObjectMissing, WouldOverwrite, from_os_error

if TYPE_CHECKING:
    from cas.workspace.project import Project

# Loose files up to this size are written from memory (verified by store.get);
# larger ones stream through cas/workspace/checkout.py.
IN_MEMORY_MAX = 16 * 1024 * 1024  # bytes
LOOSE_LINKS = ("reflink", "copy")  # files people edit: never read-only links
TMP_PREFIX = co.TMP_PREFIX
@dataclass
class Restored:
    """What restore did."""

    baseline: str
    name: str
    oid: str  # the record id
    step: int | None
    head: str | None = None  # HEAD when restored: not the baseline means files differ from HEAD
    written: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    unchanged: int = 0
    modes: dict[str, int] = field(default_factory=dict)  # link mode -> files
    # Symlinks of the workspace that point outside it (cas/core/paths.py): never written.
    skipped: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "baseline": self.baseline, "record": self.oid,
                "step": self.step, "head": self.head, "written": sorted(self.written), "deleted": sorted(self.deleted),
                "unchanged": self.unchanged, "modes": self.modes, "skipped": sorted(self.skipped)}


def restore(project: Project, spec: str, *, force: bool = False, step: int | None = None,
            verify: bool = False) -> Restored:
    """Bring experiment `spec` (NAME or BASELINE/NAME) back into the workspace.

    Every file whose bytes pass through tally (small files written from memory, copies)
    is checked against its id; with `verify`, hardlinked, symlinked and reflinked data
    files too (cas/workspace/checkout.py; spec/checkout.md, "Verification").

    Raises:
        NotFound: no such experiment, no workspace snapshot, or no checkpoint `step`.
        WouldOverwrite: uncommitted work is in the way (named) and not `force`.
        LockBusy: a run holds the workspace.
        ObjectMissing / CorruptObject: the store lacks or has damaged content; the
            missing object is found before anything is written.
    """
    baseline, name, oid = lookup.find(project, spec)
    rec = record.load(project.store, oid)
    if rec.workspace is None:
        raise NotFound(f"experiment {name!r} has no workspace snapshot (status {rec.status})",
                       hint="it never ran far enough to record one; nothing to restore")
    result = Restored(baseline, name, oid, step)
    with project.lock("workspace", timeout=0.0, purpose="tally restore"), \
            project.lock("store", shared=True, timeout=60, purpose="tally restore"):
        root_oid = rec.workspace
        if step is not None:
            root_oid = _with_checkpoint(project, rec, step)
        load = tree.CachedLoader(tree.reader(project.store.get))
        for out in rec.outs:  # a pulled record is content like any other
            path_safety.check_path(out, source=f"the record of experiment {name!r}")
        plan = plan_tree(root_oid, load, set(rec.outs))
        _apply(project, plan, rec, load, force=force, verify=verify, result=result)
    return result


def _with_checkpoint(project: Project, rec: record.Record, step: int) -> str:
    steps = dict(rec.checkpoints)
    if step not in steps:
        known = ", ".join(str(s) for s, _ in rec.checkpoints) or "none"
        raise NotFound(f"experiment {rec.name!r} has no checkpoint at step {step}",
                       hint=f"its checkpoint steps: {known}")
    with project.store.writer() as w:
        return treeplan.overlay(project.store, rec.workspace, steps[step], w)


def _current_oid(project: Project, path: str, st: os.stat_result) -> str | None:
    if stat_mod.S_ISLNK(st.st_mode):
        return hashing.hash_bytes(os.readlink(path).encode("utf-8", "surrogateescape"))
    if not stat_mod.S_ISREG(st.st_mode):
        return None
    oid = project.statcache.lookup(st)
    if oid is None:
        try:
            oid = hashing.hash_file(path, size=st.st_size)
        except OSError:
            return None
    return oid


def _same(project: Project, path: str, st: os.stat_result, e: tree.Entry) -> bool:
    if stat_mod.S_ISLNK(st.st_mode) != (e.kind == tree.SYMLINK):
        return False
    if e.kind == tree.FILE:
        if not stat_mod.S_ISREG(st.st_mode) or st.st_size != e.size:
            return False
        if workspace.file_mode(st) != e.mode:
            return False
    return _current_oid(project, path, st) == e.oid


def _committed(root: Path, commits: list[str], paths: set[str]) -> tuple[set[str], dict[str, set[str]]]:
    """(files Git tracks at any of `commits`, path -> BLAKE3 ids of its committed versions
    among `paths`)."""
    tracked: set[str] = set()
    versions: dict[str, set[str]] = {}
    with gitobjects.TreeReader(root) as reader:
        for c in commits:
            listed: list[str] = []

            def match(p: str) -> bool:
                listed.append(p)
                return p in paths
            try:
                found = reader.read_files(c, match)
            except NotFound:
                continue  # the baseline is gone from Git (rewritten history)
            for p, data in found.items():
                versions.setdefault(p, set()).add(hashing.hash_bytes(data))
            tracked.update(listed)
    return tracked, versions


def _apply(project: Project, plan: TreePlan, rec: record.Record, load: Callable[[str], tree.Tree], *,
           force: bool, verify: bool, result: Restored) -> None:
    root = project.root
    base = os.fspath(root)
    store = project.store
    data_roots = set(plan.data_dirs) | set(plan.data_files)

    def under_data(p: str) -> bool:
        i = p.find("/")
        while i != -1:
            if p[:i] in plan.data_dirs:
                return True
            i = p.find("/", i + 1)
        return p in data_roots

    # 1. What differs, and what is in the way (nothing written yet).
    writes: list[tuple[str, tree.Entry]] = []
    risky: dict[str, str | None] = {}  # path -> its current id (None: not a file)
    source = f"experiment {rec.name!r}"
    loose_links = frozenset(p for p, e in plan.loose.items() if e.kind == tree.SYMLINK)
    for rel in sorted(set(plan.loose) | data_roots):
        path_safety.check_parents(root, rel, source=source)  # never written through a link
    for rel, e in plan.loose.items():
        if e.kind == tree.SYMLINK:
            target = store.get(e.oid, max_size=e.size or None).decode("utf-8", "surrogateescape")
            if path_safety.symlink_problem(rel, target, loose_links) is not None:
                result.skipped.append(rel)  # a link Git may hold, tally never writes
                continue
        p = f"{base}/{rel}"
        try:
            st = os.lstat(p)
        except FileNotFoundError:
            writes.append((rel, e))
            continue
        except NotADirectoryError:
            writes.append((rel, e))
            blocker = _blocking_parent(root, rel)  # a file where a directory must go
            if blocker is not None and blocker not in risky:
                bst = os.lstat(f"{base}/{blocker}")
                risky[blocker] = _current_oid(project, f"{base}/{blocker}", bst)
            continue
        if _same(project, p, st, e):
            result.unchanged += 1
            continue
        writes.append((rel, e))
        if not (stat_mod.S_ISREG(st.st_mode) and workspace.file_mode(st) != e.mode
                and _current_oid(project, p, st) == e.oid):  # only the mode differs
            risky[rel] = None if stat_mod.S_ISDIR(st.st_mode) else _current_oid(project, p, st)
    head = result.head = git.head_commit(root)
    commits = [c for c in dict.fromkeys([head, rec.baseline]) if c is not None]
    tracked, _ = _committed(root, commits, set())
    deletes = sorted(p for p in tracked if p not in plan.loose and not under_data(p)
                     and not p.startswith(NEVER_TOUCHED) and os.path.lexists(f"{base}/{p}"))
    for rel in deletes:
        st = os.lstat(f"{base}/{rel}")
        risky[rel] = None if stat_mod.S_ISDIR(st.st_mode) else _current_oid(project, f"{base}/{rel}", st)
    dir_todo: list[str] = []
    lost: list[str] = []
    for rel, oid in plan.data_dirs.items():
        changed, dir_lost = _dir_state(project, rel, oid, load)
        if changed:
            dir_todo.append(rel)
            lost += dir_lost
    file_todo: list[str] = []
    for rel, e in plan.data_files.items():
        p = f"{base}/{rel}"
        try:
            st = os.lstat(p)
        except (FileNotFoundError, NotADirectoryError):
            file_todo.append(rel)
            continue
        if not _same(project, p, st, e):
            file_todo.append(rel)
            cur = None if stat_mod.S_ISDIR(st.st_mode) else _current_oid(project, p, st)
            if cur is None or not store.has(cur):
                lost.append(rel)

    # Every object needed must be present before the first file is touched (for a data
    # directory, its root tree: cas/workspace/checkout.py reads the rest before writing).
    needed = [(rel, e.oid) for rel, e in writes] + [(rel, plan.data_files[rel].oid) for rel in file_todo] \
        + [(rel, plan.data_dirs[rel]) for rel in dir_todo]
    for rel, oid in needed:
        if not store.has(oid):
            raise ObjectMissing(oid, path=rel, hint="the experiment's files were gc'd; nothing was written")

    # 2. Is anything in the way uncommitted work?
    unsure = {rel for rel, cur in risky.items() if cur is None or not store.has(cur)}
    if unsure:
        _, versions = _committed(root, commits, unsure)
        lost += [rel for rel in unsure if risky[rel] is None or risky[rel] not in versions.get(rel, ())]
    if lost and not force:
        raise WouldOverwrite(sorted(set(lost)), action="restore")

    # 3. Write: data roots by link, then the other files, then deletions.
    links = project.config.link_order
    for rel in dir_todo:
        r = co.checkout(store, co.Target(plan.data_dirs[rel], True), root / rel, links=links,
                        statcache=project.statcache, force=force, load_tree=load, verify=verify)
        result.written += [f"{rel}/{w}" for w in r.written]
        result.deleted += [f"{rel}/{d}" for d in r.deleted]
        result.unchanged += r.unchanged
        for m, n in r.modes.items():
            result.modes[m] = result.modes.get(m, 0) + n
    for rel in file_todo:
        e = plan.data_files[rel]
        _file_checkout(project, rel, e, links, force, verify, result)
    big = [(rel, e) for rel, e in writes if e.kind == tree.FILE and e.size > IN_MEMORY_MAX]
    small = [(rel, e) for rel, e in writes if not (e.kind == tree.FILE and e.size > IN_MEMORY_MAX)]
    for rel, e in big:
        _file_checkout(project, rel, e, LOOSE_LINKS, True, verify, result)
    _write_small(project, small, result)
    for rel in deletes:
        p = f"{base}/{rel}"
        try:
            if os.path.isdir(p) and not os.path.islink(p):
                shutil.rmtree(p)
            else:
                os.unlink(p)
        except FileNotFoundError:
            continue
        except OSError as exc:
            raise from_os_error(exc, path=p, doing="restoring") from None
        result.deleted.append(rel)
        _prune_parents(root, rel)


def _dir_state(project: Project, rel: str, oid: str, load: Callable[[str], tree.Tree]) -> tuple[bool, list[str]]:
    """(does data dir `rel` differ from tree `oid`, its changed files not in the store)."""
    p = project.root / rel
    try:
        st = os.lstat(p)
    except (FileNotFoundError, NotADirectoryError):
        return True, []
    if not stat_mod.S_ISDIR(st.st_mode):
        cur = _current_oid(project, os.fspath(p), st)
        return True, [] if cur is not None and project.store.has(cur) else [rel]
    mem: dict[str, tree.Tree] = {}
    snap = workspace.snapshot(p, statcache=project.statcache, trees=mem)
    if snap.oid == oid:
        return False, []

    def both(t: str) -> tree.Tree:
        return mem[t] if t in mem else load(t)

    lost = [f"{rel}/{ch.path}" for ch in tree.diff(oid, snap.oid, both)
            if ch.new is not None and not project.store.has(ch.new.oid)]
    return True, lost


def _file_checkout(project: Project, rel: str, e: tree.Entry, links: tuple[str, ...], force: bool,
                   verify: bool, result: Restored) -> None:
    dest = project.root / rel
    _clear_parents(project.root, rel)
    if e.kind == tree.SYMLINK:
        _write_small(project, [(rel, e)], result)
        return
    r = co.checkout(project.store, co.Target(e.oid, False, e.mode), dest, links=links,
                    statcache=project.statcache, force=force, verify=verify)
    if r.written:
        result.written.append(rel)
        for m, n in r.modes.items():
            result.modes[m] = result.modes.get(m, 0) + n
    else:
        result.unchanged += 1


def _blocking_parent(root: Path, rel: str) -> str | None:
    """The first parent of `rel` that exists as something other than a directory."""
    parts = rel.split("/")[:-1]
    for i in range(1, len(parts) + 1):
        p = root.joinpath(*parts[:i])
        if os.path.lexists(p) and (p.is_symlink() or not p.is_dir()):
            return "/".join(parts[:i])
    return None


def _clear_parents(root: Path, rel: str) -> None:
    """Remove a file standing where a parent directory of `rel` must go (already judged)."""
    blocker = _blocking_parent(root, rel)
    if blocker is not None:
        os.unlink(root / blocker)


def _write_small(project: Project, items: list[tuple[str, tree.Entry]], result: Restored) -> None:
    """Write files (and symlinks) from memory: temp file, then rename over; stat-cached."""
    base = os.fspath(project.root)
    stats: list[tuple[os.stat_result, str]] = []
    newest = 0
    swept: set[str] = set()  # directories cleared of a killed restore's temp files
    try:
        for rel, e in items:
            p = f"{base}/{rel}"
            parent = os.path.dirname(p)
            if not os.path.isdir(parent):
                _clear_parents(project.root, rel)
                os.makedirs(parent, exist_ok=True)
            elif parent not in swept:
                swept.add(parent)
                _remove_leftovers(parent)
            tmp = f"{parent}/{TMP_PREFIX}{os.getpid()}-{os.urandom(6).hex()}"
            data = project.store.get(e.oid, max_size=e.size or None)  # verified against its id
            try:
                if e.kind == tree.SYMLINK:
                    os.symlink(data.decode("utf-8", "surrogateescape"), tmp)
                else:
                    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, e.mode)
                    try:
                        view = memoryview(data)
                        while view:
                            view = view[os.write(fd, view):]
                        os.fchmod(fd, e.mode)  # the umask may have masked bits off
                    finally:
                        os.close(fd)
                failpoint("restore:temp-written", group=True)
                if os.path.isdir(p) and not os.path.islink(p):
                    shutil.rmtree(p)
                os.replace(tmp, p)
                failpoint("restore:renamed", group=True)
            except BaseException:
                try:
                    os.unlink(tmp)
                except FileNotFoundError:
                    pass
                raise
            result.written.append(rel)
            result.modes["copy"] = result.modes.get("copy", 0) + 1
            if e.kind == tree.FILE:
                st = os.lstat(p)
                stats.append((st, e.oid))
                newest = max(newest, st.st_mtime_ns, st.st_ctime_ns)
    except OSError as exc:
        raise from_os_error(exc, doing="restoring") from None
    finally:
        if stats:
            # As a checkout does: wait out the clock tick the files were written in,
            # then record them, so nothing just restored is hashed again.
            sc = project.statcache
            sc.record(stats, clock_ns=sc.wait_past(newest))


def _remove_leftovers(directory: str) -> None:
    """Remove the temp files a killed restore or checkout left in `directory`."""
    try:
        with os.scandir(directory) as it:
            names = [ent.name for ent in it if ent.name.startswith(TMP_PREFIX)]
    except OSError:
        return
    for name in names:
        remove_leftover(f"{directory}/{name}", name)


def _prune_parents(root: Path, rel: str) -> None:
    parts = rel.split("/")[:-1]
    while parts:
        try:
            os.rmdir(root.joinpath(*parts))
        except OSError:
            return
        parts.pop()


__all__ = ["restore", "Restored", "plan_tree", "overlay"]
