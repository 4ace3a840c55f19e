"""Where a revision's plot files are read from: a tree in the store, or a directory.

An experiment's files are read straight from its workspace tree in the store (the
record's `workspace`, spec/experiments.md): nothing is restored, nothing in the
workspace is touched. The workspace itself, and a running queued experiment's run
directory, are read from disk.

Paths are POSIX and relative to the revision's root; a path with an empty, `.` or
`..` component, or under `.git/` or `.tally/`, names nothing (None), so a plot
definition can never read outside the project.
"""

from __future__ import annotations

import os
import stat as stat_mod
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, Iterator

from cas.core.errors import FormatError, ObjectMissing
from cas.objects import tree as tree_mod

MAX_FILES_PER_DIR_PLOT = 10_000  # files a directory plot expands to, at most
RESERVED_TOP = (".git", ".tally")


def safe_parts(path: str) -> list[str] | None:
    """The components of a relative POSIX path, or None when it could escape the root."""
    parts = path.strip("/").split("/") if path not in ("", ".") else []
    if path.startswith("/") or "\0" in path or any(p in ("", ".", "..") for p in parts):
        return None
    if parts and parts[0] in RESERVED_TOP:
        return None
    return parts


class Source(ABC):
    """A revision's files, read-only."""

    @abstractmethod
    def read(self, path: str, *, max_size: int) -> bytes | None:
        """The bytes of file `path`, or None when there is no such file (or it is
        larger than `max_size`, or unsafe)."""

    @abstractmethod
    def kind(self, path: str) -> str | None:
        """"file", "dir", or None when `path` names nothing (or is unsafe)."""

    @abstractmethod
    def files_under(self, path: str) -> list[str]:
        """Every file below directory `path`, sorted, as paths from the root."""

    def top_dirs(self) -> list[str]:
        """The directories at the top level (live directories are looked for there)."""
        return [p for p in self.files_under_top() if self.kind(p) == "dir"]

    @abstractmethod
    def files_under_top(self) -> list[str]:
        """Names at the top level."""


class TreeSource(Source):
    """The files of a tree in the store (an experiment's workspace tree)."""

    def __init__(self, store: Any, root: str) -> None:
        self.store = store
        self.root = root
        self._tree = tree_mod.CachedLoader(tree_mod.reader(store.get))

    def entry(self, path: str) -> tree_mod.Entry | None:
        parts = safe_parts(path)
        if not parts:
            return None
        node = self.root
        for i, part in enumerate(parts):
            e = self._tree(node).get(part)
            if e is None:
                return None
            if i == len(parts) - 1:
                return e
            if e.kind != tree_mod.DIR:
                return None
            node = e.oid
        return None

    def read(self, path: str, *, max_size: int) -> bytes | None:
        e = self.entry(path)
        if e is None or e.kind != tree_mod.FILE or e.size > max_size:
            return None
        try:
            return self.store.get(e.oid, max_size=max_size)
        except ObjectMissing:
            return None

    def kind(self, path: str) -> str | None:
        if safe_parts(path) == []:
            return "dir"
        e = self.entry(path)
        if e is None:
            return None
        return "dir" if e.kind == tree_mod.DIR else "file" if e.kind == tree_mod.FILE else None

    def files_under(self, path: str) -> list[str]:
        e = self.entry(path)
        if e is None or e.kind != tree_mod.DIR:
            return []
        out = []
        for p, entry in tree_mod.walk(e.oid, self._tree, path.strip("/") + "/"):
            if entry.kind == tree_mod.FILE:
                out.append(p)
                if len(out) >= MAX_FILES_PER_DIR_PLOT:
                    break
        return out

    def files_under_top(self) -> list[str]:
        return [e.name for e in self._tree(self.root).entries]

    def entry_size(self, path: str) -> int | None:
        """Bytes of the file or directory at `path` (a directory: all files below)."""
        e = self.entry(path)
        return None if e is None else e.size


class DirSource(Source):
    """The files of a directory on disk (the workspace, a run directory)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def _path(self, path: str) -> str | None:
        parts = safe_parts(path)
        if parts is None:
            return None
        full = os.path.join(self.root, *parts)
        # A symlink may point outside the root: resolve and check where it lands.
        real = os.path.realpath(full)
        root = os.path.realpath(self.root)
        if real != root and not real.startswith(root + os.sep):
            return None
        return full

    def read(self, path: str, *, max_size: int) -> bytes | None:
        full = self._path(path)
        if full is None:
            return None
        try:
            with open(full, "rb") as f:
                if not stat_mod.S_ISREG(os.fstat(f.fileno()).st_mode):
                    return None
                data = f.read(max_size + 1)
        except OSError:
            return None
        return data if len(data) <= max_size else None

    def kind(self, path: str) -> str | None:
        full = self._path(path)
        if full is None:
            return None
        if os.path.isdir(full):
            return "dir"
        return "file" if os.path.isfile(full) else None

    def files_under(self, path: str) -> list[str]:
        full = self._path(path)
        if full is None or not os.path.isdir(full):
            return []
        out = []
        for p in self._walk(full, path.strip("/")):
            out.append(p)
            if len(out) >= MAX_FILES_PER_DIR_PLOT:
                break
        return sorted(out)

    def _walk(self, full: str, rel: str) -> Iterator[str]:
        for dirpath, dirnames, filenames in os.walk(full):
            dirnames[:] = sorted(d for d in dirnames if d not in RESERVED_TOP)
            sub = os.path.relpath(dirpath, full)
            base = rel if sub == "." else f"{rel}/{sub.replace(os.sep, '/')}"
            for f in sorted(filenames):
                yield f"{base}/{f}" if base else f

    def files_under_top(self) -> list[str]:
        try:
            return sorted(n for n in os.listdir(self.root) if n not in RESERVED_TOP)
        except OSError:
            return []


def tree_source(store: Any, workspace: str | None) -> TreeSource | None:
    """A TreeSource for a record's workspace tree, or None when it has none or the
    root tree cannot be read."""
    if workspace is None:
        return None
    src = TreeSource(store, workspace)
    try:
        src.files_under_top()
    except (ObjectMissing, FormatError):
        return None
    return src


__all__ = ["Source", "TreeSource", "DirSource", "tree_source", "safe_parts"]
