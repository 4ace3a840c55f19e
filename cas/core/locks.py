"""Inter-process locks on files under `.tally/locks/`, with who-holds-it reporting.

flock(2) locks vanish with the process that held them, so a SIGKILLed tally never
leaves a stale lock behind. Writers of the store take the `store` lock shared; gc
takes it exclusive, so a sweep never races an add or a run that is publishing. A
workspace lock serializes two `tally run`s in one workspace.

The holder writes its pid, host and command into `<name>.holder` after acquiring, so
a process that has to wait can say who it is waiting for.
"""

from __future__ import annotations

import fcntl
import os
import sys
import time
from pathlib import Path

from cas.core.errors import LockBusy

POLL = 0.05  # seconds between tries while waiting


class Lock:
    """A named flock; use as a context manager after construction."""

    def __init__(self, locks_dir: Path, name: str, *, shared: bool = False,
                 timeout: float = 0.0, purpose: str = "") -> None:
        self.path = Path(locks_dir) / name
        self.holder_path = self.path.with_name(name + ".holder")
        self.shared = shared
        self.timeout = timeout
        self.purpose = purpose or " ".join(sys.argv[:3])
        self._fd: int | None = None

    def acquire(self) -> "Lock":
        """Take the lock, waiting up to `timeout` seconds.

        Raises:
            LockBusy: still held by another process when the time is up; the message
                names the holder's pid, host and command when it recorded them.
        """
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        op = (fcntl.LOCK_SH if self.shared else fcntl.LOCK_EX) | fcntl.LOCK_NB
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                fcntl.flock(fd, op)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    os.close(fd)
                    raise LockBusy(f"{self.path.name} lock is held by {self.holder()}",
                                   path=self.path,
                                   hint="wait for that process to finish, or stop it") from None
                time.sleep(POLL)
        self._fd = fd
        if not self.shared:
            import json

            # os.uname, not socket.gethostname: the same name on POSIX, and `socket`
            # costs ~3 ms of start-up that every `tally run` would pay.
            info = json.dumps({"pid": os.getpid(), "host": os.uname().nodename,
                               "command": self.purpose, "since": time.time()})
            try:
                self.holder_path.write_text(info)
            except OSError:
                pass  # reporting only
        return self

    def holder(self) -> str:
        """A human description of the recorded holder, or 'another process'."""
        import json
        try:
            info = json.loads(self.holder_path.read_text())
            return f"pid {info['pid']} on {info['host']} ({info['command']})"
        except (OSError, ValueError, KeyError, TypeError):
            return "another process"

    def release(self) -> None:
        if self._fd is not None:
            if not self.shared:
                try:  # while still holding the lock: nobody else can have rewritten it
                    self.holder_path.unlink()
                except OSError:
                    pass
            os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = None

    def __enter__(self) -> "Lock":
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()
