"""Materialize a stored file or tree into the workspace, touching only what differs.

Link modes, tried in the configured order per file (default `reflink, copy`):

    reflink   clone the raw object (copy-on-write; independent, writable file)
    hardlink  the workspace file *is* the object's inode: read-only (0444)
    symlink   a symlink to the object file: read-only target
    copy      an independent copy (also the only way out of a zstd object)

A mode that cannot apply (compressed object, another filesystem, no CoW support)
falls through to the next. Hardlinked and symlinked files are read-only so an edit
cannot corrupt the store; `tally unprotect` swaps one for a writable copy.

Safety: before touching anything, every path that would be overwritten or deleted is
classified. A file whose current content is itself in the store can be recovered, so
replacing it loses nothing; anything else is user work and the whole checkout is
refused (WouldOverwrite, naming the files) unless `force`. Each file is written under a
temp name in its own directory and renamed into place, so an interrupted checkout
leaves whole old files or whole new ones, never a torn file.
"""

from __future__ import annotations

import os
import shutil
import stat as stat_mod
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import zstandard

from . import hashing, tree
from .errors import CorruptObject, UsageError, WouldOverwrite, from_os_error
from .fsops import copy_file, reflink
from .statcache import StatCache
from .store import FileStore

CHUNK = 256
WORKERS = max(2, min(8, 2 * (os.cpu_count() or 1)))
TMP_PREFIX = ".tally-tmp-"

Progress = Callable[[int, int], None]


@dataclass
class Report:
    """What a checkout did."""

    written: list[str] = field(default_factory=list)  # paths relative to the target
    deleted: list[str] = field(default_factory=list)
    unchanged: int = 0
    modes: dict[str, int] = field(default_factory=dict)  # link mode -> files


@dataclass(frozen=True, slots=True)
class Target:
    """What to materialize at a path: a tree, or a single blob with its mode."""

    oid: str
    is_dir: bool
    mode: int = 0o644


def checkout(store: FileStore, target: Target, dest: Path, *, links: tuple[str, ...],
             statcache: StatCache, force: bool = False, progress: Progress | None = None,
             load_tree: Callable[[str], tree.Tree] | None = None) -> Report:
    """Make `dest` hold exactly `target`.

    Raises:
        WouldOverwrite: unrecoverable user changes are in the way and not `force`.
        ObjectMissing / CorruptObject: the store lacks or has damaged content; nothing
            is written for a file whose object is damaged.
    """
    load = load_tree or (lambda oid: tree.decode(store.get(oid)))
    desired: dict[str, tree.Entry] = {}
    if target.is_dir:
        for rel, e in tree.walk(target.oid, load):
            _check_rel(rel)
            desired[rel] = e
    else:
        desired[""] = tree.Entry(dest.name, tree.FILE, target.oid, 0, target.mode)

    current = _scan(dest, target.is_dir)
    report = Report()
    todo: list[tuple[str, tree.Entry]] = []
    risky: list[tuple[str, os.stat_result, str]] = []  # (rel, stat, abs) to classify
    for rel, e in desired.items():
        st = current.pop(rel, None)
        if st is None:
            todo.append((rel, e))
            continue
        abs_p = _join(dest, rel)
        if _same(st, e, abs_p, statcache):
            report.unchanged += 1
        else:
            todo.append((rel, e))
            risky.append((rel, st, abs_p))
    extras = [(rel, st, _join(dest, rel)) for rel, st in current.items()]

    if not force:
        lost = [rel or dest.name for rel, st, p in risky + extras
                if not _recoverable(store, st, p, statcache)]
        if lost:
            shown = [f"{dest.name}/{r}" if target.is_dir and r != dest.name else r for r in sorted(lost)]
            raise WouldOverwrite(shown)

    # A directory where a file must go (or the reverse) is removed first; it was
    # classified above like any other path in the way.
    if not target.is_dir and dest.is_dir() and not dest.is_symlink():
        shutil.rmtree(dest)
    elif target.is_dir and (dest.is_symlink() or dest.is_file()):
        dest.unlink()
    for rel, _, p in extras:
        _remove(p)
        report.deleted.append(rel)
    if target.is_dir:
        dest.mkdir(parents=True, exist_ok=True)
        _prune_empty_dirs(dest, {os.path.dirname(r) for r in desired})

    records: list[tuple[str, str]] = []
    total = len(todo)
    done = 0

    def work(chunk: list[tuple[str, tree.Entry]]) -> list[tuple[str, str, str]]:
        out = []
        for rel, e in chunk:
            p = _join(dest, rel)
            mode_used = _materialize(store, e, p, links, rel)
            out.append((rel, e.oid, mode_used))
        return out

    chunks = [todo[i:i + CHUNK] for i in range(0, total, CHUNK)]
    try:
        if total <= CHUNK:
            results = [work(todo)] if todo else []
        else:
            pool = ThreadPoolExecutor(max_workers=WORKERS)
            results = []
            with pool:
                for r in pool.map(work, chunks):
                    results.append(r)
                    done += len(r)
                    if progress:
                        progress(done, total)
    except OSError as exc:
        raise from_os_error(exc, doing="checking out") from None
    newest = 0
    stats: list[tuple[os.stat_result, str]] = []
    for r in results:
        for rel, oid, mode_used in r:
            report.written.append(rel)
            report.modes[mode_used] = report.modes.get(mode_used, 0) + 1
            if mode_used in ("copy", "reflink", "hardlink"):
                st = os.lstat(_join(dest, rel))
                stats.append((st, oid))
                newest = max(newest, st.st_mtime_ns, st.st_ctime_ns)
                records.append((rel, oid))
    if stats:
        # Record what we wrote, after waiting out the clock tick it was written in
        # (see cas/statcache.py): restored files are never hashed again.
        statcache.record(stats, clock_ns=statcache.wait_past(newest))
    return report


def _join(dest: Path, rel: str) -> str:
    return os.fspath(dest) if rel == "" else f"{os.fspath(dest)}/{rel}"


def _check_rel(rel: str) -> None:
    # tree.decode already refuses "..", "/" and NUL in names; this is the second
    # fence, at the point where a path is about to be written.
    parts = rel.split("/")
    if rel.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise UsageError(f"refusing unsafe path {rel!r} from a stored tree")


def _scan(dest: Path, is_dir: bool) -> dict[str, os.stat_result]:
    """Current files (and symlinks) at dest, keyed like `desired`."""
    try:
        st = os.lstat(dest)
    except FileNotFoundError:
        return {}
    if not stat_mod.S_ISDIR(st.st_mode) or not is_dir:
        # A file (or, for a file target, a whole directory) stands at dest: one entry,
        # classified like any other path in the way.
        return {"": st}
    out: dict[str, os.stat_result] = {}
    base = os.fspath(dest)
    stack = [""]
    while stack:
        rel_dir = stack.pop()
        d = base if not rel_dir else f"{base}/{rel_dir}"
        with os.scandir(d) as it:
            for ent in it:
                if ent.name in (".git", ".tally") or ent.name.startswith(TMP_PREFIX):
                    continue
                rel = ent.name if not rel_dir else f"{rel_dir}/{ent.name}"
                if ent.is_dir(follow_symlinks=False):
                    stack.append(rel)
                else:
                    out[rel] = ent.stat(follow_symlinks=False)
    return out


def _current_oid(st: os.stat_result, path: str, statcache: StatCache) -> str | None:
    if stat_mod.S_ISLNK(st.st_mode):
        return hashing.hash_bytes(os.readlink(path).encode("utf-8", "surrogateescape"))
    if not stat_mod.S_ISREG(st.st_mode):
        return None
    oid = statcache.lookup(st)
    if oid is None:
        try:
            oid = hashing.hash_file(path, size=st.st_size)
        except OSError:
            return None
    return oid


def _same(st: os.stat_result, e: tree.Entry, path: str, statcache: StatCache) -> bool:
    want_link = e.kind == tree.SYMLINK
    if stat_mod.S_ISLNK(st.st_mode) != want_link:
        return False
    if not want_link and st.st_size != e.size and e.size:
        return False
    return _current_oid(st, path, statcache) == e.oid


def _recoverable(store: FileStore, st: os.stat_result, path: str, statcache: StatCache) -> bool:
    """Can the content now at `path` be brought back from the store after we replace it?"""
    if stat_mod.S_ISDIR(st.st_mode):
        return False
    oid = _current_oid(st, path, statcache)
    return oid is not None and store.has(oid)


def _remove(path: str) -> None:
    try:
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path)
        else:
            os.unlink(path)
    except FileNotFoundError:
        pass


def _prune_empty_dirs(dest: Path, keep: set[str]) -> None:
    for dirpath, dirnames, filenames in os.walk(dest, topdown=False):
        rel = os.path.relpath(dirpath, dest)
        rel = "" if rel == "." else rel
        if rel and not dirnames and not filenames and rel not in keep \
                and not any(k.startswith(rel + "/") for k in keep):
            try:
                os.rmdir(dirpath)
            except OSError:
                pass


def _materialize(store: FileStore, e: tree.Entry, path: str, links: tuple[str, ...],
                 rel: str = "") -> str:
    """Write one entry at `path` (`rel` inside the tree being checked out), replacing
    what is there; return the link mode used."""
    parent = os.path.dirname(path)
    os.makedirs(parent, exist_ok=True)
    tmp = f"{parent}/{TMP_PREFIX}{os.getpid()}-{os.urandom(6).hex()}"
    info = store.info(e.oid)
    if e.kind == tree.FILE and not info.compressed and e.size and info.stored_size != e.size:
        # A raw object is the content itself: a size that differs from the tree's is
        # damage (truncated or extended), and one stat is enough to refuse it.
        raise CorruptObject(e.oid, f"{info.stored_size} bytes on disk, the tree says {e.size}",
                            path=info.path)
    try:
        if e.kind == tree.SYMLINK:
            target = store.get(e.oid, max_size=e.size or None).decode("utf-8", "surrogateescape")
            # Judge the target from the link's place in the tree, not in its directory:
            # `sub/link -> ../a.txt` stays inside, `link -> ../x` does not.
            if os.path.isabs(target) or _escapes(rel or os.path.basename(path), target):
                raise UsageError(f"refusing symlink {path} -> {target}: it points outside its tree")
            os.symlink(target, tmp)
            os.replace(tmp, path)
            return "symlink"
        used = None
        for mode in links:
            if info.compressed and mode != "copy":
                continue
            if mode == "reflink":
                if reflink(info.path, tmp):
                    os.chmod(tmp, e.mode)
                    used = mode
            elif mode == "hardlink":
                try:
                    os.link(info.path, tmp)
                    used = mode
                except OSError:
                    pass
            elif mode == "symlink":
                os.symlink(os.path.abspath(info.path), tmp)
                used = mode
            elif mode == "copy":
                if info.compressed:
                    _decompress_to(e.oid, info.path, tmp, e.mode, e.size)
                else:
                    copy_file(info.path, tmp, mode=e.mode)
                used = mode
            if used:
                break
        if used is None:
            # Nothing in the configured order applied: a copy always can.
            if info.compressed:
                _decompress_to(e.oid, info.path, tmp, e.mode, e.size)
            else:
                copy_file(info.path, tmp, mode=e.mode)
            used = "copy"
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path)
        os.replace(tmp, path)
        return used
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def _escapes(link_rel: str, target: str) -> bool:
    """Would a relative symlink at `link_rel` (inside its tree) resolve outside it?"""
    depth = len(Path(link_rel).parent.parts)
    for part in Path(target).parts:
        if part == "..":
            depth -= 1
            if depth < 0:
                return True
        elif part != ".":
            depth += 1
    return False


def _decompress_to(oid: str, src: Path, tmp: str, mode: int, size: int) -> None:
    """Decompress a zstd object into a new file, verifying its hash on the way."""
    hasher = hashing.new_hasher(threaded=size >= hashing.MMAP_THRESHOLD)
    written = 0
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with open(src, "rb") as f:
            reader = zstandard.ZstdDecompressor().stream_reader(f)
            while True:
                chunk = reader.read(hashing.STREAM_CHUNK)
                if not chunk:
                    break
                written += len(chunk)
                if size and written > size:
                    raise CorruptObject(oid, f"expands beyond its recorded {size} bytes", path=src)
                hasher.update(chunk)
                view = memoryview(chunk)
                while view:
                    view = view[os.write(fd, view):]
    except zstandard.ZstdError as exc:
        os.close(fd)
        raise CorruptObject(oid, f"bad zstd frame: {exc}", path=src) from None
    except BaseException:
        os.close(fd)
        raise
    os.close(fd)
    if hasher.hexdigest() != oid:
        raise CorruptObject(oid, "content does not hash to its id", path=src)


def unprotect(path: Path) -> bool:
    """Replace a hardlinked or symlinked file with an independent, writable copy.

    Returns False when the file was already independent and writable.
    """
    st = os.lstat(path)
    if stat_mod.S_ISLNK(st.st_mode):
        src = os.path.realpath(path)
    elif stat_mod.S_ISREG(st.st_mode) and (st.st_nlink > 1 or not st.st_mode & 0o200):
        src = os.fspath(path)
    else:
        return False
    tmp = f"{path.parent}/{TMP_PREFIX}{os.getpid()}-{os.urandom(6).hex()}"
    try:
        if not reflink(src, tmp):
            copy_file(src, tmp, mode=0o644)
        os.chmod(tmp, 0o644 | (0o111 if os.stat(src).st_mode & 0o111 else 0))
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return True


