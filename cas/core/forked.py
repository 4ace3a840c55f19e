"""Work in forked child processes: each child runs one function and reports bytes.

For Python work that holds the GIL, which threads cannot spread over cores: hashing
many small files (cas/workspace/hashpool.py), decoding many new records (cas/experiments/index.py). A
child inherits the parent's memory, so nothing is sent to it; its only output is the
bytes its function returns, written to a pipe the parent reads. It ends with
os._exit: no atexit handler, no flush of buffers it inherited, nothing that belongs to
the parent. Fork only where no other thread runs: a fork copies the locks it holds.

The caller collects every child it started (result) or stops them (stop_all, on an
error or Ctrl-C); a child is reaped exactly once, so a pid is never signalled after
the system may have given it to another process.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable

from cas.core.failpoints import failpoint


class Child:
    """A started child: its pid and the read end of its report pipe."""

    __slots__ = ("pid", "fd")

    def __init__(self, pid: int, fd: int) -> None:
        self.pid, self.fd = pid, fd

    def result(self) -> tuple[bytes, int]:
        """Everything the child wrote (b"" if it died first) and its wait status."""
        fd, self.fd = self.fd, -1
        with os.fdopen(fd, "rb") as pipe:
            data = pipe.read()
        pid, self.pid = self.pid, -1
        _, status = os.waitpid(pid, 0)
        return data, status


def start(work: Callable[[], bytes]) -> Child:
    """Fork a child that runs `work` and writes what it returns; the parent returns.

    If `work` raises (anything, Ctrl-C included) the child writes nothing and exits
    with status 1: report errors in the returned bytes when the parent must know them.
    """
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns
        code = 1
        try:
            os.close(r)
            payload = work()
            code = 0
            failpoint("forked:before-report")
            view = memoryview(payload)
            half = len(view) // 2
            _write(w, view[:half])
            failpoint("forked:half-reported")  # a torn report: what a kill here leaves
            _write(w, view[half:])
        except BaseException:  # noqa: BLE001 - an empty report says it
            code = 1
        finally:
            os._exit(code)
    os.close(w)
    return Child(pid, r)


def _write(fd: int, view: memoryview) -> None:
    while view:
        view = view[os.write(fd, view):]


def stop_all(children: Iterable[Child]) -> None:
    """Kill and reap every child not collected yet; close their pipes."""
    for c in children:
        if c.fd != -1:
            os.close(c.fd)
            c.fd = -1
        if c.pid != -1:
            pid, c.pid = c.pid, -1
            try:
                os.kill(pid, 9)
                os.waitpid(pid, 0)
            except (ProcessLookupError, ChildProcessError):
                pass


__all__ = ["Child", "start", "stop_all"]
