"""Filesystem primitives: clone, link, copy-and-hash, durability.

Everything here is a thin, well-commented wrapper over one syscall family, so the
store and checkout layers can state their protocols in terms of these.
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat
from pathlib import Path
from typing import NamedTuple

from cas.core import hashing
from cas.core.failpoints import failpoint

FICLONE = 0x40049409  # _IOW(0x94, 9, int): clone a whole file (Btrfs, XFS reflink=1, bcachefs)
# Errors meaning "this filesystem or pair of files cannot be cloned": fall back, do not fail.
_NO_CLONE = {errno.EOPNOTSUPP, errno.ENOTTY, errno.EXDEV, errno.EINVAL, errno.ENOSYS,
             errno.EPERM, errno.EBADF}
# Devices on which a clone already failed in this process: do not ask again per file.
_no_reflink_devs: set[int] = set()

_libc = None


def reflink(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> bool:
    """Clone `src` to a new file `dst` sharing its blocks (copy-on-write).

    Returns False, leaving no `dst`, when the filesystem cannot clone. `dst` must not
    exist. Raises OSError only for real failures (permissions, no space, missing src).
    """
    sfd = os.open(src, os.O_RDONLY)
    try:
        dev = os.fstat(sfd).st_dev
        if dev in _no_reflink_devs:
            return False
        dfd = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            fcntl.ioctl(dfd, FICLONE, sfd)
        except OSError as exc:
            os.close(dfd)
            os.unlink(dst)
            if exc.errno in _NO_CLONE:
                if exc.errno != errno.EXDEV:
                    _no_reflink_devs.add(dev)
                return False
            raise
        os.close(dfd)
        return True
    finally:
        os.close(sfd)


def forget_reflink_failures() -> None:
    """Forget the devices on which a clone failed in this process, so the next
    `reflink` asks the filesystem again (after a remount; tests start each from none)."""
    _no_reflink_devs.clear()


def can_reflink(directory: str | os.PathLike[str]) -> bool:
    """Probe whether files in `directory` can be cloned (creates and removes two files)."""
    d = Path(directory)
    a = d / f".reflink-probe-{os.getpid()}-a"
    b = d / f".reflink-probe-{os.getpid()}-b"
    try:
        a.write_bytes(b"probe")
        return reflink(a, b)
    except OSError:
        return False
    finally:
        for p in (a, b):
            try:
                p.unlink()
            except FileNotFoundError:
                pass


def copy_file(src: str | os.PathLike[str], dst: str | os.PathLike[str], *, mode: int = 0o644) -> None:
    """Copy `src` to a new file `dst` with the kernel's in-kernel copy where possible."""
    with open(src, "rb", buffering=0) as fin:
        fd = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        try:
            copy_fd(fin.fileno(), fd, os.fstat(fin.fileno()).st_size)
        finally:
            os.close(fd)


def copy_fd(src_fd: int, dst_fd: int, size: int) -> int:
    """Copy `size` bytes from `src_fd` into the empty `dst_fd`; return the bytes copied.

    copy_file_range(2) keeps the bytes in the kernel; where it is refused (another
    filesystem, an old kernel) the copy starts over through a buffer, from a clean
    destination, so a partial kernel copy never stays in front of it.
    """
    offset = 0
    try:
        while offset < size:
            n = os.copy_file_range(src_fd, dst_fd, size - offset)
            if n == 0:
                break
            offset += n
        return offset
    except OSError as exc:
        if exc.errno not in (errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
            raise
    os.ftruncate(dst_fd, 0)
    os.lseek(dst_fd, 0, os.SEEK_SET)
    os.lseek(src_fd, 0, os.SEEK_SET)
    offset = 0
    while chunk := os.read(src_fd, hashing.STREAM_CHUNK):
        write_all(dst_fd, chunk)
        offset += len(chunk)
    return offset


def syncfs(path: str | os.PathLike[str]) -> None:
    """Flush every dirty page and inode of the filesystem holding `path` to disk.

    One syncfs(2) makes a whole batch of temp files durable for the cost of one
    journal commit, instead of one fsync per object (git's "batch" fsync mode does the
    same). Falls back to sync(2) where syncfs is unavailable.
    """
    global _libc
    if _libc is None:
        import ctypes  # lazily: ctypes.util costs ~9 ms of start-up for every command
        import ctypes.util
        _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    fd = os.open(path, os.O_RDONLY)
    try:
        if getattr(_libc, "syncfs", None) is None or _libc.syncfs(fd) != 0:
            os.sync()
    finally:
        os.close(fd)


def fsync_dir(path: str | os.PathLike[str]) -> None:
    """fsync a directory so the names linked into it survive a power cut."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems refuse fsync on directories; durability is best effort there
    finally:
        os.close(fd)


def fsync_file(path: str | os.PathLike[str]) -> None:
    """fsync the file at `path` (its data and the inode that names it)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


FSYNC_THREADS = 8  # concurrent fsyncs in fsync_all


def fsync_all(paths: list[str], *, directories: bool = False) -> None:
    """fsync every path in `paths` (files, or directories best effort as fsync_dir),
    concurrently when there are several, and return when all are durable.

    Concurrent fsyncs share journal commits (ext4's jbd2 and XFS's log batch the
    waiters): six small objects cost about one commit instead of six in a row, which
    on a busy machine is the difference (13 -> 8 ms measured at load 7; equal idle).
    Raises the first error a file's fsync raised, after every thread has finished.
    """
    one = fsync_dir if directories else fsync_file
    if len(paths) <= 1:
        for p in paths:
            one(p)
        return
    import threading

    errors: list[BaseException] = []

    def work(part: list[str]) -> None:
        for p in part:
            try:
                one(p)
            except BaseException as exc:  # noqa: BLE001 - handed to the caller below
                errors.append(exc)
                return

    n = min(FSYNC_THREADS, len(paths))
    parts = [paths[i::n] for i in range(n)]
    threads = [threading.Thread(target=work, args=(part,), daemon=True) for part in parts[1:]]
    for t in threads:
        t.start()
    work(parts[0])
    for t in threads:
        t.join()
    if errors:
        raise errors[0]


class Staged(NamedTuple):
    """A file's new content written to `tmp` beside `path`, not yet renamed over it."""

    tmp: str
    path: str


def stage_file(path: str | os.PathLike[str], data: bytes, *, mode: int = 0o644) -> Staged:
    """Write `data` to a new temp file in `path`'s directory (not synced, not visible
    under `path`): the first half of an atomic replace, finished by commit_staged."""
    path = os.fspath(path)
    head, name = os.path.split(path)
    tmp = os.path.join(head, f".{name}.tmp-{os.getpid()}-{os.urandom(4).hex()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        write_all(fd, data)
    except BaseException:
        os.close(fd)
        os.unlink(tmp)
        raise
    os.close(fd)
    return Staged(tmp, path)


def commit_staged(staged: list[Staged], *, synced: bool = False, durable: bool = True,
                  failpoints: str = "") -> None:
    """Finish atomic replaces: make the temp files durable (all at once, unless `synced`
    says the caller already did), rename each over its path in order, then fsync their
    directories together. A failed rename removes the temp files not yet renamed.

    Several files committed together share their barriers (two rounds of concurrent
    fsyncs for any number of files, instead of two sequential fsyncs per file).
    `failpoints`: a name (`pointer`) whose failpoints (cas/core/failpoints.py) mark
    the steps: NAME:temp-synced, NAME:renamed (per file), NAME:dir-synced.
    """
    if durable and not synced:
        fsync_all([s.tmp for s in staged])
    if failpoints:
        failpoint(f"{failpoints}:temp-synced", group=True)
    for i, s in enumerate(staged):
        try:
            os.replace(s.tmp, s.path)
        except BaseException:
            discard_staged(staged[i:])
            raise
        if failpoints:
            failpoint(f"{failpoints}:renamed", group=True)
    if durable:
        fsync_all(sorted({os.path.dirname(s.path) or "." for s in staged}), directories=True)
    if failpoints:
        failpoint(f"{failpoints}:dir-synced", group=True)


def discard_staged(staged: list[Staged]) -> None:
    """Remove the temp files of staged writes that will not be committed."""
    for s in staged:
        try:
            os.unlink(s.tmp)
        except FileNotFoundError:
            pass


def atomic_write(path: str | os.PathLike[str], data: bytes, *, mode: int = 0o644,
                 durable: bool = True, failpoints: str = "") -> None:
    """Replace `path` with `data` atomically: temp file in the same directory, then rename
    (with `durable`: the temp file fsynced before, the directory after). `failpoints`
    names the steps' failpoints: NAME:temp-written, then commit_staged's."""
    staged = stage_file(path, data, mode=mode)
    if failpoints:
        failpoint(f"{failpoints}:temp-written", group=True)
    commit_staged([staged], durable=durable, failpoints=failpoints)


def unlink_quiet(path: str | os.PathLike[str]) -> bool:
    """Remove the file (or symlink) `path`; absent is fine. True if this call removed it."""
    try:
        os.unlink(path)
        return True
    except FileNotFoundError:
        return False


def remove_tree(path: str | os.PathLike[str]) -> None:
    """rm -rf: a file or symlink (never followed), or a directory and everything in it,
    read-only (protected, hardlinked) entries included; absent is fine.

    Unlinking needs a writable parent directory, never a writable file: a hardlinked
    file *is* a store object, whose mode must stay 0444, so only directories are
    chmodded. Raises OSError for what cannot be removed.
    """
    path = os.fspath(path)
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISDIR(st.st_mode):
        unlink_quiet(path)
        return
    import shutil  # with zlib, bz2 and lzma ~4 ms of import: only for a directory

    def writable(func, p, exc_info):
        try:
            os.chmod(os.path.dirname(p), 0o755)
            if stat.S_ISDIR(os.lstat(p).st_mode):
                os.chmod(p, 0o755)
            func(p)
        except FileNotFoundError:
            pass

    shutil.rmtree(path, onerror=writable)


def write_all(fd: int, data: bytes | memoryview) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]
