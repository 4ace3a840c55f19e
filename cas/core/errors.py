"""One exception root for the whole library, each class carrying its exit code.

Only cli/ prints these. A class's docstring says when it is raised; the instance
carries the message (what went wrong), the path it concerns (where) and a hint
(what to do). Corruption of the store is a different class from a user mistake,
so scripts can tell "you asked for something wrong" from "your data is damaged".

Exit codes (documented in every command's --help, stable for scripts):

    0   success
    1   TallyError: an unexpected failure
    2   UsageError: the command line or an input file is malformed
    3   NotFound: a path, object, experiment or ref that does not exist
    4   Conflict: would overwrite user work, or a name is taken (use --force / another name)
    5   Corruption: an object or file failed its hash or format checks
    6   StoreError: no store, a store of a newer format, not a Git repo, disk full, read-only
    7   LockBusy: another tally process holds the lock
    8   RunFailed: a stage command exited non-zero
    9   RemoteError: a remote is unreachable, refuses us, is missing, full or read-only
    130 Interrupted (Ctrl-C)
"""

from __future__ import annotations

import os
from pathlib import Path


class TallyError(Exception):
    """An unexpected failure inside tally."""

    exit_code = 1

    def __init__(self, message: str, *, path: str | os.PathLike[str] | None = None,
                 hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.path = None if path is None else str(path)
        self.hint = hint

    def __str__(self) -> str:
        return self.message

    def named_by(self, source: str) -> "TallyError":
        """This error, its message saying which file led to it (a pointer, a ref); for
        a failure found deep below the file that asked for the object."""
        if source not in self.message:
            self.message = f"{source}: {self.message}"
            self.args = (self.message,)
        return self

    def to_json(self) -> dict[str, object]:
        """A stable mapping for `--json` error output."""
        return {
            "error": type(self).__name__,
            "message": self.message,
            "path": self.path,
            "hint": self.hint,
            "exit_code": self.exit_code,
        }


class UsageError(TallyError):
    """The command line or an input file (tally.yaml, params, pointer) is malformed."""

    exit_code = 2


class UnsafePath(UsageError):
    """Content names a path tally never touches: outside the work tree, inside `.git` or
    `.tally`, or reached through a symlink (cas/core/paths.py). Nothing was changed."""


class PipelineError(UsageError):
    """tally.yaml / dvc.yaml is malformed: bad schema, a cycle, two stages writing one output."""


class ParamError(UsageError):
    """A params file or a `-S` override is malformed, or names a key that does not exist."""


class NotFound(TallyError):
    """A path, object, experiment or ref that does not exist."""

    exit_code = 3


class ObjectMissing(NotFound):
    """An object id that is not in the store."""

    def __init__(self, oid: str, *, path: str | os.PathLike[str] | None = None,
                 hint: str | None = None) -> None:
        super().__init__(f"object {oid} is not in the store", path=path,
                         hint=hint or "run `tally fsck`; the data may have been gc'd or never stored")
        self.oid = oid


class Conflict(TallyError):
    """The operation would overwrite user work, or a name is already taken."""

    exit_code = 4


class WouldOverwrite(Conflict):
    """Materializing would destroy changes the user made; nothing was touched."""

    def __init__(self, paths: list[str], *, action: str = "checkout") -> None:
        shown = "\n  ".join(paths[:20])
        more = f"\n  ... and {len(paths) - 20} more" if len(paths) > 20 else ""
        super().__init__(
            f"{action} would overwrite {len(paths)} modified path(s):\n  {shown}{more}",
            hint="commit or `tally add` them first, or rerun with --force to discard the changes")
        self.paths = paths


class Corruption(TallyError):
    """An object or a tally file failed its hash or format checks: the data is damaged."""

    exit_code = 5


class FormatError(Corruption):
    """Bytes that do not decode as the format they claim: bad magic, version, length or field."""


class CorruptObject(Corruption):
    """An object whose content does not hash to its id."""

    def __init__(self, oid: str, detail: str, *, path: str | os.PathLike[str] | None = None) -> None:
        super().__init__(f"object {oid} is corrupt: {detail}", path=path,
                         hint="run `tally fsck --repair`, then re-add or re-run what produced it")
        self.oid = oid


class StoreError(TallyError):
    """The store cannot be used: missing, of a newer format, not in Git, full or read-only."""

    exit_code = 6


class LockBusy(TallyError):
    """Another tally process holds a lock this operation needs."""

    exit_code = 7


class RunFailed(TallyError):
    """A stage command exited non-zero (its record and logs are kept)."""

    exit_code = 8


class Interrupted(TallyError):
    """The operation was interrupted (Ctrl-C or a signal); nothing half-written was published."""

    exit_code = 130


def from_os_error(exc: OSError, *, path: str | os.PathLike[str] | Path | None = None,
                  doing: str = "writing") -> TallyError:
    """Translate an OSError into the tally error a user can act on.

    ENOSPC and EROFS mean the store cannot take writes (StoreError); ENOENT is NotFound;
    EACCES/EPERM are StoreError with a permissions hint. Anything else stays a TallyError.
    """
    import errno

    where = path if path is not None else exc.filename
    code = exc.errno
    if code == errno.ENOSPC or code == errno.EDQUOT:
        return StoreError(f"no space left on device while {doing}", path=where,
                          hint="free some space (e.g. `tally gc`) and rerun; nothing was published half-written")
    if code == errno.EROFS:
        return StoreError(f"read-only file system while {doing}", path=where,
                          hint="the store or workspace is mounted read-only")
    if code in (errno.EACCES, errno.EPERM):
        return StoreError(f"permission denied while {doing}", path=where,
                          hint="check ownership and permissions of the path")
    if code == errno.ENOENT:
        return NotFound(f"no such file or directory while {doing}", path=where)
    if code == errno.ENAMETOOLONG:
        shown = str(where)
        shown = shown if len(shown) <= 200 else f"{shown[:100]}...{shown[-60:]}"
        return UsageError(f"a path is longer than the filesystem allows while {doing}: {shown}",
                          hint="the tree nests deeper or names longer than this filesystem takes")
    return TallyError(f"{exc.strerror or exc} while {doing}", path=where)


class RemoteError(TallyError):
    """A remote cannot be used: no such bucket or path, not a tally remote, full, or
    a newer remote format; nothing was published half-written on either side."""

    exit_code = 9

    def __init__(self, message: str, *, path: str | os.PathLike[str] | None = None,
                 hint: str | None = None, transient: bool = False) -> None:
        super().__init__(message, path=path, hint=hint)
        # A failure worth retrying (a dropped connection, a 5xx, a throttle): the
        # remote layer retries these with backoff before it lets one through.
        self.transient = transient


class RemoteUnreachable(RemoteError):
    """The remote did not answer: a wrong endpoint, no network, or it stayed down
    through every retry."""


class RemoteDenied(RemoteError):
    """The remote refused: wrong or missing credentials, no permission, or read-only."""
