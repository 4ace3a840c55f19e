"""Hostile objects, end to end: a store (or a pointer committed by someone else) that
names trees with `..`, `/`, absolute paths, NUL bytes, symlinks out of the workspace,
absurd sizes, deep nesting, and zstd frames that expand far beyond what they claim.

Every case goes through the CLI (`tally checkout`, `tally fsck`, `tally gc`) and
checks two things: the command refuses with a TallyError exit status (never a
traceback), and nothing was written outside the workspace. The object-level
corruption cases (flipped bytes, truncations) are in tests/test_corruption.py.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import msgpack
import pytest
import zstandard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from support import helpers
from cas.objects import envelope
from cas.core import hashing
from cas.objects import pointer
from cas.objects import tree
from cas.workspace.project import init_project
from cli.main import run

FILE, DIR, LINK = tree.FILE, tree.DIR, tree.SYMLINK


def raw_tree(rows: list[list], *, total_bytes: int | None = None, total_files: int | None = None) -> bytes:
    """A tree object's bytes straight from rows, bypassing every check of tree.make."""
    tb = sum(r[3] for r in rows if r[1] in (FILE, DIR)) if total_bytes is None else total_bytes
    tf = sum(1 for r in rows if r[1] == FILE) if total_files is None else total_files
    return envelope.MAGIC + envelope.KIND_TREE + bytes([1]) + msgpack.packb([tb, tf, rows], use_bin_type=True)


def put_raw(store, data: bytes, *, zst: bytes | None = None) -> str:
    """Store `data` under its id as is (raw), or as the given zstd frame."""
    oid = hashing.hash_bytes(data)
    path = store.zst_path(oid) if zst is not None else store.raw_path(oid)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(zst if zst is not None else data)
    os.chmod(path, 0o444)
    return oid


def row(name: str, kind: int, oid: str, size: int, mode: int | None = None) -> list:
    return [name, kind, bytes.fromhex(oid), size, (0o644 if kind == FILE else 0) if mode is None else mode]


class World:
    """A project inside a sandbox directory with a sentinel sibling that must stay untouched."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.outside = base / "outside"
        self.outside.mkdir()
        (self.outside / "keep.txt").write_text("precious\n")
        self.root = base / "repo"
        self.root.mkdir()
        helpers.git(self.root, "init", "-q", "-b", "main")
        helpers.git(self.root, "commit", "-q", "--allow-empty", "-m", "init")
        self.project, _ = init_project(self.root)
        self.store = self.project.store
        self.store.ensure_dirs()
        self.before = self.snapshot_outside()

    def snapshot_outside(self) -> dict:
        # Everything in the sandbox but the work tree itself: siblings, and the base.
        return {p: v for p, v in helpers.read_tree(self.base).items() if not p.startswith("repo/")}

    def point(self, rel: str, oid: str, *, is_dir: bool = True, size: int = 1, files: int = 1) -> None:
        pointer.write(self.root, pointer.Pointer(rel, oid, is_dir, size, files))

    def tally(self, *args: str) -> int:
        old = os.getcwd()
        os.chdir(self.root)
        try:
            return run(list(args))
        finally:
            os.chdir(old)

    def assert_nothing_outside(self, *, links: bool = True) -> None:
        """The sandbox outside the work tree is unchanged, and (links) no symlink that
        checkout made under data/ leads out of the work tree or the store."""
        assert self.snapshot_outside() == self.before
        for p in Path(self.base).rglob("*") if links else ():
            if p.is_symlink():
                target = os.path.realpath(p)
                inside = target.startswith(str(self.root)) or target.startswith(str(self.store.root))
                assert inside or not str(p).startswith(str(self.root / "data")), f"{p} -> {target}"


@pytest.fixture
def world(tmp_path: Path) -> World:
    w = World(tmp_path)
    yield w
    w.project.statcache.close()


BAD_NAMES = ["..", ".", "", "a/b", "/etc/passwd", "../../outside/keep.txt", "x\x00y", "ok/..", "/"]


@pytest.mark.parametrize("name", BAD_NAMES, ids=repr)
def test_trees_with_unsafe_names_are_refused_everywhere(world: World, name: str) -> None:
    blob = world.store.put_bytes(b"pwned\n")
    t = put_raw(world.store, raw_tree([row(name, FILE, blob, 6)]))
    world.point("data", t)
    assert world.tally("checkout") == 5
    assert not (world.root / "data").exists() or not any((world.root / "data").iterdir())
    assert world.tally("fsck") == 5
    assert world.tally("gc", "--grace", "0", "--yes") == 5  # cannot prove what the tree needs
    assert world.store.has(blob)
    world.assert_nothing_outside()


@pytest.mark.parametrize("target", ["../outside/keep.txt", "../../outside", "/etc/passwd",
                                    "sub/../../..", "a/b/../../../outside"])
def test_symlinks_out_of_the_workspace_are_refused(world: World, target: str) -> None:
    link = world.store.put_bytes(target.encode())
    t = put_raw(world.store, raw_tree([row("evil", LINK, link, len(target))]))
    world.point("data", t)
    assert world.tally("checkout") in (2, 5)
    assert not os.path.lexists(world.root / "data" / "evil")
    world.assert_nothing_outside()


def test_a_symlink_inside_the_tree_is_fine(world: World) -> None:
    blob = world.store.put_bytes(b"x\n")
    link = world.store.put_bytes(b"../a.txt")
    sub = put_raw(world.store, raw_tree([row("up", LINK, link, 8)]))
    t = put_raw(world.store, raw_tree([row("a.txt", FILE, blob, 2), row("sub", DIR, sub, 0)],
                                      total_files=1))
    world.point("data", t)
    assert world.tally("checkout") == 0
    assert (world.root / "data" / "sub" / "up").read_text() == "x\n"


def test_an_existing_workspace_symlink_is_not_written_through(world: World) -> None:
    """The workspace has `data/sub -> ../outside` (made by someone); the tree wants a
    real directory `sub/` with a file in it. Writing must not follow the link."""
    blob = world.store.put_bytes(b"payload\n")
    sub = put_raw(world.store, raw_tree([row("keep.txt", FILE, blob, 8)]))
    t = put_raw(world.store, raw_tree([row("sub", DIR, sub, 8)], total_files=1))
    (world.root / "data").mkdir()
    os.symlink("../../outside", world.root / "data" / "sub")
    world.point("data", t)
    assert world.tally("checkout") == 4  # the link is user work in the way
    world.assert_nothing_outside(links=False)  # the user's own link is still there
    assert world.tally("checkout", "--force") == 0
    world.assert_nothing_outside()
    assert (world.root / "data" / "sub" / "keep.txt").read_text() == "payload\n"
    assert not (world.root / "data" / "sub").is_symlink()


@pytest.mark.parametrize("declared", [2**40, 2**62])
def test_huge_declared_sizes_are_refused_without_allocating(world: World, declared: int) -> None:
    blob = world.store.put_bytes(b"small\n")
    t = put_raw(world.store, raw_tree([row("f", FILE, blob, declared)]))
    world.point("data", t, size=declared)
    assert world.tally("checkout") == 5
    world.assert_nothing_outside()
    # A tree whose totals lie about its entries is not a tree.
    t2 = put_raw(world.store, raw_tree([row("f", FILE, blob, 6)], total_bytes=2**62))
    world.point("data", t2)
    assert world.tally("checkout") == 5
    assert world.tally("gc", "--grace", "0", "--yes") == 5


def _bomb(n: int, *, declare: bool) -> bytes:
    """A zstd frame of n zero bytes (a few hundred bytes on disk)."""
    return zstandard.ZstdCompressor(level=19, write_content_size=declare).compress(b"\0" * n)


@pytest.mark.parametrize("declare", [True, False], ids=["declared", "undeclared"])
@pytest.mark.parametrize("tree_size", [16, 0])
def test_zstd_blob_expanding_beyond_its_tree_size(world: World, declare: bool, tree_size: int) -> None:
    n = 16 * 1024 * 1024
    real = b"\0" * n
    oid = put_raw(world.store, real, zst=_bomb(n, declare=declare))
    t = put_raw(world.store, raw_tree([row("f", FILE, oid, tree_size)]))
    world.point("data", t)
    rc = world.tally("checkout")
    assert rc == 5
    f = world.root / "data" / "f"
    assert not f.exists() or f.stat().st_size <= max(tree_size, 0)
    leftovers = [p for p in (world.root / "data").rglob("*")] if (world.root / "data").exists() else []
    assert all(p.stat().st_size <= 16 for p in leftovers if p.is_file())
    world.assert_nothing_outside()


def _stream_bomb(n: int, *, declare: bool) -> bytes:
    """A frame of n zero bytes built without holding them in memory."""
    cobj = zstandard.ZstdCompressor(level=1, write_content_size=declare).compressobj(
        size=n if declare else -1)
    chunk, parts = b"\0" * (1 << 20), []
    for _ in range(n >> 20):
        parts.append(cobj.compress(chunk))
    parts.append(cobj.flush())
    return b"".join(parts)


@pytest.mark.parametrize("declare", [True, False], ids=["declared", "undeclared"])
def test_zstd_tree_bomb_is_refused_by_gc_fsck_and_checkout(world: World, declare: bool) -> None:
    """A "tree" whose frame expands past envelope.MAX_STRUCT_SIZE: every reader stops at
    the bound (the id need not even match: nothing gets as far as hashing)."""
    n = envelope.MAX_STRUCT_SIZE + (8 << 20)
    oid = hashing.hash_bytes(b"not the content")
    path = world.store.zst_path(oid)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Path(path).write_bytes(b"")
    with open(path, "wb") as f:
        f.write(_stream_bomb(n, declare=declare))
    world.point("data", oid)
    assert world.tally("gc", "--grace", "0", "--yes") == 5
    assert world.tally("checkout") == 5
    world.assert_nothing_outside()


def _deep(world: World, depth: int) -> str:
    blob = world.store.put_bytes(b"deep\n")
    child = put_raw(world.store, raw_tree([row("f", FILE, blob, 5)]))
    for _ in range(depth):
        child = put_raw(world.store, raw_tree([row("d", DIR, child, 5)], total_files=1))
    return child


def test_deeply_nested_trees_are_walked_by_gc_and_fsck(world: World) -> None:
    world.point("data", _deep(world, 3000))  # deeper than Python's recursion limit
    assert world.tally("fsck") == 0
    assert world.tally("gc", "--grace", "0", "--yes") == 0


def test_deeply_nested_trees_do_not_crash_checkout(world: World) -> None:
    world.point("data", _deep(world, 3000))
    import shutil
    import sys
    try:
        assert world.tally("checkout") in (0, 2, 5)  # done, or refused cleanly: never a traceback
    finally:
        # Whatever checkout made of data/ recurses once per level in os.walk and
        # shutil.rmtree (here and in pytest's own cleanup of old temp dirs): remove it,
        # whatever happened, with room to spare.
        limit = sys.getrecursionlimit()
        sys.setrecursionlimit(20_000)
        try:
            shutil.rmtree(world.root / "data", ignore_errors=True)
        finally:
            sys.setrecursionlimit(limit)
    world.assert_nothing_outside()


# -- Hypothesis: whatever the tree says, nothing lands outside -----------------------------------

NAME = st.one_of(st.sampled_from(["..", ".", "", "/", "a/..", "../x", "x\x00", "ok", "b", "sub"]),
                 st.text(alphabet="ab./\x00", min_size=1, max_size=4))
TARGET = st.sampled_from(["ok", "../ok", "../../outside/keep.txt", "/abs", "sub/../ok", ".",
                          "..", "sub/../../x", "a/b/c"])


@st.composite
def hostile_trees(draw):
    entries = draw(st.lists(st.tuples(NAME, st.sampled_from([FILE, LINK, DIR]), TARGET),
                            min_size=1, max_size=5, unique_by=lambda e: e[0]))
    return sorted(entries, key=lambda e: e[0].encode("utf-8", "surrogatepass"))


@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
@given(spec=hostile_trees(), force=st.booleans())
def test_checkout_of_any_hostile_tree_stays_inside(spec, force: bool) -> None:
    base = Path(tempfile.mkdtemp(prefix="tally-hostile-"))
    try:
        w = World(base)
        leaf_blob = w.store.put_bytes(b"leaf\n")
        leaf = put_raw(w.store, raw_tree([row("leaf", FILE, leaf_blob, 5)]))
        rows = []
        for name, kind, target in spec:
            if kind == FILE:
                rows.append(row(name, FILE, w.store.put_bytes(b"data\n"), 5))
            elif kind == LINK:
                rows.append(row(name, LINK, w.store.put_bytes(target.encode()), len(target)))
            else:
                rows.append(row(name, DIR, leaf, 5))
        files = sum(1 for r in rows if r[1] in (FILE, DIR))
        t = put_raw(w.store, raw_tree(rows, total_files=files))
        w.point("data", t)
        args = ["checkout"] + (["--force"] if force else [])
        rc = w.tally(*args)
        assert rc in (0, 2, 4, 5)
        w.assert_nothing_outside()
        data = w.root / "data"
        for p in data.rglob("*") if data.exists() else ():
            real = os.path.realpath(p)
            assert real.startswith(str(data)) or real.startswith(str(w.store.root)), (p, real)
        w.project.statcache.close()
    finally:
        helpers.make_writable(base)
        shutil.rmtree(base, ignore_errors=True)
