"""What a remote is made of: keys holding bytes, behind one small interface.

A backend stores opaque byte strings under relative POSIX keys (`packs/<id>.pack`,
`refs/exps/<commit>/<name>/<id>`) and knows nothing of tally's formats: layout and
formats are cas/remote/layout.py, cas/remote/packfile.py and cas/remote/refstore.py.
Three implementations:

    localdir.py   a local or mounted directory (`/mnt/team/store`, `file://...`)
    cloud.py      S3 and S3-compatible endpoints, GCS, Azure, through obstore
                  (measured faster than s3fs on many small requests: bench/s3libs.py)
    generic.py    any other fsspec URL (`memory://`, `ssh://` via sshfs, ...)

Every call goes through `Backend.call`, which turns the library's exceptions into
tally's (`NotFound` for a missing key, `RemoteDenied`, `RemoteUnreachable`,
`RemoteError`) and retries the transient ones with exponential backoff, so each
implementation only says how to classify what its library raises.

Contract (tests/contract/test_remote_backends.py runs it against all three):

- `write` and `upload` are atomic: a reader sees the whole new content or the old
  state, never a prefix. Keys tally writes are content-addressed, so an overwrite
  only ever writes the same bytes again.
- `create` writes only if the key does not exist, where the backend can say so
  atomically (`Backend.atomic_create`); elsewhere it checks first, which two
  writers can race (spec/remote.md says what that costs).
- `read` refuses more than `max_size` bytes: every byte from a remote is hostile.
- `list` returns every key under a prefix with its size and modification time by
  the remote's own clock; keys are relative to the remote's root.
"""

from __future__ import annotations

import os
import time
from abc import ABC, abstractmethod
from typing import Callable, NamedTuple, TypeVar

from cas.core.errors import FormatError, NotFound, RemoteError, TallyError

T = TypeVar("T")

RETRIES = 5  # attempts after the first, for a transient failure
BACKOFF_S = 0.25  # seconds before the first retry; doubled each time
BACKOFF_MAX_S = 8.0  # seconds: the longest wait between two attempts
# Large transfers are cut into parts this big, `jobs` of them in flight (S3 needs
# parts of at least 5 MiB; 8 MiB is the AWS CLI's default too).
PART_SIZE = 8 * 1024 * 1024  # bytes


class Entry(NamedTuple):
    """One key as listed."""

    key: str  # relative to the remote's root, POSIX
    size: int  # bytes
    mtime: float  # seconds since the epoch, by the remote's clock


class Backend(ABC):
    """Keys and bytes at one URL. Thread-safe: transfers call it from many threads."""

    url: str = ""
    atomic_create: bool = False  # create() is one atomic check-and-write

    # -- what each implementation provides -----------------------------------------
    @abstractmethod
    def _read(self, key: str, max_size: int) -> bytes: ...

    @abstractmethod
    def _read_range(self, key: str, start: int, length: int) -> bytes: ...

    @abstractmethod
    def _write(self, key: str, data: bytes, durable: bool) -> None: ...

    @abstractmethod
    def _upload(self, key: str, path: str, size: int, jobs: int, durable: bool) -> None: ...

    @abstractmethod
    def _download(self, key: str, path: str, size: int, jobs: int) -> None: ...

    @abstractmethod
    def _create(self, key: str, data: bytes) -> bool: ...

    @abstractmethod
    def _list(self, prefix: str) -> list[Entry]: ...

    @abstractmethod
    def _delete(self, key: str) -> None: ...

    @abstractmethod
    def classify(self, exc: BaseException, key: str) -> TallyError | None:
        """The tally error `exc` means (None: not the library's; let it through).
        A missing key must be NotFound; a failure worth retrying a RemoteError with
        `transient=True`."""

    # -- the public, checked and retried interface --------------------------------
    def read(self, key: str, *, max_size: int) -> bytes:
        """The whole content of `key`. Raises NotFound, FormatError when it holds
        more than `max_size` bytes, RemoteError."""
        data = self.call(key, lambda: self._read(key, max_size))
        if len(data) > max_size:
            raise FormatError(f"{self.where(key)} holds {len(data)} bytes, more than the "
                              f"{max_size} it may", path=self.where(key))
        return data

    def read_range(self, key: str, start: int, length: int) -> bytes:
        """Exactly `length` bytes of `key` from `start`. Raises NotFound, RemoteError,
        FormatError when the key ends before them (a truncated file)."""
        if length == 0:
            return b""
        data = self.call(key, lambda: self._read_range(key, start, length))
        if len(data) != length:
            raise FormatError(f"{self.where(key)} is truncated: bytes {start}..{start + length} "
                              f"asked, {len(data)} returned", path=self.where(key),
                              hint="the file was cut short on the remote; push its objects again")
        return data

    def write(self, key: str, data: bytes, *, durable: bool = True) -> None:
        """Store `data` under `key`, atomically (overwrites). With `durable` False the
        write may sit in a cache until the next barrier() (packs before their index)."""
        self.call(key, lambda: self._write(key, data, durable))

    def upload(self, key: str, path: str, *, jobs: int = 4, durable: bool = True) -> None:
        """Store the local file `path` under `key`, in parallel parts when large."""
        size = os.stat(path).st_size
        self.call(key, lambda: self._upload(key, path, size, jobs, durable))

    def barrier(self) -> None:
        """Make every write acknowledged so far durable (a no-op where an acknowledged
        write already is: object stores)."""

    def download(self, key: str, path: str, *, size: int, jobs: int = 4) -> None:
        """Write the `size` bytes of `key` into the new local file `path` (parallel
        ranged reads when large). Raises FormatError when the key holds fewer."""
        self.call(key, lambda: self._download(key, path, size, jobs))
        got = os.stat(path).st_size
        if got != size:
            raise FormatError(f"{self.where(key)} holds {got} bytes, the index says {size}",
                              path=self.where(key))

    def create(self, key: str, data: bytes) -> bool:
        """Write `key` only if it does not exist; False when it did."""
        return self.call(key, lambda: self._create(key, data))

    def list(self, prefix: str) -> list[Entry]:
        """Every key under `prefix` (a directory-like prefix ending in '/'), sorted."""
        return sorted(self.call(prefix, lambda: self._list(prefix)))

    def delete(self, key: str) -> None:
        """Remove `key`; an absent key is not an error."""
        try:
            self.call(key, lambda: self._delete(key))
        except NotFound:
            pass

    def where(self, key: str) -> str:
        """`key` as a user reads it: the remote's URL joined with the key."""
        return f"{self.url.rstrip('/')}/{key}"

    def close(self) -> None:
        """Let go of connections (idempotent)."""

    # -- retries -------------------------------------------------------------------
    def call(self, key: str, fn: Callable[[], T]) -> T:
        """Run `fn`, mapping the library's errors to tally's and retrying transient
        ones RETRIES times with exponential backoff (BACKOFF_S, doubling, capped)."""
        delay = BACKOFF_S
        for attempt in range(RETRIES + 1):
            try:
                return fn()
            except TallyError:
                raise
            except Exception as exc:  # noqa: BLE001 - classified right here
                err = self.classify(exc, key)
                if err is None:
                    raise
                if not (isinstance(err, RemoteError) and err.transient) or attempt == RETRIES:
                    raise err from exc
            time.sleep(delay)
            delay = min(delay * 2, BACKOFF_MAX_S)
        raise AssertionError("unreachable")


def missing(backend: Backend, key: str) -> NotFound:
    return NotFound(f"{backend.where(key)} does not exist", path=backend.where(key))


__all__ = ["Backend", "Entry", "missing", "RETRIES", "BACKOFF_S", "PART_SIZE"]
