"""A run in progress in a workspace, for `tally show` (as DVC shows its running workspace row).

A queued run is listed from the queue; a foreground `tally run` has no entry there, so
it writes a small marker for its whole life:

    .tally/running/<pid>-<8 hex>      JSON: {"root", "baseline", "name", "started", "checkpoints"}

held under an exclusive flock(2), as in-flight files are (cas/store/inflight.py): the
file is created under a temp name (`.new-...`), locked, then renamed into place, and
removed (unlink, then close) when the run ends. A run killed with SIGKILL leaves the
file, but not its lock: a reader that can take the lock knows the owner is dead, and
deletes the file instead of listing it. A reader lists the runs of its own work tree
only (`root`): a queued run (the same store, its own run directory) is the queue's.
"""

# No `from __future__ import annotations`: on `tally run`'s start-up path.

import fcntl
import json
import os
from pathlib import Path
from typing import Any, Optional

from cas.core.fsops import unlink_quiet

DIR_NAME = "running"  # under .tally/
NEW_PREFIX = ".new-"


class Marker:
    """This process's marker: create() at the start of a run, close() at its end."""

    __slots__ = ("path", "fd")

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self.fd: Optional[int] = fd

    @classmethod
    def create(cls, store_dir: Path, *, root: Path, baseline: str, name: Optional[str],
               started: int, checkpoints: Path) -> Optional["Marker"]:
        """The marker of a run starting now; None if it cannot be written (the run goes
        on: only `tally show` misses it)."""
        d = Path(store_dir) / DIR_NAME
        final = f"{os.getpid()}-{os.urandom(4).hex()}"
        tmp = d / (NEW_PREFIX + final)
        body = json.dumps({"root": os.fspath(root), "baseline": baseline, "name": name or "",
                           "started": started, "checkpoints": os.fspath(checkpoints)}).encode()
        fd = None
        try:
            d.mkdir(exist_ok=True)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
            fcntl.flock(fd, fcntl.LOCK_EX)
            os.write(fd, body)
            os.rename(tmp, d / final)
        except OSError:
            if fd is not None:
                unlink_quiet(tmp)
                os.close(fd)
            return None
        return cls(d / final, fd)

    def close(self) -> None:
        fd, self.fd = self.fd, None
        if fd is not None:
            unlink_quiet(self.path)  # before the lock goes: no reader sees it "dead"
            os.close(fd)


def live_runs(store_dir: Path, root: Path) -> list[dict[str, Any]]:
    """The runs in progress in the work tree `root`: each marker's fields plus "live"
    (cas.pipeline.livefiles.read_live of the work tree). Dead owners' markers are
    deleted. Never raises for a missing directory or a damaged marker."""
    d = Path(store_dir) / DIR_NAME
    try:
        names = os.listdir(d)
    except OSError:
        return []
    out = []
    for n in sorted(names):
        if n.startswith("."):
            continue
        p = d / n
        try:
            fd = os.open(p, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            continue
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                pass  # held: the run is alive
            else:
                unlink_quiet(p)  # a dead owner's (SIGKILL, power cut)
                continue
            try:
                doc = json.loads(os.read(fd, 1 << 16))
            except ValueError:
                continue
        finally:
            os.close(fd)
        if not isinstance(doc, dict) or doc.get("root") != os.fspath(root):
            continue
        from cas.pipeline.livefiles import read_live

        doc["live"] = read_live(root, checkpoints=doc.get("checkpoints") or None)
        out.append(doc)
    return out


__all__ = ["Marker", "live_runs", "DIR_NAME"]
