"""The stat cache: unchanged files are never read twice, changed ones always are (even
with size and mtime put back), racy timestamps are not trusted, a checkout's own
writes are vouched for, and a damaged cache is thrown away."""

from __future__ import annotations

import os
import random
import shutil
from pathlib import Path

import pytest

from support import helpers
from cas.workspace import checkout as co
from cas.core import hashing
from cas.workspace import snapshot as workspace
from cas.workspace.statcache import StatCache
from cas.store.objectstore import FileStore, StoreOptions


@pytest.fixture
def sc(tmp_path: Path) -> StatCache:
    cache = StatCache(tmp_path / ".tally" / "statcache.db", clock_dir=tmp_path / ".tally" / "tmp")
    yield cache
    cache.close()


@pytest.fixture
def data(tmp_path: Path, sc: StatCache) -> Path:
    """A directory of files whose timestamps are safely older than the clock."""
    d = helpers.write_tree(tmp_path / "data", helpers.rich_spec())
    helpers.many_small_files(d / "many", 60)
    helpers.settle(sc, [d])
    return d


def snap(path: Path, sc: StatCache, **kw) -> workspace.Snapshot:
    return workspace.snapshot(path, statcache=sc, **kw)


def regular_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and not p.is_symlink()]


def test_unchanged_files_are_not_read_again(data: Path, sc: StatCache,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    first = snap(data, sc)
    assert first.hashed == len(regular_files(data))
    hashed = helpers.CallCounter(monkeypatch, hashing, "hash_file")
    second = snap(data, sc)
    assert second.hashed == 0 and len(hashed) == 0
    assert second.oid == first.oid


def test_a_fresh_cache_object_reads_what_another_recorded(data: Path, sc: StatCache,
                                                          tmp_path: Path) -> None:
    """One cache per store, shared across processes: it is on disk, not in memory."""
    snap(data, sc)
    other = StatCache(sc.db_path, clock_dir=sc.clock_dir)
    assert snap(data, other).hashed == 0
    other.close()


def test_a_modified_file_is_read_again(data: Path, sc: StatCache) -> None:
    before = snap(data, sc)
    (data / "sub" / "b.csv").write_text("changed\n")
    helpers.settle(sc, [data])
    after = snap(data, sc)
    assert after.hashed == 1 and after.oid != before.oid


def test_same_size_and_mtime_put_back_is_still_caught_by_ctime(data: Path, sc: StatCache) -> None:
    """The classic evasion: same length, mtime restored with utime; ctime still moves."""
    p = data / "sub" / "rand.bin"
    before = snap(data, sc)
    st = os.stat(p)
    old = p.read_bytes()
    new = bytes([old[0] ^ 0xFF]) + old[1:]
    p.write_bytes(new)
    os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))
    st2 = os.stat(p)
    assert (st2.st_size, st2.st_mtime_ns) == (st.st_size, st.st_mtime_ns)
    assert st2.st_ctime_ns != st.st_ctime_ns
    assert sc.lookup(st2) is None
    helpers.settle(sc, [p])
    after = snap(data, sc)
    assert after.hashed == 1 and after.oid != before.oid
    assert sc.lookup(os.stat(p)) == hashing.hash_bytes(new)


def test_a_replaced_file_with_a_reused_inode_is_not_trusted(data: Path, sc: StatCache) -> None:
    p = data / "a.txt"
    snap(data, sc)
    tmp = data / "a.txt.new"
    tmp.write_bytes(b"alpha\n" * 49 + b"ALPHA\n")  # same size
    os.replace(tmp, p)
    helpers.settle(sc, [p])
    assert snap(data, sc).hashed == 1


def test_racy_rule_file_as_new_as_the_clock_is_not_recorded(tmp_path: Path, sc: StatCache) -> None:
    p = tmp_path / "f"
    p.write_bytes(b"just written")
    st = os.stat(p)
    newest = max(st.st_mtime_ns, st.st_ctime_ns)
    oid = hashing.hash_bytes(b"just written")
    # The clock reading could not tell this file from one changed again in the same tick.
    assert sc.record([(st, oid)], clock_ns=newest) == 0
    assert sc.record([(st, oid)], clock_ns=newest - 1) == 0
    assert sc.lookup(st) is None and len(sc) == 0
    assert sc.record([(st, oid)], clock_ns=newest + 1) == 1
    assert sc.lookup(st) == oid


def test_racy_rule_end_to_end(data: Path, sc: StatCache, monkeypatch: pytest.MonkeyPatch) -> None:
    """A snapshot whose clock reading is not past a file's timestamps must not vouch for it."""
    p = data / "a.txt"
    p.write_text("modified within the tick\n")
    st = os.stat(p)
    monkeypatch.setattr(sc, "now_ns", lambda: max(st.st_mtime_ns, st.st_ctime_ns))
    first = snap(data, sc)
    assert sc.lookup(os.stat(p)) is None, "a racy file was recorded"
    assert sc.lookup(os.stat(data / "sub" / "b.csv")) is not None  # older files are
    monkeypatch.undo()
    helpers.settle(sc, [p])
    assert snap(data, sc).hashed == 1
    assert snap(data, sc).hashed == 0
    assert first.oid == snap(data, sc).oid


def test_wait_past_returns_a_strictly_later_reading(tmp_path: Path, sc: StatCache) -> None:
    p = tmp_path / "f"
    p.write_bytes(b"x")
    st = os.stat(p)
    assert sc.wait_past(st.st_mtime_ns) > st.st_mtime_ns


@pytest.mark.parametrize("mode", ["copy", "hardlink", "symlink", "reflink"])
def test_nothing_is_hashed_after_a_checkout(request, tmp_path: Path, mode: str,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    base = request.getfixturevalue("reflink_dir") if mode == "reflink" else tmp_path
    tally = base / ".tally"
    store = FileStore(tally, options=StoreOptions(compression="none"))
    cache = StatCache(tally / "statcache.db", clock_dir=tally / "tmp")
    src = helpers.write_tree(base / "src", helpers.rich_spec())
    with store.writer() as w:
        oid = workspace.snapshot(src, statcache=cache, writer=w).oid
    dest = base / "ws"
    co.checkout(store, co.Target(oid, True), dest, links=(mode,), statcache=cache)
    hashed = helpers.CallCounter(monkeypatch, hashing, "hash_file")
    # `objects`: links into the store (symlink mode) count as the files they stand for.
    again = workspace.snapshot(dest, statcache=cache, objects=os.fspath(store.objects))
    assert again.oid == oid
    assert again.hashed == 0 and len(hashed) == 0, "restored files were hashed again"
    cache.close()


def test_forget_and_clear(data: Path, sc: StatCache) -> None:
    snap(data, sc)
    a = os.stat(data / "a.txt")
    oid = sc.lookup(a)
    assert oid is not None
    assert sc.forget_oids({oid}) >= 1
    assert sc.lookup(a) is None
    assert sc.lookup(os.stat(data / "sub" / "b.csv")) is not None
    sc.clear()
    assert len(sc) == 0
    assert snap(data, sc).hashed == len(regular_files(data))


def _damage_pages(db: Path) -> None:
    raw = bytearray(db.read_bytes())
    rnd = random.Random(0)
    for off in range(4096, len(raw), 4096):  # keep page 1 (the header) valid
        raw[off:off + 64] = rnd.randbytes(64)
    db.write_bytes(bytes(raw))


@pytest.mark.parametrize("damage", ["garbage", "pages", "truncated", "empty-wal-garbage"])
def test_a_damaged_cache_is_discarded_not_trusted(data: Path, sc: StatCache, damage: str) -> None:
    helpers.many_small_files(data / "more", 300, seed=3)  # several pages of rows
    helpers.settle(sc, [data])
    first = snap(data, sc)
    n = first.hashed
    sc.close()
    for suffix in ("-wal", "-shm"):
        Path(str(sc.db_path) + suffix).unlink(missing_ok=True)
    db = sc.db_path
    if damage == "garbage":
        db.write_bytes(b"this is not a database " * 500)
    elif damage == "pages":
        _damage_pages(db)
    elif damage == "truncated":
        db.write_bytes(db.read_bytes()[:5000])
    else:
        Path(str(db) + "-wal").write_bytes(os.urandom(10_000))
    fresh = StatCache(db, clock_dir=sc.clock_dir)
    again = snap(data, fresh)
    assert again.oid == first.oid
    if damage != "empty-wal-garbage":  # SQLite itself ignores a WAL with a bad header
        assert again.hashed == n, "entries from a damaged cache were trusted"
    assert snap(data, fresh).hashed == 0, "the rebuilt cache does not work"
    fresh.close()


def test_a_cache_is_only_a_cache(data: Path, sc: StatCache) -> None:
    """Deleting it costs re-hashing, never a different answer."""
    first = snap(data, sc)
    sc.close()
    shutil.rmtree(sc.db_path.parent)
    fresh = StatCache(sc.db_path, clock_dir=sc.clock_dir)
    again = snap(data, fresh)
    assert again.oid == first.oid and again.hashed == first.hashed
    fresh.close()
