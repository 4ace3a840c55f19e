"""Snapshot the whole workspace as an experiment sees it, into one tree.

The tree holds every file Git would see (tracked plus untracked-not-ignored, from one
`git ls-files`), the data of every pointer file among them (`PATH.tally` -> PATH), and
any extra paths the caller names (pipeline deps and outputs, which Git ignores).
Nothing under `.tally/` is included.

Cost is dominated by one lstat per file: the stat cache vouches for unchanged files,
a tracked data directory whose snapshot matches its pointer reuses the pointer's
tree, and an extra path the caller already stored is taken by id without a re-walk.
Trees are built bottom-up, after the blobs they name, so the write ordering holds.

Also here: the baseline commit, read from `.git` directly (HEAD, the loose ref,
then packed-refs), because a `git rev-parse` costs a process start on every run.
"""

# No `from __future__ import annotations`: typing.NamedTuple compiles every string
# annotation into a ForwardRef, ~0.3 ms a class of every `tally run` start-up.

import os
import stat as stat_mod
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from cas.workspace import git
from cas.workspace import hashpool
from cas.objects import pointer
from cas.objects import tree
from cas.workspace import snapshot as workspace
from cas.core.errors import StoreError, TallyError, UsageError

if TYPE_CHECKING:
    from cas.workspace.project import Project

SKIP_TOP = (".tally/", ".git/")
HASH_POOL_MIN = 64  # files to hash before a thread pool pays for itself


# NamedTuples, not dataclasses: this module is on `tally run`'s import path, where a
# dataclass costs ~1 ms of start-up each (tests/test_import_budget.py).
class Known(NamedTuple):
    """A path the caller has already snapshotted (and stored)."""

    oid: str
    is_dir: bool
    size: int
    files: int
    mode: int = 0o644


class WorkspaceTree(NamedTuple):
    oid: str
    size: int
    files: int
    hashed: int  # files read this time


class _Dir:
    __slots__ = ("files", "dirs", "known")

    def __init__(self) -> None:
        self.files: dict[str, tree.Entry] = {}
        self.dirs: dict[str, _Dir] = {}
        self.known: dict[str, Known] = {}  # subtree replaced by a known snapshot


def snapshot(project: "Project", *, writer, extra: dict[str, Known] | None = None,
             files: list[str] | None = None, ingest: str | None = "copy") -> WorkspaceTree:
    """Store the workspace and return its tree id.

    Args:
        writer: the store Writer every blob and tree goes through.
        extra: paths (POSIX, relative) already snapshotted, added as they are; they
            win over Git-visible files at or below them.
        files: the Git-visible file list if the caller already has it.
        ingest: how unseen files enter the store (never "hardlink": these are the
            user's own sources, which must stay writable); None: "reflink" when the
            store's filesystem can clone, else "copy", probed only if a file is unseen.
    """
    root = project.root
    statcache = project.statcache
    extra = dict(extra or {})
    if files is None:
        files = git.list_workspace_files(root)
    files = [f for f in files if not f.startswith(SKIP_TOP)]

    # Pointer data: reuse the pointer's tree when the data still matches it.
    for f in files:
        if f.endswith(pointer.SUFFIX) and f != pointer.SUFFIX:
            rel = f[: -len(pointer.SUFFIX)]
            if rel in extra or _covered(rel, extra) or not os.path.lexists(root / rel):
                continue
            try:
                ptr = pointer.read(root, rel)
            except Exception:  # a malformed pointer is the user's file, stored as such
                continue
            ingest = ingest or _clone_or_copy(project)
            extra[rel] = _snapshot_data(project, rel, ptr, writer, ingest)

    top = _Dir()
    for rel, k in sorted(extra.items()):
        _place_known(top, rel, k)

    clock = statcache.now_ns()
    todo: list[tuple[_Dir, str, str, os.stat_result]] = []
    for rel in files:
        if _covered(rel, extra) or rel in extra:
            continue
        abs_p = f"{root}/{rel}"
        try:
            st = os.lstat(abs_p)
        except (FileNotFoundError, NotADirectoryError):
            continue  # deleted since git listed it
        parent, name = _parent(top, rel)
        if parent is None:
            continue  # inside a known subtree
        if stat_mod.S_ISLNK(st.st_mode):
            target = os.readlink(abs_p).encode("utf-8", "surrogateescape")
            oid = writer.put_bytes(target, compress=False)
            parent.files[name] = tree.Entry(name, tree.SYMLINK, oid, len(target), 0)
            continue
        if not stat_mod.S_ISREG(st.st_mode):
            continue
        oid = statcache.lookup(st)
        if oid is not None and writer.put_file(abs_p, known_oid=oid) == oid:
            parent.files[name] = tree.Entry(name, tree.FILE, oid, st.st_size, workspace.file_mode(st))
        else:
            todo.append((parent, name, abs_p, st))

    if todo:
        ingest = ingest or _clone_or_copy(project)

    def work(item):
        parent, name, abs_p, st = item
        return writer.put_file(abs_p, ingest=ingest)

    if len(todo) >= HASH_POOL_MIN:
        # Imported here: concurrent.futures (and the logging it pulls in) costs ~6 ms of
        # start-up, and a run whose files the stat cache vouches for never needs a pool.
        from concurrent.futures import ThreadPoolExecutor
        with ThreadPoolExecutor(max_workers=hashpool.WORKERS) as pool:
            oids = list(pool.map(work, todo))
    else:
        oids = [work(t) for t in todo]
    for (parent, name, abs_p, st), oid in zip(todo, oids):
        parent.files[name] = tree.Entry(name, tree.FILE, oid, st.st_size, workspace.file_mode(st))
    if todo:
        statcache.record([(st, oid) for (_, _, _, st), oid in zip(todo, oids)], clock_ns=clock)

    oid, size, nfiles = _build(top, writer)
    return WorkspaceTree(oid, size, nfiles, len(todo))


def _clone_or_copy(project: "Project") -> str:
    """"reflink" if the store's filesystem can clone files, else "copy"."""
    return "reflink" if project.ingest_mode() == "reflink" else "copy"


def _snapshot_data(project: "Project", rel: str, ptr, writer, ingest: str) -> Known:
    abs_p = project.root / rel
    snap = workspace.snapshot(abs_p, statcache=project.statcache)
    if snap.oid == ptr.oid and project.store.has(ptr.oid):
        return Known(snap.oid, snap.is_dir, snap.size, snap.files, snap.mode)
    snap = workspace.snapshot(abs_p, statcache=project.statcache, writer=writer, ingest=ingest)
    return Known(snap.oid, snap.is_dir, snap.size, snap.files, snap.mode)


def _covered(rel: str, extra: dict[str, Known]) -> bool:
    """Is `rel` strictly inside a known directory?"""
    i = rel.find("/")
    while i != -1:
        k = extra.get(rel[:i])
        if k is not None:
            return True
        i = rel.find("/", i + 1)
    return False


def _parent(top: _Dir, rel: str) -> tuple[_Dir | None, str]:
    parts = rel.split("/")
    d = top
    for p in parts[:-1]:
        if p in d.known:
            return None, ""
        nxt = d.dirs.get(p)
        if nxt is None:
            nxt = d.dirs[p] = _Dir()
        d = nxt
    return d, parts[-1]


def _place_known(top: _Dir, rel: str, k: Known) -> None:
    parent, name = _parent(top, rel)
    if parent is None:
        return
    parent.dirs.pop(name, None)
    parent.files.pop(name, None)
    parent.known[name] = k


def _build(d: _Dir, writer) -> tuple[str, int, int]:
    entries = list(d.files.values())
    sub_files: dict[str, int] = {}
    for name, k in d.known.items():
        if k.is_dir:
            entries.append(tree.Entry(name, tree.DIR, k.oid, k.size, 0))
            sub_files[name] = k.files
        else:
            entries.append(tree.Entry(name, tree.FILE, k.oid, k.size, k.mode))
    for name, sub in d.dirs.items():
        if name in d.known:
            continue
        oid, size, nfiles = _build(sub, writer)
        entries.append(tree.Entry(name, tree.DIR, oid, size, 0))
        sub_files[name] = nfiles
    for e in entries:
        try:
            e.name.encode("utf-8")
        except UnicodeEncodeError:
            raise UsageError(f"file name is not valid UTF-8: {e.name!r}",
                             hint="rename the file; tally stores names as UTF-8") from None
    t = tree.make(entries, subtree_files=sub_files)
    oid = writer.put_bytes(tree.encode(t), compress=True)
    return oid, t.total_bytes, t.total_files


# ---------------------------------------------------------------- baseline commit

def _git_dirs(root: Path) -> tuple[Path, Path]:
    """(git dir, common dir) of the work tree at `root` (handles `.git` files of worktrees)."""
    dot = root / ".git"
    if dot.is_dir():
        gitdir = dot
    else:
        text = dot.read_text("utf-8").strip()
        if not text.startswith("gitdir:"):
            raise ValueError("unrecognized .git file")
        gitdir = Path(text[len("gitdir:"):].strip())
        if not gitdir.is_absolute():
            gitdir = (root / gitdir).resolve()
    common = gitdir
    cd = gitdir / "commondir"
    if cd.is_file():
        c = Path(cd.read_text("utf-8").strip())
        common = c if c.is_absolute() else (gitdir / c).resolve()
    return gitdir, common


def _is_commit_hex(s: str) -> bool:
    return len(s) in (40, 64) and not s.strip("0123456789abcdef")


def _read_ref(gitdir: Path, common: Path, ref: str) -> str | None:
    for base in (gitdir, common):
        try:
            s = (base / ref).read_bytes().decode("ascii").strip()
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            continue
        if _is_commit_hex(s):
            return s
        raise ValueError(f"unexpected content in {ref}")
    try:
        packed = (common / "packed-refs").read_bytes().decode("ascii")
    except FileNotFoundError:
        return None
    for line in packed.splitlines():
        if line.startswith(("#", "^")):
            continue
        oid, _, name = line.partition(" ")
        if name == ref and _is_commit_hex(oid):
            return oid
    return None


def baseline_commit(root: Path) -> str:
    """The commit HEAD points at, read from `.git` without running git when it can be.

    Falls back to `git rev-parse` for anything unusual (reftable, nested symrefs).

    Raises:
        StoreError: not a Git repository, or no commit yet (hint: `git commit`).
    """
    root = Path(root)
    commit: str | None = None
    try:
        gitdir, common = _git_dirs(root)
        if (common / "reftable").exists():
            raise ValueError("reftable")
        # bytes.decode, not read_text("ascii"): a text file would import the ascii codec
        # module (bytes.decode has it built in), 0.3 ms of every run.
        head = (gitdir / "HEAD").read_bytes().decode("ascii").strip()
        if head.startswith("ref: "):
            commit = _read_ref(gitdir, common, head[5:].strip())
            if commit is None:
                raise LookupError("unborn")
        elif _is_commit_hex(head):
            commit = head
        else:
            raise ValueError("unexpected HEAD")
    except LookupError:
        commit = None
    except (OSError, ValueError, UnicodeDecodeError):
        try:
            commit = git.head_commit(root)
        except (TallyError, OSError):
            raise StoreError("not a Git repository (or Git cannot read it)", path=root,
                             hint="run tally inside a Git work tree: `git init`, then commit") from None
    if commit is None:
        raise StoreError("the Git repository has no commit yet, so an experiment has no baseline",
                         path=root, hint="commit your code first: `git add -A && git commit -m init`")
    return commit


__all__ = ["snapshot", "Known", "WorkspaceTree", "baseline_commit"]
