"""The directory memo (spec/statcache.md, "The directory memo"): an unchanged directory
is taken whole from the memo, and any change to a file's content, size, mode, a
symlink's target or a directory's entries is still seen, including a same-size
rewrite within one clock tick (the racy rule); an `add` that skips checking blobs
does so only while no object can have been deleted (the store stamp)."""

from __future__ import annotations

import os
import random
import shutil
import sqlite3
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from support import helpers
from cas.workspace import checkout as co
from cas.core import hashing
from cas.workspace import statcache
from cas.workspace import tracking
from cas.objects import tree
from cas.workspace import snapshot as workspace
from cas.core.errors import WouldOverwrite
from cas.workspace.project import Project, init_project
from cas.workspace.statcache import StatCache
from cas.store.objectstore import FileStore, StoreOptions
from cas.store.writer import Writer


@pytest.fixture
def sc(tmp_path: Path) -> StatCache:
    cache = StatCache(tmp_path / ".tally" / "statcache.db", clock_dir=tmp_path / ".tally" / "tmp")
    yield cache
    cache.close()


@pytest.fixture
def data(tmp_path: Path, sc: StatCache) -> Path:
    d = helpers.write_tree(tmp_path / "data", helpers.rich_spec())
    helpers.many_small_files(d / "many", 40, per_dir=10)
    helpers.settle(sc, [d])
    return d


def truth(path: Path, tmp_path: Path, **kw) -> workspace.Snapshot:
    """What `path` hashes to from scratch: a new, empty cache, no memo."""
    d = Path(tempfile.mkdtemp(dir=tmp_path))
    fresh = StatCache(d / "statcache.db", clock_dir=d / "tmp")
    try:
        return workspace.snapshot(path, statcache=fresh, memo=False, **kw)
    finally:
        fresh.close()


def key(p: Path) -> tuple[int, int]:
    st = os.stat(p)
    return st.st_dev, st.st_ino


# -- the fast path -------------------------------------------------------------------------

def test_an_unchanged_directory_is_taken_whole_from_the_memo(data: Path, sc: StatCache,
                                                               monkeypatch: pytest.MonkeyPatch,
                                                               tmp_path: Path) -> None:
    first = workspace.snapshot(data, statcache=sc)
    assert first.oid == truth(data, tmp_path).oid
    dirs = [data] + [Path(d) / n for d, ns, _ in os.walk(data) for n in ns]
    assert set(map(key, dirs)) <= set(helpers.memo_rows(sc)), "a settled directory was not recorded"
    spy = helpers.SnapshotSpy(monkeypatch, sc)
    again = workspace.snapshot(data, statcache=sc)
    assert again.oid == first.oid and again.hashed == 0
    assert (spy.looked_up, len(spy.hashed), len(spy.encoded)) == (0, 0, 0)


def test_one_changed_directory_is_built_and_its_parents_only(data: Path, sc: StatCache,
                                                              monkeypatch: pytest.MonkeyPatch,
                                                              tmp_path: Path) -> None:
    workspace.snapshot(data, statcache=sc)
    helpers.rewrite(data / "many" / "d002" / "f000021.dat", lambda b: b[::-1] + b"!")
    helpers.settle(sc, [data])
    spy = helpers.SnapshotSpy(monkeypatch, sc)
    again = workspace.snapshot(data, statcache=sc)
    work = (len(spy.hashed), spy.looked_up, len(spy.encoded))
    assert again.oid == truth(data, tmp_path).oid
    # One file read; d002's 10 files and the top's 4 regular ones looked up (`many`
    # holds only directories); d002, many and the top encoded.
    assert work == (1, 10 + 4, 3)


def test_a_trees_dict_turns_the_memo_off_unless_asked(data: Path, sc: StatCache) -> None:
    """restore and others read every tree from `trees`: the memo must not starve them."""
    workspace.snapshot(data, statcache=sc)
    mem: dict[str, tree.Tree] = {}
    snap = workspace.snapshot(data, statcache=sc, trees=mem)
    assert snap.oid in mem and len(mem) == len([1 for _ in os.walk(data)])
    mem.clear()
    hits: dict[str, object] = {}
    snap = workspace.snapshot(data, statcache=sc, trees=mem, memo_hits=hits)
    assert mem == {} and snap.oid in hits
    t = workspace.rebuild(hits[snap.oid], snap.oid, statcache=sc, trees=mem)
    assert t is not None and mem == {snap.oid: t}
    # A file changed since the listing, with its entry gone: the rebuild says so.
    helpers.rewrite(data / "a.txt", lambda b: b"A" + b[1:])
    sc.clear()
    assert workspace.rebuild(hits[snap.oid], snap.oid, statcache=sc, trees=mem) is None


# -- every kind of change ------------------------------------------------------------------

def _same_size_rewrite(root: Path) -> None:
    p = root / "sub" / "rand.bin"
    st = os.stat(p)
    helpers.rewrite(p, lambda b: bytes([b[0] ^ 1]) + b[1:])
    os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))  # mtime put back: only ctime moves


def _retarget(root: Path) -> None:
    p = root / "sub" / "link-up"
    p.unlink()
    p.symlink_to("../b.txt")  # same length as "../a.txt"


def _swap(root: Path) -> None:
    a, b = root / "sub" / "deeper" / "c.txt", root / "sub" / "deeper" / "d.txt"
    a.rename(root / "tmp-swap")
    b.rename(a)
    (root / "tmp-swap").rename(b)


def _file_to_dir(root: Path) -> None:
    (root / "empty").unlink()
    (root / "empty").mkdir()
    (root / "empty" / "x").write_text("x\n")


def _dir_to_file(root: Path) -> None:
    shutil.rmtree(root / "other")
    (root / "other").write_text("only\n")


CHANGES = {
    "same-size rewrite, mtime restored": _same_size_rewrite,
    "size change": lambda r: helpers.rewrite(r / "a.txt", lambda b: b + b"more\n"),
    "exec bit on": lambda r: (r / "a.txt").chmod(0o755),
    "exec bit off": lambda r: (r / "run.sh").chmod(0o644),
    "symlink retarget, same length": _retarget,
    "file becomes a symlink": lambda r: ((r / "empty").unlink(), (r / "empty").symlink_to("a.txt")),
    "file deleted": lambda r: (r / "sub" / "b.csv").unlink(),
    "file added": lambda r: (r / "many" / "d001" / "new.txt").write_text("new\n"),
    "file renamed": lambda r: (r / "a.txt").rename(r / "A.txt"),
    "two files swap names": _swap,
    "empty directory added": lambda r: (r / "sub" / "deeper" / "void").mkdir(),
    "directory removed": lambda r: shutil.rmtree(r / "sub" / "deeper"),
    "file becomes a directory": _file_to_dir,
    "directory becomes a file": _dir_to_file,
    "deep change": lambda r: helpers.rewrite(r / "sub" / "deeper" / "c.txt", lambda b: b"G" + b[1:]),
    "touched only": lambda r: os.utime(r / "sub" / "b.csv"),
}


@pytest.mark.parametrize("change", list(CHANGES))
@pytest.mark.parametrize("settled", [True, False], ids=["settled", "same-tick"])
def test_every_kind_of_change_is_seen(data: Path, sc: StatCache, tmp_path: Path,
                                      change: str, settled: bool) -> None:
    before = workspace.snapshot(data, statcache=sc)
    CHANGES[change](data)
    if settled:
        helpers.settle(sc, [data])
    after = workspace.snapshot(data, statcache=sc)
    expected = truth(data, tmp_path)
    assert (after.oid, after.size, after.files) == (expected.oid, expected.size, expected.files)
    assert (after.oid == before.oid) == (change == "touched only")
    assert workspace.snapshot(data, statcache=sc).oid == expected.oid  # and again, memo'd


def test_racy_rule_a_directory_as_new_as_the_clock_is_not_recorded(
        tmp_path: Path, sc: StatCache, monkeypatch: pytest.MonkeyPatch) -> None:
    d = tmp_path / "d"
    d.mkdir()
    (d / "old").write_text("old\n")
    helpers.settle(sc, [d])
    (d / "new").write_text("new\n")
    st = os.stat(d / "new")
    newest = max(st.st_mtime_ns, st.st_ctime_ns)
    real = sc.now_ns

    def clock_at(ns: int):
        def now() -> int:
            real()  # keeps the clock's device current
            return ns
        return now
    monkeypatch.setattr(sc, "now_ns", clock_at(newest))
    workspace.snapshot(d, statcache=sc)
    assert key(d) not in helpers.memo_rows(sc), "recorded with an entry as new as the clock reading"
    monkeypatch.setattr(sc, "now_ns", clock_at(newest + 1))
    workspace.snapshot(d, statcache=sc)
    assert key(d) in helpers.memo_rows(sc)


def test_same_tick_rewrites_are_always_seen(tmp_path: Path, sc: StatCache) -> None:
    """Write, snapshot and rewrite (same size, mtime put back) as fast as possible, so
    that some rounds fall within one clock tick: only the racy rule keeps those right."""
    d = tmp_path / "d"
    d.mkdir()
    rnd = random.Random(1)
    for i in range(60):
        p = d / f"f{i % 3}"
        p.write_bytes(rnd.randbytes(8))
        workspace.snapshot(d, statcache=sc)
        st = os.stat(p)
        new = rnd.randbytes(8)
        p.write_bytes(new)
        os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))
        got = workspace.snapshot(d, statcache=sc, trees=(mem := {}), memo_hits={})
        if got.oid in mem:
            entry = mem[got.oid].get(p.name)
            assert entry is not None and entry.oid == hashing.hash_bytes(new)
        assert got.oid == truth(d, tmp_path).oid, f"round {i}: a stale id was trusted"


# -- symlinks into the store ---------------------------------------------------------------

def test_directories_linking_into_the_store_are_never_memoized(tmp_path: Path) -> None:
    tally = tmp_path / ".tally"
    store = FileStore(tally, options=StoreOptions(compression="none"))
    cache = StatCache(tally / "statcache.db", clock_dir=tally / "tmp")
    src = helpers.write_tree(tmp_path / "src", {"a.txt": "a\n", "sub/b.txt": "b\n"})
    with store.writer() as w:
        oid = workspace.snapshot(src, statcache=cache, writer=w).oid
    dest = tmp_path / "ws"
    co.checkout(store, co.Target(oid, True), dest, links=("symlink",), statcache=cache)
    helpers.settle(cache, [dest])
    objects = os.fspath(store.objects)
    for _ in range(2):
        assert workspace.snapshot(dest, statcache=cache, objects=objects).oid == oid
    assert key(dest) not in helpers.memo_rows(cache) and key(dest / "sub") not in helpers.memo_rows(cache)
    # Without the store, the same listing means links, and a different tree.
    plain = workspace.snapshot(dest, statcache=cache)
    assert plain.oid != oid
    assert workspace.snapshot(dest, statcache=cache, objects=objects).oid == oid
    cache.close()


# -- add: the store stamp ------------------------------------------------------------------

@pytest.fixture
def proj(project: Project) -> Project:
    d = project.root / "data"
    helpers.write_tree(d, helpers.rich_spec())
    helpers.many_small_files(d / "many", 30, per_dir=10)
    helpers.settle(project.statcache, [d])
    return project


def _closure_present(project: Project, oid: str) -> bool:
    def load(o: str) -> tree.Tree:
        return tree.decode(project.store.get(o))
    return project.store.has(oid) and all(project.store.has(t) for _, t in tree.walk_trees(oid, load)) \
        and all(project.store.has(e.oid) for _, e in tree.walk(oid, load))


def test_a_noop_readd_checks_no_blob(proj: Project, monkeypatch: pytest.MonkeyPatch) -> None:
    first = tracking.add(proj, ["data"], cwd=proj.root)[0]
    spy = helpers.SnapshotSpy(monkeypatch, proj.statcache)
    puts = helpers.CallCounter(monkeypatch, Writer, "put_file")
    again = tracking.add(proj, ["data"], cwd=proj.root)[0]
    assert again.pointer == first.pointer and not again.changed and again.hashed == 0
    assert len(puts) == 0 and spy.looked_up == 0 and len(spy.encoded) == 0


def test_a_noop_readd_leaves_the_pointer_file_alone(proj: Project) -> None:
    tracking.add(proj, ["data"], cwd=proj.root)
    ptr_file = proj.root / "data.tally"
    before = os.stat(ptr_file)
    tracking.add(proj, ["data"], cwd=proj.root)
    assert os.stat(ptr_file).st_ino == before.st_ino  # not replaced: no write, no fsync
    ptr_file.write_bytes(ptr_file.read_bytes().replace(b"\n", b"\r\n"))  # same pointer
    tracking.add(proj, ["data"], cwd=proj.root)
    assert b"\r" not in ptr_file.read_bytes()  # other bytes: written canonically again
    (proj.root / "data" / "a.txt").write_text("changed\n")
    old = ptr_file.read_bytes()
    assert tracking.add(proj, ["data"], cwd=proj.root)[0].changed
    assert ptr_file.read_bytes() != old


@pytest.mark.parametrize("what", ["blob", "tree"])
def test_an_object_deleted_since_is_stored_again(proj: Project, what: str) -> None:
    """fsck --repair (or any deletion) changes a shard directory: the stamp no longer
    matches, so the next add checks every blob again and restores the missing one."""
    ptr = tracking.add(proj, ["data"], cwd=proj.root)[0].pointer
    tracking.add(proj, ["data"], cwd=proj.root)  # the memo'd path, stamp recorded
    load = lambda o: tree.decode(proj.store.get(o))  # noqa: E731
    if what == "blob":
        victim = next(e.oid for p, e in tree.walk(ptr.oid, load) if p == "sub/b.csv")
    else:
        victim = next(t for p, t in tree.walk_trees(ptr.oid, load) if p == "sub/deeper")
    os.unlink(proj.store.info(victim).path)
    assert not _closure_present(proj, ptr.oid)
    again = tracking.add(proj, ["data"], cwd=proj.root)[0]
    assert again.pointer.oid == ptr.oid
    assert _closure_present(proj, ptr.oid)


def test_a_status_row_does_not_let_add_skip_anything(project: Project,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """status records trees it never stored: an add must not take those on trust."""
    d = helpers.write_tree(project.root / "data", {"a.txt": "a\n", "s/b.txt": "b\n"})
    ptr = tracking.add(project, ["data"], cwd=project.root)[0].pointer
    (d / "s" / "c.txt").write_text("c\n")
    helpers.settle(project.statcache, [d])
    assert tracking.status(project)[0].added == ["s/c.txt"]  # records the unstored trees
    new = tracking.add(project, ["data"], cwd=project.root)[0].pointer
    assert new.oid != ptr.oid and _closure_present(project, new.oid)


def test_hardlink_ingest_readd_is_memoized(proj: Project, monkeypatch: pytest.MonkeyPatch) -> None:
    from cas.store import config as config_mod
    config_mod.set_value(proj.store_dir / "config", "cache.type", "hardlink,copy")
    proj.config = config_mod.load(proj.store_dir / "config")
    first = tracking.add(proj, ["data"], cwd=proj.root)[0]
    second = tracking.add(proj, ["data"], cwd=proj.root)[0]  # records what the first moved
    assert second.pointer == first.pointer and second.hashed == 0
    spy = helpers.SnapshotSpy(monkeypatch, proj.statcache)
    third = tracking.add(proj, ["data"], cwd=proj.root)[0]
    assert third.pointer == first.pointer and spy.looked_up == 0 and len(spy.encoded) == 0


# -- status of changed data ----------------------------------------------------------------

def test_status_of_changed_data_twice_reads_only_what_changed(proj: Project,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    tracking.add(proj, ["data"], cwd=proj.root)
    d = proj.root / "data"
    helpers.rewrite(d / "many" / "d001" / "f000012.dat", lambda b: b + b"x")
    (d / "sub" / "deeper" / "e.txt").write_text("new\n")
    helpers.settle(proj.statcache, [d])
    want = (["sub/deeper/e.txt"], ["many/d001/f000012.dat"], [])
    first = tracking.status(proj)[0]
    assert (first.state, first.added, first.modified, first.deleted) == ("modified", *want)
    spy = helpers.SnapshotSpy(monkeypatch, proj.statcache)
    second = tracking.status(proj)[0]
    assert (second.state, second.added, second.modified, second.deleted) == ("modified", *want)
    assert len(spy.hashed) == 0
    # Every tree came from the memo; for the diff, only the trees that differ from the
    # pointer's are built again, each from its own regular files: the top (4), many
    # (none), many/d001 (10), sub (2), sub/deeper (3).
    assert spy.looked_up == 4 + 10 + 2 + 3


# -- the format ----------------------------------------------------------------------------

def test_a_format_1_cache_is_upgraded_and_its_entries_kept(data: Path, sc: StatCache,
                                                           tmp_path: Path) -> None:
    first = workspace.snapshot(data, statcache=sc)
    sc.close()
    db = sqlite3.connect(sc.db_path)
    db.execute("DROP TABLE dirs")
    db.execute("DROP TABLE counts")  # format 3's
    db.execute("PRAGMA user_version=0")
    db.commit()
    assert [r[0] for r in db.execute("SELECT name FROM sqlite_master")] == ["entries"]
    db.close()
    again = StatCache(sc.db_path, clock_dir=sc.clock_dir)
    snap = workspace.snapshot(data, statcache=again)
    assert snap.oid == first.oid and snap.hashed == 0
    db = sqlite3.connect(sc.db_path)
    assert db.execute("PRAGMA user_version").fetchone()[0] == statcache.FORMAT_VERSION
    assert db.execute("SELECT count(*) FROM dirs").fetchone()[0] > 0
    db.close()
    again.close()


def test_a_newer_format_is_left_alone(data: Path, sc: StatCache) -> None:
    workspace.snapshot(data, statcache=sc)
    sc.close()
    db = sqlite3.connect(sc.db_path)
    db.execute("DELETE FROM dirs")
    db.execute(f"PRAGMA user_version={statcache.FORMAT_VERSION + 1}")
    db.commit()
    db.close()
    newer = StatCache(sc.db_path, clock_dir=sc.clock_dir)
    snap = workspace.snapshot(data, statcache=newer)
    regular = [f for f in data.rglob("*") if f.is_file() and not f.is_symlink()]
    assert snap.hashed == len(regular)  # nothing trusted
    newer.close()
    db = sqlite3.connect(sc.db_path)
    assert db.execute("PRAGMA user_version").fetchone()[0] == statcache.FORMAT_VERSION + 1
    assert db.execute("SELECT count(*) FROM dirs").fetchone()[0] == 0
    db.close()


def test_forget_oids_drops_memo_rows_naming_them(data: Path, sc: StatCache) -> None:
    top = workspace.snapshot(data, statcache=sc).oid
    assert any(r[1] == top for r in helpers.memo_rows(sc).values())
    sc.forget_oids({top})
    assert not any(r[1] == top for r in helpers.memo_rows(sc).values())


@pytest.mark.parametrize("limit", [0, 10_000])
def test_point_lookups_and_the_full_load_agree(data: Path, tmp_path: Path, limit: int,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    cache = StatCache(tmp_path / "c.db", clock_dir=tmp_path / "clock")
    first = workspace.snapshot(data, statcache=cache, memo=False)
    cache.close()
    monkeypatch.setattr(statcache, "POINT_LOOKUPS_MAX", limit)
    again = StatCache(tmp_path / "c.db", clock_dir=tmp_path / "clock")
    snap = workspace.snapshot(data, statcache=again, memo=False)
    assert snap.oid == first.oid and snap.hashed == 0
    again.close()


def test_the_skipped_temp_prefix_is_checkouts() -> None:
    assert workspace.TMP_PREFIX == co.TMP_PREFIX


# -- property: status and add under random changes, without waiting for the clock ----------

PROPS = settings(deadline=None, max_examples=25,
                 suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
# Checkouts of the last add: refused over user work, forced, or into an empty place.
CHECKOUTS = ("checkout", "checkout-force", "wipe-checkout")
MUTATIONS = ("same-size", "same-size-keep-mtime", "resize", "chmod", "retarget", "to-link",
             "delete", "create", "mkdir", "rmtree", "rename", "touch")


def _manifest(root: Path) -> dict[str, tuple]:
    return helpers.read_tree(root) if root.exists() else {}


def _expected(before: dict[str, tuple], after: dict[str, tuple]) -> tuple[list, list, list]:
    added = sorted(p for p in after if p not in before)
    deleted = sorted(p for p in before if p not in after)
    modified = sorted(p for p in after if p in before and after[p] != before[p])
    return added, modified, deleted


def _mutate(root: Path, rnd: random.Random, how: str) -> None:
    files = sorted(p for p in root.rglob("*") if p.is_file() or p.is_symlink())
    dirs = [root] + sorted(p for p in root.rglob("*") if p.is_dir() and not p.is_symlink())
    regular = [p for p in files if not p.is_symlink()]
    links = [p for p in files if p.is_symlink()]
    if how in ("same-size", "same-size-keep-mtime") and regular:
        p = rnd.choice(regular)
        st = os.stat(p)
        data = p.read_bytes()
        new = bytes(b ^ 0x5A for b in data) if data else b""
        p.write_bytes(new)
        if how == "same-size-keep-mtime":
            os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))
    elif how == "resize" and regular:
        p = rnd.choice(regular)
        p.write_bytes(p.read_bytes() + rnd.randbytes(rnd.randint(1, 5)))
    elif how == "chmod" and regular:
        p = rnd.choice(regular)
        p.chmod(0o644 if os.stat(p).st_mode & 0o111 else 0o755)
    elif how == "retarget" and links:
        p = rnd.choice(links)
        target = os.readlink(p)
        p.unlink()
        p.symlink_to(target[:-1] + ("x" if target[-1:] != "x" else "y"))
    elif how == "to-link" and regular:
        p = rnd.choice(regular)
        p.unlink()
        p.symlink_to(f"t{rnd.randint(0, 9)}")
    elif how == "delete" and files:
        rnd.choice(files).unlink()
    elif how == "create":
        p = rnd.choice(dirs) / f"n{rnd.randint(0, 99)}"
        if not os.path.lexists(p):
            p.write_bytes(rnd.randbytes(rnd.randint(0, 20)))
    elif how == "mkdir":
        p = rnd.choice(dirs) / f"m{rnd.randint(0, 9)}"
        if not os.path.lexists(p):
            p.mkdir()
    elif how == "rmtree" and len(dirs) > 1:
        shutil.rmtree(rnd.choice(dirs[1:]))
    elif how == "rename" and files:
        p = rnd.choice(files)
        q = p.parent / f"r{rnd.randint(0, 99)}"
        if not os.path.lexists(q):
            p.rename(q)
    elif how == "touch" and regular:
        os.utime(rnd.choice(regular))


def _new_project(base: Path) -> Project:
    root = Path(tempfile.mkdtemp(dir=base)).resolve()
    helpers.git(root, "init", "-q")
    proj, _ = init_project(root)
    return proj


@PROPS
@given(seed=st.integers(0, 2**32 - 1),
       steps=st.lists(st.tuples(st.sampled_from(MUTATIONS + ("settle", "add", "status")
                                                + CHECKOUTS),
                                st.integers(0, 2**16)), min_size=1, max_size=25))
def test_status_and_add_see_exactly_the_changes(tmp_path: Path, seed: int,
                                                steps: list[tuple[str, int]]) -> None:
    rnd = random.Random(seed)
    proj = _new_project(tmp_path)
    root = proj.root / "data"
    spec: helpers.Spec = {}
    for i in range(rnd.randint(1, 12)):
        where = rnd.choice(["", "a/", "a/b/", "c/"])
        spec[f"{where}f{i}"] = rnd.randbytes(rnd.randint(0, 16))
    spec["a/l"] = helpers.Link("f0")
    helpers.write_tree(root, spec)
    try:
        ptr = tracking.add(proj, ["data"], cwd=proj.root)[0].pointer
        at_add = _manifest(root)
        for how, n in steps:
            rnd.seed(n)
            if how == "settle":
                helpers.settle(proj.statcache, [root])
            elif how == "add":
                ptr = tracking.add(proj, ["data"], cwd=proj.root)[0].pointer
                at_add = _manifest(root)
                assert ptr.oid == truth(root, tmp_path).oid
                assert _closure_present(proj, ptr.oid)
            elif how in CHECKOUTS:
                # A checkout records memo rows for what it wrote and kept: the status
                # and add steps after it check that none of them is ever wrong.
                if how == "wipe-checkout":
                    shutil.rmtree(root)
                try:
                    tracking.checkout(proj, ["data"], force=how == "checkout-force",
                                      cwd=proj.root)
                except WouldOverwrite:
                    assert how == "checkout"  # and nothing was changed
                else:
                    assert _manifest(root) == at_add
            elif how == "status":
                [s] = tracking.status(proj)
                want = truth(root, tmp_path).oid
                assert s.state == ("unchanged" if want == ptr.oid else "modified")
                assert (sorted(s.added), sorted(s.modified), sorted(s.deleted)) == \
                    _expected(at_add, _manifest(root))
            else:
                _mutate(root, rnd, how)
        [s] = tracking.status(proj)
        assert (sorted(s.added), sorted(s.modified), sorted(s.deleted)) == \
            _expected(at_add, _manifest(root))
    finally:
        proj.statcache.close()
        helpers.make_writable(proj.root)
        shutil.rmtree(proj.root)


def test_without_publish_a_writer_is_not_flushed_and_rows_are_unstored(
        proj: Project, monkeypatch: pytest.MonkeyPatch) -> None:
    """A run snapshots several outputs through one writer: its batching is left alone."""
    d = proj.root / "data"
    flushes = helpers.CallCounter(monkeypatch, Writer, "flush")
    with proj.store.writer() as w:
        snap = workspace.snapshot(d, statcache=proj.statcache, writer=w)
        assert len(flushes) == 0
    assert all(r[5] is None for r in helpers.memo_rows(proj.statcache).values())
    # So an add of the same data checks its blobs once, and records the stamp.
    with proj.lock("store", shared=True):
        with proj.store.writer() as w:
            again = workspace.snapshot(d, statcache=proj.statcache, writer=w, publish=True)
    assert again.oid == snap.oid
    assert key(d) in helpers.memo_rows(proj.statcache) and helpers.memo_rows(proj.statcache)[key(d)][5] is not None


def test_status_falls_back_to_a_whole_build_when_a_memod_tree_cannot_be_rebuilt(
        proj: Project, monkeypatch: pytest.MonkeyPatch) -> None:
    tracking.add(proj, ["data"], cwd=proj.root)
    d = proj.root / "data"
    (d / "sub" / "deeper" / "e.txt").write_text("new\n")
    helpers.settle(proj.statcache, [d])
    tracking.status(proj)  # records the changed directories' rows
    monkeypatch.setattr(workspace, "rebuild", lambda *a, **k: None)  # "changed meanwhile"
    [s] = tracking.status(proj)
    assert (s.state, s.added, s.modified, s.deleted) == ("modified", ["sub/deeper/e.txt"], [], [])
