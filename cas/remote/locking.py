"""The remote's lock protocol: pushers share, remote gc is exclusive.

    locks/shared-<16 hex>       one per push in progress
    locks/exclusive-<16 hex>    one while a remote gc deletes

A lock file is JSON: {"host", "pid", "purpose", "created"}. Taking a lock is:
write our own lock file, then list `locks/`; if a lock we must exclude is there
(any other lock, for exclusive; an exclusive one, for shared) and not stale, delete
ours and fail with LockBusy naming the holder. Two processes that write at the same
instant both see each other and both back off (restic's protocol): never both in.

A lock is stale, and ignored, when it was last written more than STALE_S ago by
the remote's clock (a holder rewrites its file every REFRESH_S while it runs), or
when it was written on this host by a process that no longer exists. The remote's
clock is read from our own lock file's modification time, so machines with skewed
clocks agree. A stale lock is removed by the next exclusive locker.

Readers (fetch, pull, show --remote) take no lock: the write order guarantees they
see complete objects, and remote gc deletes only what no ref reaches and what is
older than its grace period.
"""

from __future__ import annotations

import json
import os
import threading
import time

from cas.core.errors import LockBusy
from cas.remote import layout
from cas.remote.backend import Backend, Entry

STALE_S = 30 * 60.0  # seconds without a refresh after which a lock is ignored
REFRESH_S = 5 * 60.0  # seconds between two rewrites of a held lock
MAX_LOCK_SIZE = 4096  # bytes


class RemoteLock:
    """A lock on one remote; a context manager."""

    def __init__(self, backend: Backend, *, exclusive: bool, purpose: str = "") -> None:
        self.backend = backend
        self.exclusive = exclusive
        self.purpose = purpose
        self.kind = "exclusive" if exclusive else "shared"
        self.key = f"{layout.LOCKS}{self.kind}-{os.urandom(8).hex()}"
        self.removed_stale: list[str] = []
        self.remote_now = 0.0  # the remote's clock when the lock was taken
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _body(self) -> bytes:
        return json.dumps({"host": os.uname().nodename, "pid": os.getpid(),
                           "purpose": self.purpose, "created": time.time()}).encode()

    def acquire(self) -> "RemoteLock":
        """Take the lock. Raises LockBusy (ours removed first) when excluded."""
        self.backend.write(self.key, self._body())
        entries = self.backend.list(layout.LOCKS)
        mine = next((e for e in entries if e.key == self.key), None)
        now = self.remote_now = mine.mtime if mine is not None else time.time()
        for e in entries:
            if e.key == self.key or not e.key[len(layout.LOCKS):].startswith(("shared-", "exclusive-")):
                continue
            if not self.exclusive and not e.key[len(layout.LOCKS):].startswith("exclusive-"):
                continue
            info = self._info(e)
            if _stale(e, info, now):
                if self.exclusive:
                    self.backend.delete(e.key)
                    self.removed_stale.append(e.key)
                continue
            self.backend.delete(self.key)
            who = f"pid {info.get('pid')} on {info.get('host')} ({info.get('purpose') or '?'})" \
                if info else "another process"
            what = "a remote gc is running" if "exclusive-" in e.key else "a push is in progress"
            raise LockBusy(f"the remote is locked: {what}, by {who}", path=self.backend.where(e.key),
                           hint="wait for it to finish and rerun; a lock left by a crashed "
                                f"process expires after {int(STALE_S // 60)} minutes")
        self._thread = threading.Thread(target=self._refresh, daemon=True)
        self._thread.start()
        return self

    def _info(self, e: Entry) -> dict:
        try:
            data = json.loads(self.backend.read(e.key, max_size=MAX_LOCK_SIZE))
            return data if isinstance(data, dict) else {}
        except Exception:  # noqa: BLE001 - an unreadable lock is someone's: just busy
            return {}

    def _refresh(self) -> None:
        while not self._stop.wait(REFRESH_S):
            try:
                self.backend.write(self.key, self._body())
            except Exception:  # noqa: BLE001 - next try in REFRESH_S; staleness is far off
                pass

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        self.backend.delete(self.key)

    def __enter__(self) -> "RemoteLock":
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def _stale(e: Entry, info: dict, now: float) -> bool:
    if now - e.mtime > STALE_S:
        return True
    if info.get("host") == os.uname().nodename and isinstance(info.get("pid"), int):
        try:
            os.kill(info["pid"], 0)
        except ProcessLookupError:
            return True  # its process is gone: it will never release it
        except PermissionError:
            return False
    return False


__all__ = ["RemoteLock", "STALE_S", "REFRESH_S"]
