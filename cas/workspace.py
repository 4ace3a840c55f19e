"""Snapshot a file or directory of the workspace into ids (and, when asked, the store).

A snapshot is three passes, so the expensive middle one runs in parallel:

1. walk: one scandir per directory, one lstat per entry (no other syscalls);
2. hash (and store): only the files the stat cache does not vouch for, in chunks on a
   thread pool (reads, writes and BLAKE3 release the GIL);
3. build: trees bottom-up, children before parents, so every tree is stored after
   the objects it names (the write-ordering invariant) and an unchanged directory
   encodes to the same bytes and id as before.

Names tally never snapshots: `.git` and `.tally` directories (another repository or
store nested inside data is not data).
"""

from __future__ import annotations

import os
import stat as stat_mod
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from . import hashing, tree
from .errors import NotFound, UsageError, from_os_error
from .statcache import StatCache
from .checkout import TMP_PREFIX
from .store import Writer

SKIP_NAMES = frozenset({".git", ".tally"})
CHUNK = 256  # files per pool task: amortizes the executor's per-task cost
WORKERS = max(2, min(4, os.cpu_count() or 1))  # threads for large files

Progress = Callable[[int, int], None]  # (done, total) files hashed


@dataclass(frozen=True, slots=True)
class Snapshot:
    """What a path hashed to."""

    oid: str
    is_dir: bool
    size: int  # bytes (a directory: total of its files)
    files: int  # regular files (1 for a file)
    mode: int  # 0o644/0o755 for a file, 0 for a directory
    hashed: int  # files read this time (the rest came from the stat cache)


@dataclass(slots=True)
class _File:
    name: str
    path: str
    st: os.stat_result
    kind: int  # tree.FILE or tree.SYMLINK
    oid: str | None = None


def file_mode(st: os.stat_result) -> int:
    """The tree mode of a regular file: executable by anyone -> 0o755, else 0o644."""
    return 0o755 if st.st_mode & 0o111 else 0o644


def snapshot(path: Path, *, statcache: StatCache, writer: Writer | None = None,
             ingest: str = "copy", progress: Progress | None = None,
             trees: dict[str, tree.Tree] | None = None, objects: str | None = None) -> Snapshot:
    """Hash the file or directory at `path`; with a writer, store it too.

    Args:
        path: an existing regular file or directory (symlinks inside a directory are
            recorded as links; `path` itself is followed).
        statcache: vouches for unchanged files; gains entries for the files hashed.
        writer: when given, every blob and tree is put into its store.
        ingest: how blobs enter the store ("copy", "reflink", "hardlink").
        progress: called with (done, total) as files are hashed.
        trees: when given, receives every tree built, by id (to diff without storing).
        objects: the store's objects directory, so symlinks into it (symlink link mode)
            count as the files they stand for (taken from `writer` when given).
    Raises:
        NotFound: `path` does not exist.
        UsageError: a special file (socket, fifo, device) or a name that is not UTF-8.
    """
    clock = statcache.now_ns()  # before any stat: see statcache's racy rule
    try:
        st = os.stat(path)
    except OSError as exc:
        raise from_os_error(exc, path=path, doing="reading") from None
    if stat_mod.S_ISREG(st.st_mode):
        f = _File(path.name, os.fspath(path), st, tree.FILE)
        hashed = _hash_files([f], statcache, writer, ingest, progress, clock)
        return Snapshot(f.oid, False, st.st_size, 1, file_mode(st), hashed)  # type: ignore[arg-type]
    if not stat_mod.S_ISDIR(st.st_mode):
        raise UsageError(f"{path} is not a regular file or directory", path=path)

    objects_dir = os.path.abspath(writer.store.objects) if writer is not None else objects
    dirs = _walk(os.fspath(path), objects_dir)
    all_files = [f for d in dirs for f in d[2]]
    hashed = _hash_files(all_files, statcache, writer, ingest, progress, clock)

    # Build bottom-up: _walk lists parents before children, so reverse it.
    built: dict[str, tuple[str, int, int]] = {}  # dir path -> (oid, bytes, files)
    for dpath, subdirs, files in reversed(dirs):
        entries = [tree.Entry(f.name, f.kind, f.oid, f.st.st_size,  # type: ignore[arg-type]
                              file_mode(f.st) if f.kind == tree.FILE else 0) for f in files]
        sub_files = {}
        for name in subdirs:
            oid, nbytes, nfiles = built.pop(f"{dpath}/{name}")
            entries.append(tree.Entry(name, tree.DIR, oid, nbytes, 0))
            sub_files[name] = nfiles
        t = tree.make(entries, subtree_files=sub_files, names_checked=True)
        data = tree.encode(t)
        oid = writer.put_bytes(data, compress=True) if writer else hashing.hash_bytes(data)
        if trees is not None:
            trees[oid] = t
        built[dpath] = (oid, t.total_bytes, t.total_files)
    oid, nbytes, nfiles = built[os.fspath(path)]
    return Snapshot(oid, True, nbytes, nfiles, 0, hashed)


def _walk(root: str, objects_dir: str | None = None) -> list[tuple[str, list[str], list[_File]]]:
    """Every directory below `root` (pre-order) with its subdirectory names and files.

    A symlink into `objects_dir` (symlink link mode) stands for the object it names:
    it is recorded as that file, with the id read from the link (objects are named by
    their hash and never change; fsck verifies them).
    """
    prefix = None if objects_dir is None else objects_dir.rstrip("/") + "/"
    out = []
    stack = [root]
    while stack:
        d = stack.pop()
        subdirs: list[str] = []
        files: list[_File] = []
        try:
            it = os.scandir(d)
        except OSError as exc:
            raise from_os_error(exc, path=d, doing="listing a directory") from None
        with it:
            for ent in it:
                name = ent.name
                if name in SKIP_NAMES or name.startswith(TMP_PREFIX):
                    continue  # nested repos/stores, and a crashed checkout's temp files
                _check_name(name, ent.path)
                if ent.is_dir(follow_symlinks=False):
                    subdirs.append(name)
                    continue
                st = ent.stat(follow_symlinks=False)
                if stat_mod.S_ISREG(st.st_mode):
                    files.append(_File(name, ent.path, st, tree.FILE))
                elif stat_mod.S_ISLNK(st.st_mode):
                    f = _File(name, ent.path, st, tree.SYMLINK)
                    if prefix is not None:
                        _resolve_object_link(f, prefix)
                    files.append(f)
                else:
                    raise UsageError(f"{ent.path} is a special file (socket, fifo or device)",
                                     path=ent.path, hint="move it out of the tracked directory")
        out.append((d, subdirs, files))
        stack.extend(f"{d}/{n}" for n in reversed(subdirs))
    # Pre-order with children after parents is all that build needs; keep parents first.
    return out


def _resolve_object_link(f: _File, prefix: str) -> None:
    target = os.readlink(f.path)
    if not target.startswith(prefix):
        return
    shard, _, rest = target[len(prefix):].partition("/")
    oid = shard + rest
    if len(shard) == 2 and hashing.is_oid(oid):
        try:
            f.st = os.stat(f.path)  # the object's size and (read-only) mode
        except FileNotFoundError:
            return  # dangling: record it as the link it is
        f.kind = tree.FILE
        f.oid = oid


def _check_name(name: str, path: str) -> None:
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        raise UsageError(f"file name is not valid UTF-8: {path!r}", path=path,
                         hint="rename the file; tally stores names as UTF-8") from None


def _hash_files(files: list[_File], statcache: StatCache, writer: Writer | None, ingest: str,
                progress: Progress | None, clock: int) -> int:
    """Fill in every file's oid, from the stat cache or by reading it. Returns files read."""
    todo = []
    for f in files:
        if f.oid is not None:
            continue  # a link to an object: its id is its name
        if f.kind == tree.SYMLINK:
            target = os.readlink(f.path).encode("utf-8", "surrogateescape")
            f.oid = writer.put_bytes(target, compress=False) if writer else hashing.hash_bytes(target)
            continue
        oid = statcache.lookup(f.st)
        if oid is not None and (writer is None or writer.put_file(f.path, known_oid=oid) == oid):
            f.oid = oid
        else:
            todo.append(f)
    if not todo:
        return 0
    total = len(todo)
    counter = _Counter(total, progress)
    # Many small files: per-file Python work holds the GIL, so threads do not scale;
    # forked processes do. Large files stay on threads: BLAKE3's own thread pool
    # (rayon) does not survive fork, and big reads release the GIL anyway.
    small = [f for f in todo if f.st.st_size < hashing.MMAP_THRESHOLD]
    large = [f for f in todo if f.st.st_size >= hashing.MMAP_THRESHOLD]
    if len(small) >= PROCESS_MIN_FILES and PROCESSES > 1 and hasattr(os, "fork"):
        _in_processes(small, writer, ingest, counter)
    else:
        # Serial: per-file work on small files is GIL-bound, and a thread pool only
        # adds contention (measured on 2 cores).
        for i in range(0, len(small), CHUNK):
            counter.add(_work(small[i:i + CHUNK], writer, ingest))
    if len(large) == 1:
        counter.add(_work(large, writer, ingest))
    elif large:
        # Large files release the GIL while reading and hashing: threads overlap I/O.
        with ThreadPoolExecutor(max_workers=WORKERS) as pool:
            for n in pool.map(lambda f: _work([f], writer, ingest), large):
                counter.add(n)
    if ingest == "hardlink" and writer is not None:
        # Linking made each file read-only, which moved its ctime past `clock`: these
        # are our own writes, recorded like a checkout's after the clock tick passes.
        # Publishing links the inode once more and unlinks its temp name, moving the
        # ctime again: publish first, then take the stat that is recorded.
        writer.flush()
        for f in todo:
            st = os.stat(f.path)
            if (st.st_ino, st.st_size, st.st_mtime_ns) == (f.st.st_ino, f.st.st_size, f.st.st_mtime_ns):
                f.st = st  # only the ctime moved; anything else is not vouched for
        newest = max(max(f.st.st_mtime_ns, f.st.st_ctime_ns) for f in todo)
        clock = statcache.wait_past(newest)
    statcache.record([(f.st, f.oid) for f in todo], clock_ns=clock)  # type: ignore[misc]
    return total


PROCESSES = os.cpu_count() or 1
PROCESS_MIN_FILES = 2048  # below this, forking costs more than it saves


class _Counter:
    def __init__(self, total: int, progress: Progress | None) -> None:
        self.total, self.done, self.progress = total, 0, progress

    def add(self, n: int) -> None:
        self.done += n
        if self.progress:
            self.progress(self.done, self.total)


def _work(chunk: list[_File], writer: Writer | None, ingest: str) -> int:
    for f in chunk:
        try:
            if writer is not None:
                f.oid = writer.put_file(f.path, ingest=ingest)
                if ingest == "hardlink":
                    f.st = os.stat(f.path)  # chmod 0444 moved its ctime
            else:
                f.oid = hashing.hash_file(f.path, size=f.st.st_size)
        except FileNotFoundError:
            raise NotFound(f"{f.path} vanished while it was being read", path=f.path,
                           hint="something else is changing this directory; rerun when it is done") from None
    return len(chunk)


@dataclass(frozen=True, slots=True)
class _Stat:
    """The stat fields a snapshot uses, rebuilt from a child process's report."""

    st_dev: int
    st_ino: int
    st_size: int
    st_mtime_ns: int
    st_ctime_ns: int
    st_mode: int


def _in_processes(files: list[_File], writer: Writer | None, ingest: str, counter: _Counter) -> None:
    """Hash (and store) `files` in forked children, one contiguous shard each.

    Each child stores through its own Writer and flushes it (sync, then link) before
    reporting, so every blob is published before the parent builds a tree naming it.
    """
    import msgpack

    n = min(PROCESSES, max(1, len(files) // (PROCESS_MIN_FILES // 2)))
    bounds = [len(files) * k // n for k in range(n + 1)]
    children = []
    try:
        for k in range(n):
            shard = files[bounds[k]:bounds[k + 1]]
            r, w = os.pipe()
            pid = os.fork()
            if pid == 0:  # child: never returns
                os.close(r)
                _child(shard, writer, ingest, w)
            os.close(w)
            children.append((pid, r, shard))
        for pid, r, shard in children:
            with os.fdopen(r, "rb") as pipe:
                payload = pipe.read()
            _, status = os.waitpid(pid, 0)
            pid = -1
            try:
                msg = msgpack.unpackb(payload, raw=False)
            except ValueError:
                msg = None
            if not msg or msg[0] != "ok":
                _raise_child_error(msg, status)
            for f, row in zip(shard, msg[1]):
                f.oid = row[0]
                if len(row) > 1:
                    f.st = _Stat(*row[1:])  # type: ignore[assignment]
            counter.add(len(shard))
    except BaseException:
        for pid, r, _ in children:
            try:
                os.kill(pid, 9)
                os.waitpid(pid, 0)
            except (ProcessLookupError, ChildProcessError):
                pass
        raise


def _child(shard: list[_File], writer: Writer | None, ingest: str, w: int) -> None:
    import msgpack

    code = 0
    try:
        rows = []
        if writer is not None:
            from .store import FileStore
            store = FileStore(writer.store.root, options=writer.store.options)
            with store.writer() as mine:
                _work(shard, mine, ingest)
        else:
            _work(shard, None, ingest)
        for f in shard:
            if ingest == "hardlink" and writer is not None:
                st = f.st
                rows.append([f.oid, st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns,
                             st.st_ctime_ns, st.st_mode])
            else:
                rows.append([f.oid])
        payload = msgpack.packb(["ok", rows])
    except BaseException as exc:  # report everything, including Ctrl-C, to the parent
        code = 1
        payload = msgpack.packb(["err", type(exc).__name__, str(exc), getattr(exc, "path", None)])
    try:
        view = memoryview(payload)
        while view:
            view = view[os.write(w, view):]
    finally:
        os._exit(code)


def _raise_child_error(msg: list | None, status: int) -> None:
    from . import errors

    if msg and msg[0] == "err":
        cls = getattr(errors, msg[1], None)
        if msg[1] == "KeyboardInterrupt":
            raise KeyboardInterrupt
        if isinstance(cls, type) and issubclass(cls, errors.TallyError):
            exc = cls.__new__(cls)
            errors.TallyError.__init__(exc, msg[2], path=msg[3])
            raise exc
        raise errors.TallyError(f"{msg[1]}: {msg[2]}", path=msg[3])
    raise errors.TallyError(f"a hashing worker process died (wait status {status})",
                            hint="rerun the command; nothing half-written was published")
