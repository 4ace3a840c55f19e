"""Hashing (and storing) many files at once: the engine behind every snapshot.

Files the stat cache vouches for are not read. The rest are read once each: many
small files in forked child processes (per-file Python work holds the GIL, so
threads do not scale, processes do), large files on threads (BLAKE3's own pool does
not survive fork, and big reads release the GIL), a few files serially. Each child
stores through its own Writer and publishes before it reports, so every blob exists
before the parent builds a tree naming it. What was hashed is recorded in the stat
cache with the clock reading taken before the files were stat'ed (the racy rule).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Callable

from cas.core import hashing
from cas.objects import tree
from cas.core.errors import NotFound

if TYPE_CHECKING:
    from cas.workspace.statcache import StatCache
    from cas.store.writer import Writer

Progress = Callable[[int, int], None]  # (done, total) files hashed

class FileToHash:
    """One non-directory entry of a directory being snapshotted; `oid` is filled in here."""

    __slots__ = ("name", "path", "st", "kind", "oid", "clock")

    def __init__(self, name: str, path: str, st, kind: int, clock: int) -> None:
        self.name, self.path, self.st, self.kind = name, path, st, kind
        self.oid: str | None = None
        self.clock = clock  # the clock reading taken before `st` (the racy rule's bound)



CHUNK = 256  # files per pool task: amortizes the executor's per-task cost
WORKERS = max(2, min(4, os.cpu_count() or 1))  # threads for large files


def hash_files(files: list[FileToHash], statcache: StatCache, writer: Writer | None, ingest: str,
                progress: Progress | None) -> int:
    """Fill in every file's oid, from the stat cache or by reading it. Returns files read."""
    todo = []
    regular = []
    for f in files:
        if f.oid is not None:
            continue  # a link to an object: its id is its name
        if f.kind == tree.SYMLINK:
            target = os.readlink(f.path).encode("utf-8", "surrogateescape")
            f.oid = writer.put_bytes(target, compress=False) if writer else hashing.hash_bytes(target)
            continue
        regular.append(f)
    for f, oid in zip(regular, statcache.lookup_many([f.st for f in regular])):
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
        from concurrent.futures import ThreadPoolExecutor  # ~5 ms to import: only when used
        # Large files release the GIL while reading and hashing: threads overlap I/O.
        with ThreadPoolExecutor(max_workers=WORKERS) as pool:
            for n in pool.map(lambda f: _work([f], writer, ingest), large):
                counter.add(n)
    if ingest == "hardlink" and writer is not None:
        # Linking made each file read-only, which moved its ctime past the clock: these
        # are our own writes, recorded like a checkout's after the clock tick passes.
        # Publishing links the inode once more and unlinks its temp name, moving the
        # ctime again: publish first, then take the stat that is recorded.
        writer.flush()
        moved = []
        for f in todo:
            st = os.stat(f.path)
            if (st.st_ino, st.st_size, st.st_mtime_ns) == (f.st.st_ino, f.st.st_size, f.st.st_mtime_ns):
                f.st = st  # only the ctime moved; anything else is not vouched for
                moved.append(f)
        if moved:
            clock = statcache.wait_past(max(max(f.st.st_mtime_ns, f.st.st_ctime_ns) for f in moved))
            for f in moved:
                f.clock = clock  # the reading after their (re)stat, as for a checkout
    by_clock: dict[int, list] = {}
    for f in todo:
        by_clock.setdefault(f.clock, []).append((f.st, f.oid))
    for clock, items in by_clock.items():
        statcache.record(items, clock_ns=clock)
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


def _work(chunk: list[FileToHash], writer: Writer | None, ingest: str) -> int:
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


class Stat:
    """The stat fields a snapshot uses, rebuilt from a listing or a child process's report."""

    __slots__ = ("st_dev", "st_ino", "st_size", "st_mtime_ns", "st_ctime_ns", "st_mode")

    def __init__(self, dev: int, ino: int, size: int, mtime_ns: int, ctime_ns: int, mode: int) -> None:
        self.st_dev, self.st_ino, self.st_size = dev, ino, size
        self.st_mtime_ns, self.st_ctime_ns, self.st_mode = mtime_ns, ctime_ns, mode


def _in_processes(files: list[FileToHash], writer: Writer | None, ingest: str, counter: _Counter) -> None:
    """Hash (and store) `files` in forked children, one contiguous shard each.

    Each child stores through its own Writer and flushes it (sync, then link) before
    reporting, so every blob is published before the parent builds a tree naming it.
    """
    import msgpack

    from cas.core import forked

    n = min(PROCESSES, max(1, len(files) // (PROCESS_MIN_FILES // 2)))
    bounds = [len(files) * k // n for k in range(n + 1)]
    shards = [files[bounds[k]:bounds[k + 1]] for k in range(n)]
    children: list[forked.Child] = []
    try:
        for shard in shards:
            children.append(forked.start(lambda shard=shard: _child(shard, writer, ingest)))
        for child, shard in zip(children, shards):
            payload, status = child.result()
            try:
                msg = msgpack.unpackb(payload, raw=False)
            except ValueError:
                msg = None
            if not msg or msg[0] != "ok":
                _raise_child_error(msg, status)
            for f, row in zip(shard, msg[1]):
                f.oid = row[0]
                if len(row) > 1:
                    f.st = Stat(*row[1:])  # type: ignore[assignment]
            counter.add(len(shard))
    except BaseException:
        forked.stop_all(children)
        raise


def _child(shard: list[FileToHash], writer: Writer | None, ingest: str) -> bytes:
    """A child's work: its shard hashed (and stored, then published), as a report."""
    import msgpack

    try:
        rows = []
        if writer is not None:
            from cas.store.objectstore import FileStore
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
        return msgpack.packb(["ok", rows])
    except BaseException as exc:  # report everything, including Ctrl-C, to the parent
        return msgpack.packb(["err", type(exc).__name__, str(exc), getattr(exc, "path", None)])


def _raise_child_error(msg: list | None, status: int) -> None:
    from cas.core import errors

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

