"""A project: a Git work tree with a `.tally/` store at its top.

    <root>/
      .git/
      .tally/
        config            format version and settings (cas/store/config.py)
        objects/          content-addressed objects (cas/store/objectstore.py)
        tmp/              temp files, same filesystem as objects/
        locks/            flock files (cas/core/locks.py)
        statcache.db      the hash memo (cas/workspace/statcache.py)
        refs/             experiment refs (cas/store/refs.py)
        .gitignore        keeps all but config out of Git

Opening a project never runs a subprocess: the root is found by walking up to the
first directory holding `.tally/config`, so `tally status` starts fast.
"""

from __future__ import annotations

import os
from functools import cached_property
from pathlib import Path

from cas.store import config as config_mod
from cas.core.errors import StoreError, UsageError
from cas.core.fsops import atomic_write
from cas.core.locks import Lock
from cas.store.objectstore import FileStore, StoreOptions

STORE_DIR = ".tally"


class Project:
    """An opened project: its root, store and settings.

    A plain class, not a dataclass: `tally run` imports this module, and importing
    `dataclasses` (it pulls in `inspect`) costs ~15 ms of CPU at every start.
    A shallow copy (`copy.copy`) shares the config and the cached store.
    """

    def __init__(self, root: Path, config: config_mod.Config) -> None:
        self.root = root
        self.config = config

    def __repr__(self) -> str:
        return f"{type(self).__name__}(root={self.root!r})"

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return vars(self) == vars(other)

    __hash__ = None  # mutable (cached properties), as the dataclass was

    @property
    def store_dir(self) -> Path:
        return self.root / STORE_DIR

    @cached_property
    def store(self) -> FileStore:
        return FileStore(self.store_dir, options=StoreOptions(
            compression=self.config.get("cache.compression"),
            zstd_level=self.config.get("cache.zstd_level"),
            fsync=self.config.get("cache.fsync")))

    @cached_property
    def statcache(self):  # -> StatCache (import deferred: sqlite3 costs start-up time)
        from cas.workspace.statcache import StatCache
        return StatCache(self.store_dir / "statcache.db", clock_dir=self.store_dir / "tmp")

    def ingest_mode(self) -> str:
        """How data enters the store, from the first usable checkout link type:

        reflink -> "reflink" (clone, when the store's filesystem can); hardlink and
        symlink -> "hardlink" (link the file itself in: zero copies); copy -> "copy".
        Here rather than in cas.workspace.tracking so that `tally run` need not import `add`'s
        module (and what it imports) to learn it.
        """
        for mode in self.config.link_order:
            if mode == "reflink":
                if self._can_reflink:
                    return "reflink"
            elif mode in ("hardlink", "symlink"):
                return "hardlink"
            elif mode == "copy":
                return "copy"
        return "copy"

    @cached_property
    def _can_reflink(self) -> bool:  # probed once per opened project
        from cas.core.fsops import can_reflink

        self.store.ensure_dirs()
        return can_reflink(self.store.tmp)

    def lock(self, name: str, *, shared: bool = False, timeout: float = 0.0,
             purpose: str = "") -> Lock:
        """A lock under `.tally/locks/` (see cas/core/locks.py for the names in use)."""
        return Lock(self.store_dir / "locks", name, shared=shared, timeout=timeout, purpose=purpose)

    def relpath(self, path: str | os.PathLike[str], *, cwd: Path | None = None) -> str:
        """`path` as a POSIX path relative to the root.

        Raises:
            UsageError: the path is outside the project.
        """
        p = Path(path)
        if not p.is_absolute():
            p = (cwd or Path.cwd()) / p
        p = Path(os.path.normpath(p))
        try:
            rel = p.relative_to(self.root)
        except ValueError:
            raise UsageError(f"{path} is outside the project", path=path,
                             hint=f"paths must be inside {self.root}") from None
        if rel.parts and rel.parts[0] in (STORE_DIR, ".git"):
            raise UsageError(f"{path} is inside {rel.parts[0]}/, which tally does not track", path=path)
        return rel.as_posix() if rel.parts else "."


def find_root(start: Path | None = None) -> Path:
    """The nearest directory at or above `start` holding `.tally/config`.

    Raises:
        StoreError: none found (with the hint to run `tally init`).
    """
    here = Path(start or Path.cwd()).resolve()
    for d in (here, *here.parents):
        if (d / STORE_DIR / "config").is_file():
            return d
    raise StoreError("not a tally project (no .tally/ here or in any parent)", path=here,
                     hint="run `tally init` at the root of your Git repository")


def open_project(start: Path | None = None) -> Project:
    """Open the project containing `start` (default: the current directory)."""
    root = find_root(start)
    return Project(root=root, config=config_mod.load(root / STORE_DIR / "config"))


def init_project(start: Path | None = None, *, force: bool = False) -> tuple[Project, bool]:
    """Create `.tally/` at the top of the Git work tree containing `start`.

    Returns (project, created); created is False when a store was already there.
    Raises:
        StoreError: not inside a Git work tree, or an existing store of a newer format.
    """
    from cas.workspace import git

    root = git.find_root(Path(start or Path.cwd()))
    store = root / STORE_DIR
    cfg_path = store / "config"
    if cfg_path.exists() and not force:
        return Project(root=root, config=config_mod.load(cfg_path)), False
    for sub in ("objects", "tmp", "locks", "refs"):
        (store / sub).mkdir(parents=True, exist_ok=True)
    # Objects, refs and caches stay out of Git (pointers and tally.lock are what get
    # committed); the config is shared with the team, as DVC shares .dvc/config.
    atomic_write(store / ".gitignore", b"/*\n!/config\n!/.gitignore\n")
    config_mod.write_new(cfg_path)
    return Project(root=root, config=config_mod.load(cfg_path)), True
