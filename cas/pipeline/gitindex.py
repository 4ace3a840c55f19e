"""Git's index is the user's: what a stage command stages there is put back after it.

A stage told it runs inside an experiment the way `dvc exp run` tells it (runner.py)
may stage files: dvclive, for one, `git add`s its dvc.yaml and the untracked files of
its directory at the end, for DVC to commit the experiment, and DVC then resets the
index. A tally run records the experiment itself, so it leaves the index as it found
it instead: after each stage command, every index entry the command added, changed
or removed is set back to what it was (`git update-index --index-info`); entries it
did not touch stay as they are. A `git add` made in another terminal while the
command ran is undone too: whose change an entry is cannot be told.

Cheap when nothing happens: before the command, the index file is hardlinked into
the store's temp directory (Git, dulwich and libgit2 all replace the index by
renaming a new file over it, so the link keeps the old content: no copy, whatever the
index's size) and stat'ed; after it, git runs only when the stat differs. Where no
link can be made (another filesystem), an index up to COPY_MAX bytes is copied.
"""

# No `from __future__ import annotations` and no dataclass: on `tally run`'s start-up path.

import os
from pathlib import Path
from typing import Callable, Optional

from cas.core.errors import TallyError
from cas.core.fsops import unlink_quiet
from cas.workspace import git


def index_file(root: Path) -> Optional[Path]:
    """The index file of the work tree at `root` (`.git/index`, or the gitdir a `.git`
    file names, as in a linked worktree); None when `root` has no `.git`."""
    dot = root / ".git"
    if dot.is_dir():
        return dot / "index"
    try:
        text = dot.read_text("utf-8").strip()
    except (OSError, UnicodeDecodeError):
        return None
    if not text.startswith("gitdir:"):
        return None
    gitdir = Path(text[len("gitdir:"):].strip())
    return (gitdir if gitdir.is_absolute() else root / gitdir) / "index"


COPY_MAX = 64 << 20  # bytes: a larger index that cannot be linked is not guarded


def _stat(path: Path) -> Optional[tuple]:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


class Guard:
    """Around one stage command: take() before it, put_back() after it."""

    __slots__ = ("root", "path", "tmp", "before", "old")

    def __init__(self, root: Path, tmp: Path) -> None:
        self.root = root
        self.path = index_file(root)
        self.tmp = tmp  # a directory for the old index (same filesystem: a hardlink)
        self.before: Optional[tuple] = None
        self.old: Optional[Path] = None  # the old index, linked or copied; None: no index

    def take(self) -> None:
        if self.path is None:
            return
        self.before = _stat(self.path)
        if self.before is None:
            return
        old = self.tmp / f"index-{os.getpid()}-{os.urandom(4).hex()}"
        try:
            os.link(self.path, old)
        except FileNotFoundError:
            self.before = None  # gone meanwhile: as if there were none
            return
        except OSError:
            if self.before[1] > COPY_MAX:
                self.path = None  # too large to copy: not guarded
                return
            try:
                old.write_bytes(self.path.read_bytes())
            except OSError:
                self.path = None
                return
        self.old = old

    def put_back(self, warn: Callable[[str], None]) -> list[str]:
        """Set back every entry the command changed; returns their paths (sorted).
        Never raises: a failure is reported through `warn` and leaves the index as the
        command left it."""
        if self.path is None:
            return []
        try:
            if _stat(self.path) == self.before:
                return []
            return self._put_back()
        except (OSError, TallyError) as exc:
            warn(f"the stage command changed Git's index and tally could not set it back: {exc}")
            return []
        finally:
            if self.old is not None:
                unlink_quiet(self.old)

    def _put_back(self) -> list[str]:
        old: dict[str, tuple[str, str]] = {}
        if self.old is not None:
            old = _entries(git.output(self.root, ["ls-files", "-s", "-z"],
                                      env={"GIT_INDEX_FILE": os.fspath(self.old)}))
        new = _entries(git.output(self.root, ["ls-files", "-s", "-z"]))
        changed = sorted(p for p in old.keys() | new.keys() if old.get(p) != new.get(p))
        if not changed:
            return []
        width = len(next(iter((old or new).values()))[1])  # 40, or 64 in a SHA-256 repository
        lines = []
        for p in changed:
            mode, oid = old.get(p, ("0", "0" * width))  # mode 0: remove the entry
            lines.append(f"{mode} {oid}\t{p}".encode("utf-8", "surrogateescape") + b"\0")
        git.output(self.root, ["update-index", "-z", "--index-info"], input=b"".join(lines))
        return changed


def _entries(out: bytes) -> dict[str, tuple[str, str]]:
    """{path: (mode, oid)} of `git ls-files -s -z`, stage 0 only (a conflict's stages
    are left alone)."""
    got = {}
    for rec in out.split(b"\0"):
        if not rec:
            continue
        meta, _, path = rec.partition(b"\t")
        mode, oid, stage = meta.decode("ascii").split()
        if stage == "0":
            got[os.fsdecode(path)] = (mode, oid)
    return got


__all__ = ["Guard", "index_file"]
