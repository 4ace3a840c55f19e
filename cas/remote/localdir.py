"""A remote that is a directory: local, or a mounted network filesystem.

    /mnt/team/store/            the remote's root (created on first write if its
      <keys>                    parent exists, so an unmounted mount point is
      .tmp/<pid>-<8 hex>-<n>    noticed rather than filled); temp files, same
                                filesystem, renamed into place

A write is a temp file in `.tmp/`, fsynced, renamed over the key, and the key's
directory fsynced: readers see the old state or the whole new file, and a power cut
keeps what was acknowledged. `create` links the temp file to the key, which fails
when the key exists: atomic, so two pushers can never both create one ref. Reads
open with O_NOFOLLOW; listing never follows symlinks and lists regular files only.
"""

from __future__ import annotations

import errno
import itertools
import os
import stat as stat_mod

from cas.core.errors import NotFound, RemoteDenied, RemoteError, StoreError, TallyError
from cas.core.fsops import copy_fd, fsync_dir, unlink_quiet
from cas.remote.backend import Backend, Entry, missing

TMP_DIR = ".tmp"


class DirBackend(Backend):
    """Keys as files under `root`."""

    atomic_create = True

    def __init__(self, root: str | os.PathLike[str], *, url: str | None = None) -> None:
        self.root = os.path.abspath(os.fspath(root))
        self.url = url or self.root
        self._prefix = f"{os.getpid()}-{os.urandom(4).hex()}"
        self._n = itertools.count()

    # -- paths ---------------------------------------------------------------------
    def path(self, key: str) -> str:
        return f"{self.root}/{key}"

    def _tmp(self) -> str:
        d = f"{self.root}/{TMP_DIR}"
        name = f"{d}/{self._prefix}-{next(self._n)}"
        return name

    def _ensure_dir(self, d: str) -> None:
        if os.path.isdir(d):
            return
        if not os.path.isdir(os.path.dirname(self.root)):
            raise RemoteError(f"{self.root} does not exist, nor does its parent",
                              path=self.root, hint="mount the remote, or fix its URL "
                              "(`tally remote modify NAME url ...`)")
        os.makedirs(d, exist_ok=True)

    def _stage(self, data: bytes | None, src: str | None = None, size: int = 0, *,
               durable: bool = True) -> str:
        """A temp file holding `data` (or a copy of the file `src`), fsynced if `durable`."""
        self._ensure_dir(f"{self.root}/{TMP_DIR}")
        tmp = self._tmp()
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o444)
        try:
            if src is not None:
                with open(src, "rb", buffering=0) as f:
                    if copy_fd(f.fileno(), fd, size) != size:
                        raise StoreError("a file changed size while it was sent", path=src)
            else:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
            if durable:
                os.fsync(fd)
        except BaseException:
            os.close(fd)
            unlink_quiet(tmp)
            raise
        os.close(fd)
        return tmp

    def _place(self, tmp: str, key: str, *, exclusive: bool, durable: bool = True) -> bool:
        final = self.path(key)
        d = os.path.dirname(final)
        try:
            self._ensure_dir(d)
            if exclusive:
                try:
                    os.link(tmp, final)
                except FileExistsError:
                    return False
            else:
                os.replace(tmp, final)
            if durable:
                fsync_dir(d)
            return True
        finally:
            unlink_quiet(tmp)

    # -- Backend -------------------------------------------------------------------
    def _read(self, key: str, max_size: int) -> bytes:
        fd = os.open(self.path(key), os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            st = os.fstat(fd)
            if not stat_mod.S_ISREG(st.st_mode):
                raise FileNotFoundError(errno.ENOENT, "not a regular file", self.path(key))
            parts, left = [], max_size + 1
            while left > 0 and (chunk := os.read(fd, min(left, 1 << 24))):
                parts.append(chunk)
                left -= len(chunk)
            return b"".join(parts)
        finally:
            os.close(fd)

    def _read_range(self, key: str, start: int, length: int) -> bytes:
        fd = os.open(self.path(key), os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            parts, pos, left = [], start, length
            while left > 0 and (chunk := os.pread(fd, min(left, 1 << 24), pos)):
                parts.append(chunk)
                pos += len(chunk)
                left -= len(chunk)
            return b"".join(parts)
        finally:
            os.close(fd)

    def _write(self, key: str, data: bytes, durable: bool) -> None:
        self._place(self._stage(data, durable=durable), key, exclusive=False, durable=durable)

    def _upload(self, key: str, path: str, size: int, jobs: int, durable: bool) -> None:
        self._place(self._stage(None, src=path, size=size, durable=durable), key,
                    exclusive=False, durable=durable)

    def barrier(self) -> None:
        # One syncfs(2) for a whole push's packs and large objects, and their names,
        # instead of an fsync per file and directory: the index that names them is
        # written durably after it.
        from cas.core.fsops import syncfs
        try:
            self.call(self.root, lambda: syncfs(self.root))
        except NotFound:
            pass  # nothing was written

    def _download(self, key: str, path: str, size: int, jobs: int) -> None:
        src = os.open(self.path(key), os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o444)
            try:
                copy_fd(src, fd, size)
            finally:
                os.close(fd)
        finally:
            os.close(src)

    def _create(self, key: str, data: bytes) -> bool:
        return self._place(self._stage(data), key, exclusive=True)

    def _list(self, prefix: str) -> list[Entry]:
        base = self.path(prefix.rstrip("/")) if prefix else self.root
        out: list[Entry] = []
        for dirpath, dirnames, filenames in os.walk(base):
            if dirpath == self.root:
                dirnames[:] = [d for d in dirnames if d != TMP_DIR]
            rel = os.path.relpath(dirpath, self.root)
            rel = "" if rel == "." else rel.replace(os.sep, "/") + "/"
            for name in filenames:
                try:
                    st = os.lstat(os.path.join(dirpath, name))
                except FileNotFoundError:
                    continue  # deleted while we listed
                if stat_mod.S_ISREG(st.st_mode):
                    out.append(Entry(rel + name, st.st_size, st.st_mtime))
        return out

    def _delete(self, key: str) -> None:
        p = self.path(key)
        os.unlink(p)
        d = os.path.dirname(p)
        fsync_dir(d)
        # Empty directories of refs and shards go with their last key (best effort).
        while d != self.root and d.startswith(self.root + "/"):
            try:
                os.rmdir(d)
            except OSError:
                break
            d = os.path.dirname(d)

    def classify(self, exc: BaseException, key: str) -> TallyError | None:
        if not isinstance(exc, OSError):
            return None
        where = self.where(key)
        code = exc.errno
        if code in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP):
            return missing(self, key)
        if code in (errno.ENOSPC, errno.EDQUOT):
            return RemoteError(f"the remote is full (no space left on its device) while writing "
                               f"{where}", path=where, hint="free space on the remote (e.g. "
                               "`tally gc --remote NAME`) and rerun; nothing was half-published")
        if code == errno.EROFS:
            return RemoteDenied(f"the remote is read-only ({where})", path=where,
                                hint="mount it read-write, or push to another remote")
        if code in (errno.EACCES, errno.EPERM):
            return RemoteDenied(f"permission denied on the remote ({where})", path=where,
                                hint="check the ownership and permissions of the remote directory")
        if code in (errno.EIO, errno.ETIMEDOUT, errno.EAGAIN, errno.ESTALE):
            return RemoteError(f"{exc.strerror} on the remote ({where})", path=where,
                               transient=True)
        return RemoteError(f"{exc.strerror or exc} on the remote ({where})", path=where)



__all__ = ["DirBackend", "TMP_DIR"]
