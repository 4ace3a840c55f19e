"""The stat cache stays bounded (spec/statcache.md, "The bound"): a checkout forgets the
rows of what it replaces or deletes, a table past its limit is pruned to 3/4 of it,
oldest recorded first, a prune killed midway leaves a cache that is never wrong, and
status after pruning still sees every change."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import types
from pathlib import Path

import pytest

from support import helpers
from cas.workspace import checkout as co
from cas.core import hashing
from cas.workspace import statcache
from cas.workspace import snapshot as workspace
from cas.workspace.statcache import StatCache
from cas.store.objectstore import FileStore, StoreOptions

REPO = Path(__file__).resolve().parents[2]


class Env:
    """A store, its stat cache, two versions of a data set, and a workspace."""

    def __init__(self, base: Path) -> None:
        self.base = base
        tally = base / ".tally"
        self.store = FileStore(tally, options=StoreOptions(compression="none"))
        self.sc = StatCache(tally / "statcache.db", clock_dir=tally / "tmp")
        self.ws = base / "ws"

    def put(self, spec: helpers.Spec, name: str) -> str:
        src = helpers.write_tree(self.base / name, spec)
        with self.store.writer() as w:
            return workspace.snapshot(src, statcache=self.sc, writer=w, ingest="copy").oid

    def checkout(self, oid: str, links: tuple[str, ...] = ("copy",), **kw) -> co.CheckoutReport:
        return co.checkout(self.store, co.Target(oid, True), self.ws, links=links,
                           statcache=self.sc, **kw)


def versions(n: int = 30) -> tuple[helpers.Spec, helpers.Spec]:
    """v1 and v2: every file in `a/` changes, `same/` is kept, `old/deep/` only in v1
    (its directories are removed), `new/` only in v2, and an executable bit flips."""
    v1: helpers.Spec = {f"a/f{i}.txt": f"one {i}\n" for i in range(n)}
    v2: helpers.Spec = {f"a/f{i}.txt": f"two {i}\n" for i in range(n)}
    for i in range(5):
        v1[f"same/s{i}.txt"] = v2[f"same/s{i}.txt"] = f"kept {i}\n"
        v1[f"old/deep/o{i}.txt"] = f"old {i}\n"
        v2[f"new/n{i}.txt"] = f"new {i}\n"
    v1["run.sh"] = "#!/bin/sh\necho hi\n"
    v2["run.sh"] = helpers.Exe(b"#!/bin/sh\necho hi\n")
    return v1, v2


def rows(db_path: Path, table: str = "entries") -> list[tuple[int, int]]:
    db = sqlite3.connect(db_path)
    try:
        return db.execute(f"SELECT dev, ino FROM {table}").fetchall()
    finally:
        db.close()


def counted(db_path: Path, table: str = "entries") -> tuple[int, int]:
    db = sqlite3.connect(db_path)
    try:
        return db.execute("SELECT rows, peak FROM counts WHERE tbl=?", (table,)).fetchone()
    finally:
        db.close()


def live_keys(root: Path) -> tuple[set[tuple[int, int]], set[tuple[int, int]]]:
    """(files, directories) under `root` by (dev, ino)."""
    files, dirs = set(), set()
    for dirpath, dirnames, filenames in os.walk(root):
        st = os.lstat(dirpath)
        dirs.add((st.st_dev, st.st_ino))
        for name in filenames:
            st = os.lstat(os.path.join(dirpath, name))
            files.add((st.st_dev, st.st_ino))
    return files, dirs


def assert_never_wrong(sc: StatCache, root: Path) -> None:
    """Every regular file under `root` is either unknown to the cache or known by its
    true id: the cache may forget, never lie."""
    fresh = StatCache(sc.db_path, clock_dir=sc.clock_dir)
    try:
        for p in root.rglob("*"):
            if p.is_file() and not p.is_symlink():
                oid = fresh.lookup(os.lstat(p))
                assert oid is None or oid == hashing.hash_file(p), p
    finally:
        fresh.close()


# -- forgetting --------------------------------------------------------------------------------

@pytest.mark.parametrize("links", [("copy",), ("hardlink", "copy")])
def test_fourteen_alternating_checkouts_leave_no_dead_rows(tmp_path: Path, links) -> None:
    """Every checkout replaces 30 files (new inodes) and removes or creates directories;
    without forgetting, each left its rows behind (tmpfs, Btrfs and XFS do not reuse
    the inode numbers soon)."""
    env = Env(tmp_path)
    v1, v2 = versions()
    oids = [env.put(v1, "v1"), env.put(v2, "v2")]
    for k in range(14):
        env.checkout(oids[k % 2], links)
        files, dirs = live_keys(tmp_path)
        assert set(rows(env.sc.db_path)) <= files, f"checkout {k + 1}: rows of deleted files"
        assert set(rows(env.sc.db_path, "dirs")) <= dirs, f"checkout {k + 1}: rows of removed dirs"
        n_ws = sum(1 for p in env.ws.rglob("*") if p.is_file())
        assert len(rows(env.sc.db_path)) <= n_ws + len(v1) + len(v2)
        assert counted(env.sc.db_path)[0] >= len(rows(env.sc.db_path))  # an upper bound
    assert helpers.read_tree(env.ws) == helpers.read_tree(tmp_path / "v2")
    assert_never_wrong(env.sc, tmp_path)


def test_a_forced_checkout_over_user_files_forgets_them(tmp_path: Path) -> None:
    env = Env(tmp_path)
    v1, _ = versions(5)
    oid = env.put(v1, "v1")
    env.checkout(oid)
    extra = helpers.write_tree(env.ws / "mine", {f"m{i}.txt": f"mine {i}\n" for i in range(4)})
    helpers.settle(env.sc, [extra])
    workspace.snapshot(env.ws, statcache=env.sc)  # a status records the user's files
    st = os.lstat(extra / "m0.txt")
    assert (st.st_dev, st.st_ino) in set(rows(env.sc.db_path))
    env.checkout(oid, force=True)
    assert not (env.ws / "mine").exists()
    files, dirs = live_keys(tmp_path)
    assert set(rows(env.sc.db_path)) <= files
    assert set(rows(env.sc.db_path, "dirs")) <= dirs


def test_forget_a_removed_tree(tmp_path: Path) -> None:
    """`tree_keys` + `forget`: what a caller that removes a directory (a run directory)
    can do before it deletes it."""
    env = Env(tmp_path)
    v1, _ = versions(5)
    env.checkout(env.put(v1, "v1"))
    before = len(rows(env.sc.db_path))
    files, dirs = statcache.tree_keys(env.ws)
    assert len(files) == len(v1) and len(dirs) == 5  # ws, a, same, old, old/deep
    env.sc.forget(files, dirs)
    left = set(rows(env.sc.db_path))
    assert not left & set(files) and len(left) == before - len(v1)
    assert not set(rows(env.sc.db_path, "dirs")) & set(dirs)
    assert statcache.tree_keys(tmp_path / "nowhere") == ([], [])


def test_checkout_records_the_kept_files_it_hashed(tmp_path: Path, monkeypatch) -> None:
    """A live row pruned (or never recorded) costs one hash, not one per checkout."""
    env = Env(tmp_path)
    v1, _ = versions(10)
    oid = env.put(v1, "v1")
    env.checkout(oid)
    env.sc.clear()
    hashed = helpers.CallCounter(monkeypatch, hashing, "hash_file")
    assert env.checkout(oid).unchanged == len(v1)
    assert len(hashed) == len(v1)
    again = helpers.CallCounter(monkeypatch, hashing, "hash_file")
    assert env.checkout(oid).unchanged == len(v1)
    assert len(again) == 0
    assert_never_wrong(env.sc, env.ws)


# -- the limit ---------------------------------------------------------------------------------

def fake_stats(dev: int, start: int, n: int, old_ns: int) -> list[tuple[object, str]]:
    """Rows for `n` made-up inodes from `start`: record() reads only these attributes."""
    return [(types.SimpleNamespace(st_dev=dev, st_ino=ino, st_size=ino, st_mtime_ns=old_ns,
                                   st_ctime_ns=old_ns), f"{ino:064x}")
            for ino in range(start, start + n)]


@pytest.fixture
def sc(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> StatCache:
    monkeypatch.setattr(statcache, "ROWS_MIN", 100)
    cache = StatCache(tmp_path / ".tally" / "statcache.db", clock_dir=tmp_path / ".tally" / "tmp")
    yield cache
    cache.close()


def test_a_table_past_its_limit_is_pruned_oldest_first(sc: StatCache) -> None:
    now = sc.now_ns()
    dev = os.stat(sc.clock_dir).st_dev
    for batch in range(3):  # 90 rows: under the limit, max(100, 2 * 30)
        assert sc.record(fake_stats(dev, 1000 * batch, 30, 1), clock_ns=now + batch) == 30
    assert len(rows(sc.db_path)) == 90 and counted(sc.db_path) == (90, 30)
    sc.record(fake_stats(dev, 3000, 30, 1), clock_ns=now + 3)  # 120 > 100: prune to 75
    left = sorted(rows(sc.db_path), key=lambda k: k[1])
    assert len(left) == 75 and counted(sc.db_path) == (75, 30)
    # The oldest batch went whole, then the lowest keys of the next (the tie-break).
    assert [k[1] for k in left] == list(range(1015, 1030)) + list(range(2000, 2030)) + \
        list(range(3000, 3030))
    fresh = StatCache(sc.db_path, clock_dir=sc.clock_dir)
    st, oid = fake_stats(dev, 3000, 1, 1)[0]
    assert fresh.lookup(st) == oid
    assert fresh.lookup(fake_stats(dev, 0, 1, 1)[0][0]) is None
    fresh.close()


def test_the_limit_grows_with_the_largest_batch(sc: StatCache) -> None:
    """A data set of 80 files is never pruned of its own rows for want of room."""
    now = sc.now_ns()
    dev = os.stat(sc.clock_dir).st_dev
    sc.record(fake_stats(dev, 0, 80, 1), clock_ns=now)  # limit max(100, 160) = 160
    sc.record(fake_stats(dev, 1000, 70, 1), clock_ns=now + 1)
    assert len(rows(sc.db_path)) == 150
    sc.record(fake_stats(dev, 2000, 20, 1), clock_ns=now + 2)  # 170 > 160: prune to 120
    assert len(rows(sc.db_path)) == 120
    assert counted(sc.db_path) == (120, 80)


def test_replaced_rows_only_make_the_count_too_high(sc: StatCache) -> None:
    """Recording the same inodes again counts them again; the prune counts for real
    and deletes nothing when the table is within its limit."""
    now = sc.now_ns()
    dev = os.stat(sc.clock_dir).st_dev
    for k in range(5):
        sc.record(fake_stats(dev, 0, 30, 1), clock_ns=now + k)
    assert len(rows(sc.db_path)) == 30
    assert counted(sc.db_path) == (60, 30)  # the fourth write recounted (120 > 100), the fifth added 30


def test_the_dirs_table_is_bounded_too(sc: StatCache) -> None:
    now = sc.now_ns()
    dev = os.stat(sc.clock_dir).st_dev
    for batch in range(4):
        sc.record_dirs([(dev, 1000 * batch + i, b"s" * 32, "0" * 64, 0, 0, None, 1, now + batch)
                        for i in range(30)])
    assert len(rows(sc.db_path, "dirs")) == 75


def test_a_format_2_cache_is_upgraded_and_pruned_by_its_next_write(sc: StatCache) -> None:
    now = sc.now_ns()
    dev = os.stat(sc.clock_dir).st_dev
    sc.record(fake_stats(dev, 0, 90, 1), clock_ns=now)
    sc.close()
    db = sqlite3.connect(sc.db_path)
    db.execute("DROP TABLE counts")
    db.executemany("INSERT INTO entries VALUES (?,?,?,?,?,?,?)",
                   [(dev, ino, 0, 1, 1, now - 1, "0" * 64) for ino in range(5000, 5100)])
    db.execute("PRAGMA user_version=2")
    db.commit()
    db.close()
    again = StatCache(sc.db_path, clock_dir=sc.clock_dir)
    assert len(again) == 190
    db = sqlite3.connect(sc.db_path)
    assert db.execute("PRAGMA user_version").fetchone()[0] == 3
    db.close()
    assert counted(sc.db_path) == (190, 0)
    again.now_ns()
    again.record(fake_stats(dev, 9000, 1, 1), clock_ns=now + 1)
    assert len(rows(sc.db_path)) == 75
    assert 9000 in {k[1] for k in rows(sc.db_path)}  # the newest stays
    again.close()


def test_a_writer_that_finds_it_pruned_meanwhile_deletes_nothing(sc: StatCache) -> None:
    now = sc.now_ns()
    dev = os.stat(sc.clock_dir).st_dev
    sc.record(fake_stats(dev, 0, 50, 1), clock_ns=now)
    other = StatCache(sc.db_path, clock_dir=sc.clock_dir)
    with other._lock:
        assert other._prune("entries") == 0  # counts say 50 <= 100: nothing to do
    other.close()
    assert len(rows(sc.db_path)) == 50


def test_a_read_only_cache_neither_records_nor_prunes(sc: StatCache, tmp_path: Path) -> None:
    now = sc.now_ns()
    dev = os.stat(sc.clock_dir).st_dev
    sc.record(fake_stats(dev, 0, 90, 1), clock_ns=now)
    sc.close()
    class ReadOnly(StatCache):  # as SQLite opens a file the user may read, not write
        def open_db(self) -> sqlite3.Connection:
            return sqlite3.connect(f"file:{self.db_path}?mode=ro", uri=True, check_same_thread=False)

    ro = ReadOnly(sc.db_path, clock_dir=sc.clock_dir)
    ro.now_ns()
    assert ro.record(fake_stats(dev, 1000, 30, 1), clock_ns=now + 1) == 0
    ro.forget([(dev, 0)])
    ro.close()
    assert len(rows(sc.db_path)) == 90


# -- crash safety and correctness after pruning ------------------------------------------------

CHILD = r"""
import os, signal, sys
from pathlib import Path
from cas.workspace import checkout as co, statcache
from cas.workspace.statcache import StatCache
from cas.store.objectstore import FileStore, StoreOptions
base = Path(sys.argv[1])
statcache.ROWS_MIN = int(sys.argv[3])
statcache._PRUNE_HOOK = lambda: os.kill(os.getpid(), signal.SIGKILL)
store = FileStore(base / ".tally", options=StoreOptions(compression="none"))
sc = StatCache(base / ".tally" / "statcache.db", clock_dir=base / ".tally" / "tmp")
co.checkout(store, co.Target(sys.argv[2], True), base / "ws2", links=("copy",), statcache=sc)
print("not killed")
"""


def test_a_prune_killed_before_its_commit_leaves_a_cache_that_is_never_wrong(tmp_path: Path) -> None:
    env = Env(tmp_path)
    v1, v2 = versions(40)
    oids = [env.put(v1, "v1"), env.put(v2, "v2")]
    env.checkout(oids[0])
    env.checkout(oids[1])
    before = sorted(rows(env.sc.db_path))
    n_before = counted(env.sc.db_path)[0]
    env.sc.close()
    # The child's checkout records 56 rows: past its limit of 60, so it prunes, and dies
    # between its DELETE and its COMMIT.
    done = subprocess.run([sys.executable, "-c", CHILD, str(tmp_path), oids[0], "60"],
                          cwd=REPO, capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert done.returncode == -signal.SIGKILL, done.stdout + done.stderr
    db = sqlite3.connect(env.sc.db_path)
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    db.close()
    # The prune rolled back whole; the checkout's own rows committed before it.
    after = rows(env.sc.db_path)
    assert set(before) <= set(after)
    assert counted(env.sc.db_path)[0] == n_before + len(after) - len(before)
    assert_never_wrong(env.sc, tmp_path)
    # Status of both workspaces is right, then the next write prunes for good.
    sc = StatCache(env.sc.db_path, clock_dir=env.sc.clock_dir)
    assert workspace.snapshot(env.ws, statcache=sc).oid == oids[1]
    assert workspace.snapshot(tmp_path / "ws2", statcache=sc).oid == oids[0]
    sc.close()


def test_status_after_pruning_sees_every_change(tmp_path: Path, monkeypatch) -> None:
    """Prune hard (a limit below the live file count), then change files in ways only
    the stat values betray: status must see each change and nothing else."""
    monkeypatch.setattr(statcache, "ROWS_MIN", 20)
    monkeypatch.setattr(statcache, "BATCH_FACTOR", 0)
    env = Env(tmp_path)
    v1, v2 = versions(40)
    oids = [env.put(v1, "v1"), env.put(v2, "v2")]
    for k in range(6):
        env.checkout(oids[k % 2])
    assert len(rows(env.sc.db_path)) <= 20
    assert_never_wrong(env.sc, tmp_path)
    assert workspace.snapshot(env.ws, statcache=env.sc).oid == oids[1]
    # Same size, mtime put back: only ctime moves.
    p = env.ws / "a" / "f3.txt"
    st = os.stat(p)
    os.chmod(p, 0o644)
    p.write_text("TWO 3\n")
    os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))
    changed = workspace.snapshot(env.ws, statcache=env.sc)
    assert changed.oid != oids[1]
    p.write_text("two 3\n")
    helpers.settle(env.sc, [env.ws])
    assert workspace.snapshot(env.ws, statcache=env.sc).oid == oids[1]
    assert_never_wrong(env.sc, tmp_path)


def test_deleting_a_run_directory_forgets_its_rows(tmp_path: Path) -> None:
    """rundir's cleanup, discard and prepare (a retry) forget what the run hashed."""
    from cas.queue import rundirs

    env = Env(tmp_path)
    oid = env.put({f"d/f{i}.txt": f"x {i}\n" for i in range(10)}, "v1")
    run = tmp_path / "run"
    co.checkout(env.store, co.Target(oid, True), run, links=("copy",), statcache=env.sc)
    files, _ = live_keys(run)
    assert files <= set(rows(env.sc.db_path)) and len(files) == 10
    rundirs.forget(types.SimpleNamespace(statcache=env.sc), run)
    assert not set(rows(env.sc.db_path)) & files
    assert not set(rows(env.sc.db_path, "dirs")) & live_keys(run)[1]
