"""Failpoints: named steps of a write protocol where a crash test kills the process.

A crash test runs a tally command with TALLY_FAILPOINT=NAME (or NAME:N, the N-th time
this process reaches NAME; default the first) in its environment. When the command
reaches that step it is SIGKILLed there, exactly as a power cut or `kill -9` would
stop it, and the test checks what it left on disk: a crash at every step of a
protocol, deterministically, instead of kills at timed delays that may land anywhere.
Unset (always, outside tests) a failpoint costs one string comparison.

The variable is read once, at import; `arm` sets it in a running process (for a test
that runs the code in-process and forks children that inherit it). Hits are counted
per process: a forked child starts from its parent's count.

The failpoints (NAME: where; the process is killed *after* the step named):

    store:temp-written    cas/store/writer.py: one object's temp file is complete (not durable)
    store:temp-synced     a Writer batch's temp files are durable; nothing linked yet
    store:linked          one more object of the batch is linked into place (published)
    store:dirs-synced     the batch's shard directories are durable: the batch is done
    pointer:temp-written  cas/objects/pointer.py: the new pointer is in its temp file
    pointer:temp-synced   the temp file is durable; the old pointer is still in place
    pointer:renamed       the new pointer replaced the old one (directory not yet durable)
    pointer:dir-synced    the rename is durable: the pointer write is done
    checkout:temp-written cas/workspace/materialize.py: a file is whole under its temp name
    checkout:renamed      one more file took its final name
    restore:temp-written  cas/experiments/restore.py: a loose file is whole under its temp name
    restore:renamed       one more loose file took its final name
    forked:before-report  cas/core/forked.py: a child did its work, reported nothing
    forked:half-reported  a child wrote the first half of its report (a torn report)
    gc:locked, gc:refs-dropped, gc:delete, gc:level, gc:swept   cas/gc/ (spec/gc.md)
    executor:started|published|outcome, worker:...   cas/workers/executor.py
    push:before-pack, push:after-pack, push:before-large, push:after-large,
    push:before-index, push:after-index   cas/remote/upload.py: a push's packs, large
                          objects and index (spec/remote.md, "Read and write ordering")
    push:before-ref, push:after-ref       cas/sync/exps.py: an experiment's remote ref
    fetch:after-publish   cas/sync/data.py: fetched objects published, no ref written yet

The store's and the pointer's failpoints take the whole command: its process group
when the command leads it (started in its own session, as the crash tests start it)
or the command's forked helpers do, so no hashing child outlives the crash.
"""

from __future__ import annotations

import os
import signal

ENV = "TALLY_FAILPOINT"

_want = ""  # the armed failpoint's name ("" never matches one)
_nth = 1  # the hit that kills
_hits = 0  # hits of _want in this process so far


def arm(spec: str | None) -> None:
    """Arm the failpoint `spec` (`NAME` or `NAME:N`) in this process, or disarm (None
    or ""), as TALLY_FAILPOINT does at import. A test seam: for code run in-process
    whose forked children (executors, hashing or summarizing children) are to die."""
    global _want, _nth, _hits
    spec = spec or ""
    name, _, nth = spec.rpartition(":")
    if nth.isdigit() and name:
        _want, _nth = name, max(1, int(nth))
    else:
        _want, _nth = spec, 1
    _hits = 0


def armed() -> str | None:
    """The armed failpoint's name, or None."""
    return _want or None


def failpoint(name: str, *, parent: bool = False, group: bool = False) -> None:
    """SIGKILL this process here if the failpoint `name` is armed and this is its N-th hit.

    Args:
        parent: kill the parent first (a forked helper and the process that forked it
            die together, as in a crash of the machine).
        group: kill the whole process group instead, when this process or its parent
            leads it (a command started in its own session, and its forked helpers);
            otherwise this process alone.
    """
    if name != _want:
        return
    global _hits
    _hits += 1
    if _hits != _nth:
        return
    if group:
        pgrp = os.getpgrp()
        if pgrp in (os.getpid(), os.getppid()):
            os.killpg(pgrp, signal.SIGKILL)
    if parent:
        os.kill(os.getppid(), signal.SIGKILL)
    os.kill(os.getpid(), signal.SIGKILL)


arm(os.environ.get(ENV))

__all__ = ["ENV", "arm", "armed", "failpoint"]
