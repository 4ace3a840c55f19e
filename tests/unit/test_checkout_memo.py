"""A checkout records directory memo rows for what it materialized (spec/statcache.md,
"What checkout records"), so the first `status` or `add` after it takes every
directory whole; and never a row that could make a status or an add wrong: not for a
directory with an untracked entry, not for an entry changed since it was written or
verified, not past the racy rule; `stored` only when nothing was deleted meanwhile."""

from __future__ import annotations

import os
import shutil
import sqlite3
from pathlib import Path

import pytest

from support import helpers
from cas.workspace import checkout as co
from cas.workspace import materialize
from cas.store import config as config_mod
from cas.core import hashing
from cas.workspace import tracking
from cas.workspace import snapshot as workspace
from cas.core.errors import WouldOverwrite
from cas.workspace.project import Project
from cas.workspace.statcache import StatCache
from cas.store.writer import Writer


def forget_dirs(cache: StatCache) -> None:
    """Drop every memo row (a directory removed and made again may reuse its inode: its
    old row, harmless since its signature no longer matches, would confuse the tests)."""
    db = sqlite3.connect(cache.db_path)
    with db:
        db.execute("DELETE FROM dirs")
    db.close()


def key(p: Path) -> tuple[int, int]:
    st = os.stat(p)
    return st.st_dev, st.st_ino


def all_dirs(root: Path) -> list[Path]:
    return [root] + [Path(d) / n for d, ns, _ in os.walk(root) for n in ns]


def fresh_status(project: Project, tmp_path: Path) -> list[tracking.Status]:
    """What `status` says with an empty stat cache and no memo."""
    cache = project.statcache
    d = tmp_path / f"fresh-{os.urandom(4).hex()}"
    project.__dict__["statcache"] = StatCache(d / "statcache.db", clock_dir=d / "tmp")
    try:
        return tracking.status(project)
    finally:
        project.statcache.close()
        project.__dict__["statcache"] = cache


def set_links(project: Project, order: str) -> None:
    config_mod.set_value(project.store_dir / "config", "cache.type", order)
    project.config = config_mod.load(project.store_dir / "config")


@pytest.fixture
def proj(project: Project) -> Project:
    d = project.root / "data"
    helpers.write_tree(d, helpers.rich_spec())
    helpers.many_small_files(d / "many", 30, per_dir=10)
    tracking.add(project, ["data"], cwd=project.root)
    return project


def restored(project: Project, path: str = "data") -> Path:
    """Delete `path` and check it out again; returns it."""
    p = project.root / path
    shutil.rmtree(p)  # (not made writable first: hardlinked files are the objects)
    forget_dirs(project.statcache)
    tracking.checkout(project, [path], cwd=project.root)
    return p


# -- the fast path -------------------------------------------------------------------------

def test_status_after_checkout_takes_every_directory_from_the_memo(
        proj: Project, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    d = restored(proj)
    assert set(map(key, all_dirs(d))) <= set(helpers.memo_rows(proj.statcache))
    spy = helpers.SnapshotSpy(monkeypatch, proj.statcache)
    [s] = tracking.status(proj)
    assert s.state == "unchanged" and spy.work == (0, 0, 0)
    assert [s] == fresh_status(proj, tmp_path)


def test_add_after_checkout_checks_no_blob(proj: Project, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every object was read from the store during the checkout, and the store stamp
    did not change: the rows carry it, and an add takes them as stored."""
    ptr = proj.root / "data.tally"
    before = ptr.read_bytes()
    d = restored(proj)
    assert all(helpers.memo_rows(proj.statcache)[key(p)][5] is not None for p in all_dirs(d))
    spy = helpers.SnapshotSpy(monkeypatch, proj.statcache)
    puts = helpers.CallCounter(monkeypatch, Writer, "put_file")
    [a] = tracking.add(proj, ["data"], cwd=proj.root)
    assert not a.changed and ptr.read_bytes() == before
    assert (len(puts), *spy.work) == (0, 0, 0, 0)


def test_a_directory_with_files_kept_is_memoized_but_not_as_stored(
        proj: Project, monkeypatch: pytest.MonkeyPatch) -> None:
    """Files found unchanged were verified, not read from the store: the directory a
    file was rewritten in (and those above it) get rows, without the stamp; the
    directories the checkout did not touch keep the rows they had (here: the add's)."""
    d = proj.root / "data"
    victim = d / "many" / "d001" / "f000012.dat"
    victim.write_bytes(b"user work\n")
    before = helpers.memo_rows(proj.statcache)
    tracking.checkout(proj, ["data"], force=True, cwd=proj.root)
    memo = helpers.memo_rows(proj.statcache)
    touched = {d, d / "many", d / "many" / "d001"}
    assert {p for p in all_dirs(d) if memo.get(key(p)) != before.get(key(p))} == touched
    assert all(memo[key(p)][5] is None for p in touched)
    spy = helpers.SnapshotSpy(monkeypatch, proj.statcache)
    [s] = tracking.status(proj)
    assert s.state == "unchanged" and spy.work == (0, 0, 0)

    d2 = restored(proj)  # every file written this time: all stored
    assert all(helpers.memo_rows(proj.statcache)[key(p)][5] is not None for p in all_dirs(d2))


def test_an_object_deleted_during_the_checkout_leaves_every_row_unstored(
        proj: Project, monkeypatch: pytest.MonkeyPatch) -> None:
    """The store stamp changed between the first object read and the end (here: another
    path's object deleted, as gc or fsck --repair would): what was read may be gone
    too, so no row claims to be stored, and the next add checks every blob."""
    helpers.write_tree(proj.root / "other", {"o.txt": "other data\n"})
    tracking.add(proj, ["other"], cwd=proj.root)
    victim = hashing.hash_bytes(b"other data\n")
    real = materialize.Materializer.write  # every file a checkout writes goes through it

    def write(self, e, path, **kw):
        if proj.store.has(victim):
            os.unlink(proj.store.info(victim).path)
        return real(self, e, path, **kw)
    monkeypatch.setattr(materialize.Materializer, "write", write)
    d = restored(proj)
    monkeypatch.undo()
    memo = helpers.memo_rows(proj.statcache)
    assert all(key(p) in memo and memo[key(p)][5] is None for p in all_dirs(d))
    puts = helpers.CallCounter(monkeypatch, Writer, "put_file")
    assert not tracking.add(proj, ["data"], cwd=proj.root)[0].changed
    assert len(puts) > 0


# -- nothing wrong is ever recorded ----------------------------------------------------------

def test_a_same_size_rewrite_right_after_checkout_is_seen(proj: Project, tmp_path: Path) -> None:
    d = restored(proj)
    p = d / "sub" / "rand.bin"
    st = os.stat(p)
    helpers.rewrite(p, lambda b: bytes([b[0] ^ 1]) + b[1:])
    os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))  # only the ctime moves
    [s] = tracking.status(proj)
    assert (s.state, s.modified) == ("modified", ["sub/rand.bin"])
    assert [s] == fresh_status(proj, tmp_path)


def test_racy_rule_no_row_when_the_tick_was_not_waited_out(
        proj: Project, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """If the wait for the clock runs out, files as new as the reading make their
    directories unrecordable: neither entries nor rows."""
    cache = proj.statcache
    # As if the clock had stood still: the last reading is older than every file written.
    monkeypatch.setattr(cache, "wait_past", lambda newest, **kw: (cache.now_ns(), 1)[1])
    d = restored(proj)
    memo = helpers.memo_rows(cache)
    assert not any(key(p) in memo for p in all_dirs(d) if any(f.is_file() for f in p.iterdir()))
    monkeypatch.undo()
    assert tracking.status(proj) == fresh_status(proj, tmp_path)


def test_racy_rule_kept_files_need_the_reading_taken_before_their_stat(
        proj: Project, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A file found unchanged is vouched for by its stat before it was verified; a
    change in the same tick as that stat would not show, so it must be older than the
    reading taken before it."""
    d = proj.root / "data"
    p = d / "many" / "d002" / "f000021.dat"
    helpers.rewrite(p, lambda b: b[::-1])  # user work: the checkout puts it back
    cache = proj.statcache
    real = cache.now_ns
    readings = []

    def now() -> int:
        ns = real()
        readings.append(ns)
        return 0 if len(readings) == 1 else ns  # the first: before the scan
    monkeypatch.setattr(cache, "now_ns", now)
    forget_dirs(cache)
    tracking.checkout(proj, ["data"], force=True, cwd=proj.root)
    memo = helpers.memo_rows(cache)
    # d002 had one file written, nine kept; every other directory with files kept them
    # all. Only `many`, which holds directories alone, has a row.
    assert [q for q in all_dirs(d) if key(q) in memo] == [d / "many"]
    monkeypatch.undo()
    assert tracking.status(proj) == fresh_status(proj, tmp_path)


def test_an_untracked_file_keeps_its_directory_out_of_the_memo(
        proj: Project, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A file that appears after the checkout wrote (a concurrent writer): the listing
    after the tick is not the tree's, so that directory (and its parents, whose
    signatures name its tree) has no row; status reports the file."""
    d = proj.root / "data"
    real = workspace.record_checkout

    def record(statcache, dirs, known, **kw):
        (d / "sub" / "deeper" / "new.txt").write_text("untracked\n")
        return real(statcache, dirs, known, **kw)
    monkeypatch.setattr(workspace, "record_checkout", record)
    shutil.rmtree(d)
    forget_dirs(proj.statcache)
    tracking.checkout(proj, ["data"], cwd=proj.root)
    monkeypatch.undo()
    memo = helpers.memo_rows(proj.statcache)
    assert key(d / "sub" / "deeper") not in memo
    assert key(d / "many") in memo and key(d / "other") in memo
    [s] = tracking.status(proj)
    assert (s.state, s.added) == ("modified", ["sub/deeper/new.txt"])
    assert [s] == fresh_status(proj, tmp_path)


def test_a_directory_the_checkout_cannot_prune_is_seen(proj: Project, tmp_path: Path) -> None:
    """A directory the tree lacks holding only a nested `.git` (skipped, so it looks
    empty to the checkout, which cannot remove it): the parent is not memoized."""
    d = proj.root / "data"
    (d / "sub" / "stray" / ".git").mkdir(parents=True)
    (d / "sub" / "stray" / ".git" / "HEAD").write_text("x\n")
    forget_dirs(proj.statcache)
    tracking.checkout(proj, ["data"], cwd=proj.root)
    assert (d / "sub" / "stray").exists()
    assert key(d / "sub") not in helpers.memo_rows(proj.statcache)
    assert tracking.status(proj) == fresh_status(proj, tmp_path)


def test_a_file_changed_while_the_checkout_lists_is_seen(
        proj: Project, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Changed after it was written (replaced, deleted, rewritten in place): the row is
    of the stat the checkout took, so a status's listing no longer matches it."""
    d = proj.root / "data"
    real = workspace.record_checkout

    def record(statcache, dirs, known, **kw):
        (d / "many" / "d000" / "f000003.dat").unlink()
        helpers.rewrite(d / "many" / "d001" / "f000011.dat", lambda b: b + b"!")
        p = d / "sub" / "rand.bin"
        st = os.stat(p)
        helpers.rewrite(p, lambda b: bytes([b[0] ^ 1]) + b[1:])
        os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))
        return real(statcache, dirs, known, **kw)
    monkeypatch.setattr(workspace, "record_checkout", record)
    shutil.rmtree(d)
    forget_dirs(proj.statcache)
    tracking.checkout(proj, ["data"], cwd=proj.root)
    monkeypatch.undo()
    [s] = tracking.status(proj)
    assert (s.state, s.modified, s.deleted) == \
        ("modified", ["many/d001/f000011.dat", "sub/rand.bin"], ["many/d000/f000003.dat"])
    assert [s] == fresh_status(proj, tmp_path)


def test_changes_after_checkout_are_seen(proj: Project, tmp_path: Path) -> None:
    d = restored(proj)
    (d / "many" / "d000" / "f000004.dat").unlink()
    (d / "many" / "d002" / "extra.txt").write_text("new\n")
    (d / "run.sh").chmod(0o644)
    [s] = tracking.status(proj)
    assert (s.state, s.added, s.modified, s.deleted) == \
        ("modified", ["many/d002/extra.txt"], ["run.sh"], ["many/d000/f000004.dat"])
    assert [s] == fresh_status(proj, tmp_path)


def test_partial_checkout_records_only_what_it_checked_out(project: Project,
                                                           monkeypatch: pytest.MonkeyPatch,
                                                           tmp_path: Path) -> None:
    a = helpers.write_tree(project.root / "a", {"x/1.txt": "1\n", "2.txt": "2\n"})
    b = helpers.write_tree(project.root / "b", {"y/3.txt": "3\n", "4.txt": "4\n"})
    tracking.add(project, ["a", "b"], cwd=project.root)
    project.statcache.clear()
    shutil.rmtree(a)
    shutil.rmtree(b)
    tracking.checkout(project, ["a"], cwd=project.root)
    memo = helpers.memo_rows(project.statcache)
    assert key(a) in memo and key(a / "x") in memo and not b.exists()
    assert tracking.status(project) == fresh_status(project, tmp_path)
    tracking.checkout(project, ["b"], cwd=project.root)
    spy = helpers.SnapshotSpy(monkeypatch, project.statcache)
    assert [s.state for s in tracking.status(project)] == ["unchanged", "unchanged"]
    assert spy.work == (0, 0, 0)


def test_force_over_local_changes(proj: Project, monkeypatch: pytest.MonkeyPatch,
                                  tmp_path: Path) -> None:
    d = proj.root / "data"
    (d / "a.txt").write_text("edited\n")
    (d / "many" / "d000" / "mine.txt").write_text("mine\n")
    shutil.rmtree(d / "sub" / "deeper")
    with pytest.raises(WouldOverwrite):
        tracking.checkout(proj, ["data"], cwd=proj.root)
    tracking.checkout(proj, ["data"], force=True, cwd=proj.root)
    assert set(map(key, all_dirs(d))) <= set(helpers.memo_rows(proj.statcache))
    spy = helpers.SnapshotSpy(monkeypatch, proj.statcache)
    [s] = tracking.status(proj)
    assert s.state == "unchanged" and spy.work == (0, 0, 0)
    assert [s] == fresh_status(proj, tmp_path)


# -- link modes ----------------------------------------------------------------------------

LINK_ORDERS = {"copy": "copy", "hardlink": "hardlink,copy", "symlink": "symlink,copy"}


@pytest.mark.parametrize("mode", list(LINK_ORDERS))
def test_link_modes(project: Project, mode: str, monkeypatch: pytest.MonkeyPatch,
                    tmp_path: Path) -> None:
    config_mod.set_value(project.store_dir / "config", "cache.compression", "none")
    set_links(project, LINK_ORDERS[mode])
    _link_mode_case(project, mode, monkeypatch, tmp_path)


def test_link_mode_reflink(reflink_dir: Path, monkeypatch: pytest.MonkeyPatch,
                           tmp_path: Path) -> None:
    from cas.workspace.project import init_project
    helpers.git(reflink_dir, "init", "-q")
    project, _ = init_project(reflink_dir)
    set_links(project, "reflink,copy")
    _link_mode_case(project, "reflink", monkeypatch, tmp_path)
    project.statcache.close()


def _link_mode_case(project: Project, mode: str, monkeypatch: pytest.MonkeyPatch,
                    tmp_path: Path) -> None:
    spec = helpers.rich_spec()
    spec["dup/one.txt"] = "same\n"  # one object, two files: one inode when hardlinked
    spec["dup/two.txt"] = "same\n"
    spec["exe/only.sh"] = helpers.Exe(b"#!/bin/sh\n")  # never linked: copied
    helpers.write_tree(project.root / "data", spec)
    tracking.add(project, ["data"], cwd=project.root)
    d = restored(project)
    memo = helpers.memo_rows(project.statcache)
    linked = {p for p in all_dirs(d) if any(f.is_symlink() and "/objects/" in os.readlink(f)
                                            for f in p.iterdir())}
    assert bool(linked) == (mode == "symlink")
    # Symlinks into the store stand for what the store holds: never memoized.
    assert {p for p in all_dirs(d) if key(p) not in memo} == linked
    spy = helpers.SnapshotSpy(monkeypatch, project.statcache)
    [s] = tracking.status(project)
    assert s.state == "unchanged"
    if mode != "symlink":
        assert spy.work == (0, 0, 0)
    monkeypatch.undo()
    assert [s] == fresh_status(project, tmp_path)
    # A change right after is seen, whatever the mode.
    co.unprotect(d / "dup" / "one.txt")  # (a no-op for a copy)
    (d / "dup" / "one.txt").write_text("diff\n")
    [s] = tracking.status(project)
    assert (s.state, s.modified) == ("modified", ["dup/one.txt"])
    assert [s] == fresh_status(project, tmp_path)
