"""One stage command as a process, and the signals that reach it.

A stage command runs as `/bin/sh -c CMD` in the stage's wdir, in a process group of
its own, with stdin closed and stdout and stderr appended to the run's log (and
echoed to our stderr on request). While it runs, SIGINT and SIGTERM sent to tally
are forwarded to that group: the first one as is (with SIGKILL after KILL_GRACE
seconds if the command ignores it), the second as SIGKILL; a third stops tally too
(KeyboardInterrupt), after killing the group. The runner (cas/pipeline/runner.py) decides
what the outcome means: the stage is `interrupted` and no later stage starts.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

from cas.core.errors import from_os_error

SHELL = "/bin/sh"
KILL_GRACE = 10.0  # seconds between forwarding a signal and SIGKILL of the stage


class Signals:
    """Forwards SIGINT/SIGTERM to the running stage's process group."""

    def __init__(self) -> None:
        self.received: int | None = None
        self.count = 0
        self.pgid: int | None = None
        self._old: dict[int, Any] = {}
        self._timer: threading.Timer | None = None

    def __enter__(self) -> "Signals":
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)
        if self._timer is not None:
            self._timer.cancel()

    def _handle(self, signum: int, frame: object) -> None:
        self.count += 1
        self.received = self.received or signum
        if self.count >= 3:
            # The user insists: stop waiting for anything, even the record.
            self._kill(signal.SIGKILL)
            raise KeyboardInterrupt
        if self.count == 2:
            self._kill(signal.SIGKILL)
            return
        self._kill(signum)
        if self.pgid is not None:
            self._timer = threading.Timer(KILL_GRACE, self._kill, (signal.SIGKILL,))
            self._timer.daemon = True
            self._timer.start()

    def attach(self, pgid: int) -> None:
        """The stage's process group exists: from now on signals go to it.

        A signal that arrived while the stage was being started (after the runner last
        looked, before the group existed) found no group to forward to: it is
        forwarded now, as the handler would have (a second one as SIGKILL).
        """
        self.pgid = pgid
        if self.count >= 2:
            self._kill(signal.SIGKILL)
        elif self.count == 1 and self._timer is None:
            self._kill(self.received or signal.SIGINT)
            self._timer = threading.Timer(KILL_GRACE, self._kill, (signal.SIGKILL,))
            self._timer.daemon = True
            self._timer.start()

    def _kill(self, sig: int) -> None:
        if self.pgid is not None:
            try:
                os.killpg(self.pgid, sig)
            except (ProcessLookupError, PermissionError):
                pass


def run(name: str, cmd: str, *, cwd: Path, env: dict[str, str], log, echo: bool,
        sigs: Signals) -> int:
    """Run `cmd` with SHELL -c in `cwd`, in its own process group; return its exit code.

    stdout and stderr go to `log` (a binary file opened unbuffered), and also to our
    stderr when `echo`. While it runs, `sigs` forwards SIGINT/SIGTERM to its group.
    If this raises (a third Ctrl-C), the group is killed first: no stage is left behind.
    """
    try:
        proc = subprocess.Popen([SHELL, "-c", cmd], cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE if echo else log.fileno(),
                                stderr=subprocess.STDOUT, process_group=0)
    except OSError as exc:
        raise from_os_error(exc, path=cwd, doing=f"starting stage {name!r}") from None
    sigs.attach(proc.pid)
    try:
        if echo:
            assert proc.stdout is not None
            fd = proc.stdout.fileno()
            while True:
                chunk = os.read(fd, 65536)
                if not chunk:
                    break
                log.write(chunk)
                try:
                    sys.stderr.buffer.write(chunk)
                    sys.stderr.flush()
                except (OSError, ValueError):
                    pass
            proc.stdout.close()
        return proc.wait()
    finally:
        sigs.pgid = None
        if proc.poll() is None:  # an exception (third Ctrl-C): leave no stage behind
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait()
