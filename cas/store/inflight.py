"""In-flight roots: the objects a writer relies on before a root names them (spec/gc.md).

A writer that lets go of the `store` lock between bursts of puts (`tally run` while
its stage command runs) names every object it has put or reused in a file of its own,

    .tally/inflight/<pid>-<8 hex>      one object id (64 lowercase hex) and "\\n" a line

which it holds an exclusive flock(2) on for the file's whole life. gc reads the file
of every live owner as roots; a file whose lock it can take belongs to a dead process
(flock locks die with their holder) and is deleted under gc's exclusive store lock.

The file is created under a temp name (`.new-<pid>-<8 hex>`), locked, then renamed
into place, so a file under its final name is locked from the instant it exists: gc
can never mistake a file being created for a dead owner's. It is never fsynced: after
a crash its owner is dead, and a dead owner's file is only deleted.
"""

from __future__ import annotations

import fcntl
import os
import re
from pathlib import Path

from cas.core.fsops import write_all
from cas.core.fsops import unlink_quiet

DIR_NAME = "inflight"  # under .tally/
NEW_PREFIX = ".new-"  # a file being created: not locked yet
# Patterns compiled (and cached by `re`) where gc reads them, not at import: every
# `tally run` imports this module.
NAME_RE = r"\A[0-9]+-[0-9a-f]{8}\Z"
LINE_RE = rb"(?m)^[0-9a-f]{64}$"
# The stage process (cas.live) appends to its runner's file: this names it.
ENV_INFLIGHT = "TALLY_INFLIGHT"


class InFlight:
    """An open in-flight file: append ids, then close (which removes it if ours)."""

    def __init__(self, path: Path, fd: int, *, owned: bool) -> None:
        self.path = path
        self._fd: int | None = fd
        self.owned = owned

    @classmethod
    def create(cls, store_dir: Path) -> "InFlight":
        """A new file of this process under `store_dir/inflight/`, locked exclusive.

        Raises:
            OSError: the directory cannot be written.
        """
        d = Path(store_dir) / DIR_NAME
        name = f"{os.getpid()}-{os.urandom(4).hex()}"
        tmp = d / (NEW_PREFIX + name)
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | os.O_CLOEXEC
        try:
            fd = os.open(tmp, flags, 0o644)
        except FileNotFoundError:
            d.mkdir(parents=True, exist_ok=True)
            fd = os.open(tmp, flags, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)  # our own new file: never blocks
            os.rename(tmp, d / name)  # the final name appears already locked
        except BaseException:
            os.close(fd)
            unlink_quiet(tmp)
            raise
        return cls(d / name, fd, owned=True)

    @classmethod
    def attach(cls, path: str | os.PathLike[str]) -> "InFlight | None":
        """Another process's file (the runner's, for a stage process), to append to;
        None when it is gone (its owner gave up or died: nothing will name our objects)."""
        try:
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
        except OSError:
            return None
        return cls(Path(path), fd, owned=False)

    def append(self, oids: list[str]) -> None:
        """Append `oids`, one a line, in one write(2) where it fits (O_APPEND: lines of
        several processes never interleave within a write)."""
        if oids and self._fd is not None:
            write_all(self._fd, "".join(o + "\n" for o in oids).encode("ascii"))

    def close(self) -> None:
        """Let go: remove the file when it is ours (before its lock drops with the
        descriptor, so no one ever sees it unlocked under its name)."""
        if self._fd is None:
            return
        if self.owned:
            unlink_quiet(self.path)
        os.close(self._fd)
        self._fd = None


class Scan:
    """What gc found in `.tally/inflight/`."""

    def __init__(self) -> None:
        self.live: dict[str, list[str]] = {}  # name -> ids, in file order, deduplicated
        self.dead: list[str] = []  # names of files whose owner is gone (removed if asked)


def scan(store_dir: Path, *, remove_dead: bool, stale_new_s: float = 60.0,
         now_s: float | None = None) -> Scan:
    """Read every live in-flight file; find (and with `remove_dead`, delete) dead ones.

    `remove_dead` only under the exclusive store lock (gc's pass B). A `.new-` file is
    unlocked only for an instant; one older than `stale_new_s` (by the filesystem's
    clock `now_s`) was left by a process killed while creating it, and is deleted too.
    Unrecognized names are ignored. A line that is not a complete id (the last one
    of a file whose owner is writing it, outside the lock) is ignored.
    """
    out = Scan()
    d = Path(store_dir) / DIR_NAME
    try:
        names = sorted(os.listdir(d))
    except FileNotFoundError:
        return out
    for name in names:
        p = d / name
        new = name.startswith(NEW_PREFIX)
        if not new and not re.match(NAME_RE, name):
            continue
        try:
            fd = os.open(p, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            continue  # its owner removed it meanwhile
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                if not new:
                    out.live[name] = _read_ids(fd)
                continue
            if new:
                if remove_dead and now_s is not None and \
                        now_s - os.fstat(fd).st_mtime > stale_new_s:
                    unlink_quiet(p)
                continue
            out.dead.append(name)
            if remove_dead:
                unlink_quiet(p)  # while we hold its lock
        finally:
            os.close(fd)
    return out


def _read_ids(fd: int) -> list[str]:
    chunks = []
    while True:
        b = os.read(fd, 1 << 20)
        if not b:
            break
        chunks.append(b)
    data = b"".join(chunks)
    end = data.rfind(b"\n")  # a last line without its newline is still being written
    return list(dict.fromkeys(m.decode("ascii") for m in re.findall(LINE_RE, data[:end + 1])))

