"""Helpers shared by the tests: data builders, tree readers, damage, Git.

Kept free of fixtures so a subprocess (tests/test_crash.py) or a Hypothesis test can
use them too.
"""

from __future__ import annotations

import os
import random
import sqlite3
import stat
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Union

import pytest

# Tiny thresholds (installed by conftest.tiny_thresholds): small data, big-data paths.
MMAP_THRESHOLD = 64 * 1024  # bytes: files above are hashed by mmap + BLAKE3 threads
STREAM_CHUNK = 16 * 1024  # bytes: streamed copies loop many times per file
BATCH_LIMIT = 16  # objects per Writer flush: many flushes per add
POOL_CHUNK = 8  # files per pool task: many tasks per directory
PROCESS_MIN_FILES = 16  # a few dozen files take the forked-worker path of big adds
TINY = [  # (module in cas, name, value): installed by conftest.tiny_thresholds
    ("core.hashing", "MMAP_THRESHOLD", MMAP_THRESHOLD),
    ("core.hashing", "STREAM_CHUNK", STREAM_CHUNK),
    ("store.zstdframe", "THREADED_ZSTD_THRESHOLD", 2 * MMAP_THRESHOLD),
    ("store.writer", "BATCH_LIMIT", BATCH_LIMIT),
    ("workspace.hashpool", "CHUNK", POOL_CHUNK),
    ("workspace.hashpool", "PROCESS_MIN_FILES", PROCESS_MIN_FILES),
]

SLOW = os.environ.get("TALLY_SLOW") == "1"


def slow(fn: Callable) -> Callable:
    """Mark a heavy variant: collected always, run only with TALLY_SLOW=1."""
    fn = pytest.mark.slow(fn)
    return pytest.mark.skipif(not SLOW, reason="heavy variant: set TALLY_SLOW=1")(fn)


def isolate_env(monkeypatch: pytest.MonkeyPatch, *, home: Path, ceiling: Path) -> None:
    """Point HOME, Git's config and identity at throwaway values and drop every
    TALLY_* variable but TALLY_REFLINK_DIR (conftest's clean_env, for every test; a
    module-scoped fixture that runs before it uses this too)."""
    empty = home / ".gitconfig-empty"
    empty.write_bytes(b"")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / ".config"))
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(empty))
    monkeypatch.setenv("GIT_CONFIG_SYSTEM", str(empty))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(ceiling))
    for who in ("AUTHOR", "COMMITTER"):
        monkeypatch.setenv(f"GIT_{who}_NAME", "Tally Test")
        monkeypatch.setenv(f"GIT_{who}_EMAIL", "tally@example.com")
    for var in list(os.environ):
        if var.startswith("TALLY_") and var != "TALLY_REFLINK_DIR":
            monkeypatch.delenv(var)
        elif var in ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "GIT_OBJECT_DIRECTORY",
                     "GIT_ALTERNATE_OBJECT_DIRECTORIES", "GIT_COMMON_DIR", "GIT_NAMESPACE"):
            monkeypatch.delenv(var)


def slow_param(*values: object, id: str | None = None) -> object:
    """A parametrize case of the slow tier: collected always, run only with TALLY_SLOW=1
    (the full-size twin of a case the default run keeps small)."""
    return pytest.param(*values, id=id, marks=(
        pytest.mark.slow, pytest.mark.skipif(not SLOW, reason="heavy variant: set TALLY_SLOW=1")))


def git(root: Path, *args: str, input: bytes | None = None) -> str:
    return subprocess.run(["git", *args], cwd=root, input=input, capture_output=True,
                          check=True).stdout.decode()


# -- building and reading directories -----------------------------------------------------

@dataclass(frozen=True)
class Exe:
    """An executable regular file."""

    data: bytes


@dataclass(frozen=True)
class Link:
    """A symbolic link."""

    target: str


Spec = dict[str, Union[bytes, str, Exe, Link, None]]  # None: an empty directory


def write_tree(root: Path, spec: Spec) -> Path:
    """Create files, executables, symlinks and empty dirs under `root` from `spec`."""
    root.mkdir(parents=True, exist_ok=True)
    for rel, what in spec.items():
        p = root / rel
        if what is None:
            p.mkdir(parents=True, exist_ok=True)
            continue
        p.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(what, Link):
            os.symlink(what.target, p)
        elif isinstance(what, Exe):
            p.write_bytes(what.data)
            p.chmod(0o755)
        else:
            p.write_bytes(what.encode() if isinstance(what, str) else what)
            p.chmod(0o644)
    return root


def read_tree(root: Path) -> dict[str, tuple]:
    """Everything under `root` as {rel: ("file", bytes, executable) | ("link", target)}.

    Directories are implied by their files; symlinks are not followed.
    """
    out: dict[str, tuple] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            rel = p.relative_to(root).as_posix()
            st = os.lstat(p)
            if stat.S_ISLNK(st.st_mode):
                target = os.readlink(p)
                # A symlink-mode checkout links into the store: compare the content.
                if os.path.isabs(target) and "/objects/" in target:
                    out[rel] = ("file", Path(target).read_bytes(),
                                bool(os.stat(target).st_mode & 0o111))
                else:
                    out[rel] = ("link", target)
            elif stat.S_ISREG(st.st_mode):
                out[rel] = ("file", p.read_bytes(), bool(st.st_mode & 0o111))
    return out


def rich_spec(seed: int = 0) -> Spec:
    """A directory with every kind of entry: nested dirs, an executable, an empty file,
    in-tree relative symlinks (one from a subdirectory up), a file above the mmap
    threshold, text (compressible) and random (incompressible) data."""
    rnd = random.Random(seed)
    return {
        "a.txt": "alpha\n" * 50,
        "empty": b"",
        "run.sh": Exe(b"#!/bin/sh\necho hello\n"),
        "big.bin": rnd.randbytes(3 * MMAP_THRESHOLD + 17),
        "sub/b.csv": "x,y\n" + "".join(f"{i},{i * i}\n" for i in range(300)),
        "sub/rand.bin": rnd.randbytes(1500),
        "sub/deeper/c.txt": "gamma\n",
        "sub/deeper/d.txt": "delta\n",
        "sub/link-up": Link("../a.txt"),
        "link-down": Link("sub/b.csv"),
        "other/only.txt": "only\n",
    }


def many_small_files(root: Path, n: int, *, seed: int = 0, per_dir: int = 250) -> int:
    """`n` files of 1-4 KiB spread over subdirectories; returns total bytes."""
    rnd = random.Random(seed)
    total = 0
    for i in range(n):
        d = root / f"d{i // per_dir:03d}"
        if i % per_dir == 0:
            d.mkdir(parents=True, exist_ok=True)
        size = rnd.randint(1024, 4096)
        # Half text-like (compressible), half random: both store forms get exercised.
        data = (f"{i}," * size).encode()[:size] if i % 2 else rnd.randbytes(size)
        (d / f"f{i:06d}.dat").write_bytes(data)
        total += size
    return total


# -- damage -------------------------------------------------------------------------------

def make_writable(path: Path) -> None:
    """chmod u+w everything under `path` (objects are 0444), so it can be removed."""
    for dirpath, dirnames, filenames in os.walk(path):
        for name in dirnames + filenames:
            p = os.path.join(dirpath, name)
            if not os.path.islink(p):
                os.chmod(p, os.stat(p).st_mode | 0o200)


def rewrite(path: Path | str, fn: Callable[[bytes], bytes]) -> None:
    """Replace the bytes of a (read-only) file in place, keeping its mode and inode."""
    p = Path(path)
    mode = p.stat().st_mode
    p.chmod(mode | 0o200)
    data = fn(p.read_bytes())
    with open(p, "r+b") as f:
        f.write(data)
        f.truncate(len(data))
    p.chmod(stat.S_IMODE(mode))


def flip_byte(path: Path | str, offset: int = -1) -> None:
    """XOR one byte of the file (offset from the end when negative)."""
    def flip(b: bytes) -> bytes:
        ba = bytearray(b)
        ba[offset] ^= 0x01
        return bytes(ba)
    rewrite(path, flip)


def truncate(path: Path | str, keep: int) -> None:
    rewrite(path, lambda b: b[:keep])


# -- clocks ---------------------------------------------------------------------------------

def settle(statcache, paths: list[Path]) -> None:
    """Wait until the filesystem clock is past every given file's mtime and ctime, so a
    snapshot taken next may record them (see the racy rule in cas/workspace/statcache.py)."""
    newest = 0
    for p in map(Path, paths):
        files = [p] if not p.is_dir() else [Path(d) / n for d, _, ns in os.walk(p) for n in ns]
        for f in files:
            st = os.lstat(f)
            newest = max(newest, st.st_mtime_ns, st.st_ctime_ns)
    statcache.wait_past(newest)


_open_logs: list[list[str]] = []  # every active FileOpens' log
_audit_hook_added = False


def _audit(event: str, args: tuple) -> None:
    if event == "open" and _open_logs and isinstance(args[0], (str, bytes)):
        path = os.fsdecode(args[0])
        for log in _open_logs:
            log.append(path)


class FileOpens:
    """The paths this process opens while it is active (open(), os.open(), io.open...),
    seen through a Python audit hook (sys.addaudithook, the `open` event): a test
    observes the code's reads without patching any of its names.

        with FileOpens() as opens: ...   # opens.paths: what was opened, in order
    """

    def __init__(self) -> None:
        self.paths: list[str] = []

    def __enter__(self) -> "FileOpens":
        global _audit_hook_added
        if not _audit_hook_added:  # one hook per process: audit hooks cannot be removed
            sys.addaudithook(_audit)
            _audit_hook_added = True
        _open_logs.append(self.paths)
        return self

    def __exit__(self, *exc: object) -> None:
        _open_logs.remove(self.paths)

    def objects(self, store) -> list[str]:
        """The ids of the object files among the paths opened, in order."""
        prefix = os.fspath(store.objects) + os.sep
        return [p[len(prefix):].replace(os.sep, "").removesuffix(".zst")
                for p in self.paths if p.startswith(prefix)]


class CallCounter:
    """Wrap a module function and count its calls (by first argument)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, module: object, name: str) -> None:
        self.calls: list[object] = []
        real = getattr(module, name)

        def wrapper(*args, **kwargs):
            self.calls.append(args[0] if args else None)
            return real(*args, **kwargs)

        monkeypatch.setattr(module, name, wrapper)

    def __len__(self) -> int:
        return len(self.calls)


def memo_rows(cache) -> dict[tuple[int, int], tuple]:
    """Every directory-memo row of a StatCache: (dev, ino) -> (sig, oid, total_bytes,
    total_files, recorded_ns, stored), read through a connection of its own."""
    db = sqlite3.connect(cache.db_path)
    try:
        return {(r[0], r[1]): r[2:] for r in db.execute("SELECT * FROM dirs")}
    finally:
        db.close()


class SnapshotSpy:
    """Per-file work of a snapshot: stat cache lookups, files hashed, trees encoded."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, cache) -> None:
        from cas.core import hashing
        from cas.objects import tree

        self.looked_up = 0
        self.hashed = CallCounter(monkeypatch, hashing, "hash_file")
        self.encoded = CallCounter(monkeypatch, tree, "encode")
        real = cache.lookup_many

        def lookup_many(stats):
            self.looked_up += len(stats)
            return real(stats)
        monkeypatch.setattr(cache, "lookup_many", lookup_many)

    @property
    def work(self) -> tuple[int, int, int]:
        """(lookups, files hashed, trees encoded): (0, 0, 0) is a snapshot from the memo."""
        return self.looked_up, len(self.hashed), len(self.encoded)


def listing(root: Path) -> set[str]:
    """Every path under `root` (relative), for 'nothing else was touched' checks."""
    out = set()
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            out.add(os.path.relpath(os.path.join(dirpath, name), root))
    return out


def manifest(root: Path) -> dict[str, tuple]:
    """{rel: ("file", blake3, executable) | ("link", target)} without holding the bytes.

    A symlink into a store (a symlink-mode checkout) counts as the file it points to.
    """
    from cas.core import hashing
    out: dict[str, tuple] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = os.path.join(dirpath, name)
            rel = os.path.relpath(p, root)
            st = os.lstat(p)
            if stat.S_ISLNK(st.st_mode):
                target = os.readlink(p)
                if not (os.path.isabs(target) and "/objects/" in target):
                    out[rel] = ("link", target)
                    continue
                st = os.stat(p)
            if stat.S_ISREG(st.st_mode):
                out[rel] = ("file", hashing.hash_file(p), bool(st.st_mode & 0o111))
    return out


def big_files(root: Path, *, each: int, seed: int = 0) -> int:
    """Large files of every kind a store sees: random (stored raw), CSV text (compressed
    under auto), an already-compressed format (raw by suffix); returns bytes written."""
    rnd = random.Random(seed)
    root.mkdir(parents=True, exist_ok=True)
    chunk = 1 << 20
    with open(root / "random.bin", "wb") as f:
        for off in range(0, each, chunk):
            f.write(rnd.randbytes(min(chunk, each - off)))
    block = b"".join(b"%d,%d,%f\n" % (i, i * 31 % 977, i / 7) for i in range(40_000))
    with open(root / "table.csv", "wb") as f:
        for k, off in enumerate(range(0, each, len(block))):
            f.write((b"%d:" % k + block)[:each - off])
    with open(root / "model.pt", "wb") as f:
        for off in range(0, each, chunk):
            f.write((block[:chunk // 2] + rnd.randbytes(chunk // 2))[:each - off])
    return 3 * each
