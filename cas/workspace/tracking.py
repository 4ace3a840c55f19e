"""Use cases for data tracked by pointer: add, status, checkout, unprotect.

Each function takes an opened Project and returns plain data; cli/ renders it.
Write ordering for `add` (spec/store.md): objects (blobs, then trees bottom-up) are
published by the store's Writer, and only after its flush does the pointer file get
written, atomically. A crash at any instant leaves either the old pointer or the new
one, and whichever it is names objects that exist.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from cas.objects import envelope
from cas.objects import pointer
from cas.objects import tree
from cas.workspace import snapshot as workspace
from cas.core.errors import NotFound, ObjectMissing, UsageError
from cas.objects.pointer import Pointer
from cas.core import paths as path_safety
from cas.core.errors import Corruption, UnsafePath
from cas.workspace.project import Project
from cas.workspace.hashpool import Progress

if TYPE_CHECKING:
    from cas.workspace import checkout as co


class Added(NamedTuple):
    """One path stored by `add`."""

    path: str
    pointer: Pointer
    hashed: int  # files read this time
    changed: bool  # the pointer's id differs from before


def add(project: Project, paths: list[str], *, progress: Progress | None = None,
        cwd: Path | None = None) -> list[Added]:
    """Store each path and write its pointer file; add the path to `.gitignore`.

    Raises:
        UsageError: a path outside the project, inside another tracked directory,
            tracked by Git, or a pointer file itself.
        NotFound: a path that does not exist.
    """
    from cas.workspace import checkout as co
    from cas.workspace import git

    rels = [_check_add_path(project, p, cwd) for p in paths]
    out = []
    mode = project.ingest_mode()
    with project.lock("store", shared=True, timeout=60, purpose="tally add"):
        for rel in rels:
            before = _read_pointer_quiet(project, rel)
            abs_path = project.root / rel
            with project.store.writer() as writer:
                snap = workspace.snapshot(abs_path, statcache=project.statcache, writer=writer,
                                          ingest=mode, progress=progress, publish=True,
                                          refuse_unsafe_links=True)
            ptr = Pointer(path=rel, oid=snap.oid, is_dir=snap.is_dir, size=snap.size,
                          files=snap.files, mode=snap.mode if not snap.is_dir else 0)
            if not _holds(project.root / pointer.pointer_path(rel), ptr.encode()):
                pointer.write(project.root, ptr)  # (two fsyncs: skipped when unchanged)
            git.ensure_ignored(project.root, rel)
            if "symlink" in project.config.link_order[:1]:
                # Swap the files just stored for links to their objects (all recoverable:
                # no force needed, and none used, in case something changed meanwhile).
                co.checkout(project.store, _target(ptr), abs_path, links=("symlink", "copy"),
                            statcache=project.statcache)
            out.append(Added(rel, ptr, snap.hashed, before is None or before.oid != ptr.oid))
    return out


def _holds(path: Path, data: bytes) -> bool:
    """Does the file at `path` hold exactly `data`?"""
    try:
        with open(path, "rb") as f:
            return f.read(len(data) + 1) == data
    except OSError:
        return False


def _check_add_path(project: Project, path: str, cwd: Path | None) -> str:
    rel = project.relpath(path, cwd=cwd)
    if rel == ".":
        raise UsageError("cannot add the whole project", path=path,
                         hint="add the data directories or files one by one")
    if rel.endswith(pointer.SUFFIX):
        raise UsageError(f"{rel} is a pointer file", path=path,
                         hint=f"add the data itself: `tally add {rel[:-len(pointer.SUFFIX)]}`")
    path_safety.check_path(rel, source=f"tally add {path}")
    path_safety.check_parents(project.root, rel, source=f"tally add {path}")
    abs_path = project.root / rel
    if not os.path.lexists(abs_path):
        raise NotFound(f"{rel} does not exist", path=path)
    if abs_path.is_symlink():
        raise UnsafePath(f"{rel} is a symlink (to {os.readlink(abs_path)}): tally does not follow "
                         "a link to data it would then make read-only or link into its store",
                         path=path, hint="add the directory or file it points to, from inside "
                                         "the work tree, or copy the data in")
    parts = rel.split("/")
    for i in range(1, len(parts)):
        parent = "/".join(parts[:i])
        if (project.root / pointer.pointer_path(parent)).exists():
            raise UsageError(f"{rel} is inside {parent}, which is already tracked", path=path,
                             hint=f"re-add the whole directory: `tally add {parent}`")
    from cas.workspace import git

    tracked = git.tracked_files(project.root, rel)
    if tracked:
        raise UsageError(f"{rel} is tracked by Git ({len(tracked)} file(s), e.g. {tracked[0]})",
                         path=path, hint=f"stop tracking it in Git first: `git rm -r --cached {rel}`")
    return rel


def _read_pointer_quiet(project: Project, rel: str) -> Pointer | None:
    try:
        return pointer.read(project.root, rel)
    except (NotFound, UsageError):
        return None


def _target(ptr: Pointer) -> co.Target:
    from cas.workspace import checkout as co

    return co.Target(oid=ptr.oid, is_dir=ptr.is_dir, mode=ptr.mode,
                     size=None if ptr.is_dir else ptr.size)


class Status:
    """One pointer's state against the workspace and the store.

    A plain class: a dataclass costs ~1 ms of every command's start-up to create.
    """

    __slots__ = ("path", "state", "added", "modified", "deleted", "leftovers")

    def __init__(self, path: str, state: str) -> None:
        self.path = path
        self.state = state  # unchanged | modified | missing | not-in-store
        self.added: list[str] = []  # files new in the workspace
        self.modified: list[str] = []
        self.deleted: list[str] = []  # files the workspace lacks
        # Temp files (`.tally-tmp-*`) a killed checkout left under the path, relative to
        # the project: not data; the next checkout removes them.
        self.leftovers: list[str] = []

    def __repr__(self) -> str:
        return f"Status({self.to_json()!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Status) and self.to_json() == other.to_json()

    def to_json(self) -> dict[str, object]:
        return {"path": self.path, "state": self.state, "added": self.added,
                "modified": self.modified, "deleted": self.deleted, "leftovers": self.leftovers}


def _select(project: Project, paths: list[str] | None, cwd: Path | None) -> list[str]:
    if not paths:
        return pointer.find_all(project.root)
    out = []
    for p in paths:
        rel = project.relpath(p, cwd=cwd)
        if rel.endswith(pointer.SUFFIX):
            rel = rel[: -len(pointer.SUFFIX)]
        if not (project.root / pointer.pointer_path(rel)).exists():
            raise NotFound(f"{rel} is not tracked (no {rel}{pointer.SUFFIX})", path=p,
                           hint=f"`tally add {rel}` to track it")
        out.append(rel)
    return out


def status(project: Project, paths: list[str] | None = None, *,
           cwd: Path | None = None) -> list[Status]:
    """Compare each tracked path with its pointer (nothing is written to the store)."""
    out = []
    for rel in _select(project, paths, cwd):
        ptr = pointer.read(project.root, rel)
        path_safety.check_parents(project.root, rel, source=f"{rel}{pointer.SUFFIX}")
        abs_path = project.root / rel
        st = Status(rel, "unchanged")
        if not project.store.has(ptr.oid):
            st.state = "not-in-store"
        if not os.path.lexists(abs_path):
            st.state = "missing"
            out.append(st)
            continue
        try:
            _compare(project, ptr, abs_path, st)
        except Corruption as exc:
            raise exc.named_by(f"{rel}{pointer.SUFFIX}") from None
        out.append(st)
    return out


def _compare(project: Project, ptr: Pointer, abs_path: Path, st: Status, *,
             memo: bool = True) -> None:
    """Fill in `st` from a snapshot of `abs_path` (nothing is stored)."""
    mem: dict[str, tree.Tree] = {}
    hits: dict[str, object] = {}  # trees taken from the directory memo, by id
    snap = workspace.snapshot(abs_path, statcache=project.statcache, trees=mem,
                              objects=os.path.abspath(project.store.objects),
                              memo=memo, memo_hits=hits if memo else None)
    root = os.fspath(project.root) + "/"
    st.leftovers = [p[len(root):] if p.startswith(root) else p for p in snap.leftovers]
    if snap.oid == ptr.oid and snap.is_dir == ptr.is_dir:
        return
    if not (snap.is_dir and ptr.is_dir and project.store.has(ptr.oid)):
        st.state = "modified" if st.state == "unchanged" else st.state
        return

    def load(oid: str) -> tree.Tree:
        if oid in mem:
            return mem[oid]
        if oid in hits and not project.store.has(oid):
            # A tree the memo vouched for but never stored (a status of changed data):
            # build just that directory, from the listing the snapshot read.
            t = workspace.rebuild(hits[oid], oid, statcache=project.statcache, trees=mem)
            if t is None:
                raise _Changed
            return t
        return tree.decode(project.store.get(oid, max_size=envelope.MAX_STRUCT_SIZE))

    try:
        changes = list(tree.diff(ptr.oid, snap.oid, load))
    except _Changed:
        # The data changed while it was compared: once more, built whole.
        _compare(project, ptr, abs_path, st, memo=False)
        return
    except ObjectMissing:
        st.state = "not-in-store"
        return
    st.state = "modified" if st.state == "unchanged" else st.state
    for ch in changes:
        (st.added if ch.old is None else st.deleted if ch.new is None
         else st.modified).append(ch.path)


class _Changed(Exception):
    """A directory no longer hashes to the tree a snapshot took from the memo."""


def checkout(project: Project, paths: list[str] | None = None, *, force: bool = False,
             progress: Progress | None = None, cwd: Path | None = None,
             verify: bool = False) -> dict[str, co.CheckoutReport]:
    """Materialize each tracked path from its pointer, touching only what differs.

    All pointers are read and every object checked present before the first file is
    touched, so a missing object fails the command without a half-done checkout.
    """
    from cas.workspace import checkout as co

    rels = _select(project, paths, cwd)
    ptrs = [pointer.read(project.root, rel) for rel in rels]
    for ptr in ptrs:
        path_safety.check_parents(project.root, ptr.path, source=f"{ptr.path}{pointer.SUFFIX}")
        if not project.store.has(ptr.oid):
            raise ObjectMissing(ptr.oid, path=pointer.pointer_path(ptr.path),
                                hint="the data was never stored here or was gc'd; "
                                     "`tally add` it again from a copy")
    reports = {}
    with project.lock("store", shared=True, timeout=60, purpose="tally checkout"):
        for ptr in ptrs:
            try:
                reports[ptr.path] = co.checkout(
                    project.store, _target(ptr), project.root / ptr.path,
                    links=project.config.link_order, statcache=project.statcache, force=force,
                    progress=progress, verify=verify)
            except Corruption as exc:  # found below the pointer: say which pointer led there
                raise exc.named_by(f"{ptr.path}{pointer.SUFFIX}") from None
    return reports


def unprotect(project: Project, paths: list[str], *, cwd: Path | None = None) -> list[str]:
    """Make linked (read-only) files under `paths` independent and writable.

    Returns the files that were changed.
    """
    from cas.workspace import checkout as co

    changed = []
    for p in paths:
        rel = project.relpath(p, cwd=cwd)
        abs_path = project.root / rel
        if not os.path.lexists(abs_path):
            raise NotFound(f"{rel} does not exist", path=p)
        targets = [abs_path] if not abs_path.is_dir() or abs_path.is_symlink() else \
            [Path(d) / f for d, _, fs in os.walk(abs_path) for f in fs]
        for t in targets:
            if co.unprotect(t, objects_dir=os.fspath(project.store.objects)):
                changed.append(Path(t).relative_to(project.root).as_posix())
    return changed
