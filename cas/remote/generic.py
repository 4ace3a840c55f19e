"""Any other URL, through fsspec: `memory://`, `ssh://` (sshfs), `webdav://`, ...

One backend for every fsspec filesystem. Writes go to a temp key beside the final
one and are moved into place where the filesystem can move (`fs.mv`), so readers
of a filesystem with atomic rename never see a prefix; on a filesystem without one,
the move is a copy and delete, and spec/remote.md's threat model says what a
crash then leaves (a key whose bytes fail their hash: detected on read).

`create` cannot be atomic in general: it checks for the key, then writes. Two
pushers racing to create the same ref key with different content are still never
silent (spec/remote.md, "Remote refs"): ref keys carry the record id, so both land
and readers report the clash.
"""

from __future__ import annotations

import errno
import itertools
import os
from typing import Any

from cas.core.errors import RemoteDenied, RemoteError, RemoteUnreachable, TallyError, UsageError
from cas.remote.backend import Backend, Entry, missing

TMP_PREFIX = ".tmp/"


class GenericBackend(Backend):
    """Keys under `root` of an fsspec filesystem."""

    atomic_create = False

    def __init__(self, url: str, *, options: dict[str, Any] | None = None) -> None:
        try:
            import fsspec
            from fsspec.core import split_protocol
        except ImportError:
            raise UsageError(f"remote {url} needs fsspec (pip install fsspec)") from None
        self.url = url.rstrip("/")
        protocol, path = split_protocol(self.url)
        try:
            self.fs = fsspec.filesystem(protocol or "file", **(options or {}))
        except (ImportError, ValueError) as exc:
            raise UsageError(f"cannot open remote {url}: {exc}",
                             hint="an ssh:// remote needs `pip install sshfs`, gs:// gcsfs, ...") from None
        self.root = self.fs._strip_protocol(self.url).rstrip("/")
        self._prefix = f"{os.getpid()}-{os.urandom(4).hex()}"
        self._n = itertools.count()

    def path(self, key: str) -> str:
        return f"{self.root}/{key}" if key else self.root

    def _tmp_key(self) -> str:
        return f"{TMP_PREFIX}{self._prefix}-{next(self._n)}"

    def _read(self, key: str, max_size: int) -> bytes:
        with self.fs.open(self.path(key), "rb") as f:
            return f.read(max_size + 1)

    def _read_range(self, key: str, start: int, length: int) -> bytes:
        return self.fs.cat_file(self.path(key), start=start, end=start + length)

    def _put(self, key: str, fn) -> None:
        tmp = self._tmp_key()
        fn(self.path(tmp))
        try:
            self.fs.mv(self.path(tmp), self.path(key))
        except BaseException:
            try:
                self.fs.rm_file(self.path(tmp))
            except Exception:  # noqa: BLE001 - cleanup after a failure already raised
                pass
            raise

    def _write(self, key: str, data: bytes, durable: bool) -> None:
        self._put(key, lambda p: self.fs.pipe_file(p, data))

    def _upload(self, key: str, path: str, size: int, jobs: int, durable: bool) -> None:
        self._put(key, lambda p: self.fs.put_file(path, p))

    def _download(self, key: str, path: str, size: int, jobs: int) -> None:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o444)
        with os.fdopen(fd, "wb") as out, self.fs.open(self.path(key), "rb") as f:
            left = size
            while left > 0 and (chunk := f.read(min(left, 1 << 22))):
                out.write(chunk)
                left -= len(chunk)

    def _create(self, key: str, data: bytes) -> bool:
        if self.fs.exists(self.path(key)):
            return False
        self._write(key, data, True)
        return True

    def _list(self, prefix: str) -> list[Entry]:
        base = self.path(prefix.rstrip("/"))
        try:
            found = self.fs.find(base, detail=True, withdirs=False)
        except FileNotFoundError:
            return []
        out = []
        cut = len(self.root) + 1
        for p, info in found.items():
            p = p.lstrip("/") if not self.root.startswith("/") else p
            rel = p[cut:] if p.startswith(self.root + "/") else p
            if rel.startswith(TMP_PREFIX) or info.get("type") == "directory":
                continue
            out.append(Entry(rel, int(info.get("size") or 0), _mtime(info)))
        return out

    def _delete(self, key: str) -> None:
        self.fs.rm_file(self.path(key))

    def classify(self, exc: BaseException, key: str) -> TallyError | None:
        where = self.where(key)
        if isinstance(exc, FileNotFoundError):
            return missing(self, key)
        if isinstance(exc, PermissionError):
            return RemoteDenied(f"permission denied on the remote ({where})", path=where)
        if isinstance(exc, (ConnectionError, TimeoutError)):
            return RemoteUnreachable(f"cannot reach the remote {self.url}: {exc}", path=self.url,
                                     transient=True)
        if isinstance(exc, OSError):
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                return RemoteError(f"the remote is full while writing {where}", path=where)
            if exc.errno == errno.EROFS:
                return RemoteDenied(f"the remote is read-only ({where})", path=where)
            return RemoteError(f"{exc} ({where})", path=where)
        return None


def _mtime(info: dict[str, Any]) -> float:
    for k in ("mtime", "LastModified", "last_modified", "created"):
        v = info.get(k)
        if v is None:
            continue
        if hasattr(v, "timestamp"):
            return float(v.timestamp())
        try:
            return float(v)
        except (TypeError, ValueError):
            continue
    return 0.0


__all__ = ["GenericBackend"]
