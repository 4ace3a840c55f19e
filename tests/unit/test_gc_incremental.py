"""gc's incremental second pass and its cheap paths, under changes made between passes.

Pass B (under the store lock) walks only roots that pass A did not (a new or moved
ref, a new pointer), re-reads nothing pass A read, and re-stats each planned object
right before its unlink. These tests change the store between the passes (the
`confirm` callback runs exactly there) and check that nothing the change needs goes,
and that pass B really does no second walk. The last ones cover the plan's order
(kinds from referrers' hints, levels) and the policy's batched ref drop.
"""

from __future__ import annotations

import os

import pytest

from cas.gc import fsck
from cas.gc import inventory as gcinventory
from cas.gc import deletion as gcsweep
from cas.objects import record
from cas.store import refs
from cas.store import writer
from cas.gc.collect import gc
from cas.gc.reachability import BLOB, RECORD, TREE
from cas.gc.retention import Policy
from support import helpers
from support.gclab import DAY, NS, add, baseline, closure, make_experiment, markers, oids, replace_file
from support.oldforms import to_old_form


# -- changes between the passes ---------------------------------------------------------------------

def test_an_object_published_between_the_passes_is_kept(project, clock) -> None:
    add(project, "data", {"a.txt": "a\n"})
    replace_file(project, "data", "a.txt", "b\n")
    late = []

    def confirm(plan):
        assert len(plan.deleted) == 2
        # Unreferenced and, with --grace 0, old enough: but not in pass A's inventory.
        late.append(project.store.put_bytes(b"published after the inventory\n"))
        return True
    report = gc(project, grace_s=0, confirm=confirm)
    assert len(report.deleted) == 2 and late[0] in oids(project)
    assert late[0] in {d.oid for d in gc(project, grace_s=0).deleted}  # the next run takes it


def test_a_ref_moved_between_the_passes_keeps_its_new_target(project, clock) -> None:
    r1, out1 = make_experiment(project, "e1", created=1 * NS)
    r2, out2 = make_experiment(project, "e2", created=2 * NS, files={"w.bin": "weights 2\n"})
    refs.delete(project, baseline(project), "e2", r2)
    gone_soon = {r2} | closure(project, out2)

    def confirm(plan):
        assert gone_soon <= {d.oid for d in plan.deleted}
        refs.update(project, baseline(project), "e1", r2, r1)  # e1 now names e2's record
        return True
    report = gc(project, grace_s=0, confirm=confirm)
    assert not gone_soon & {d.oid for d in report.deleted}
    assert gone_soon <= oids(project)
    assert r1 in oids(project)  # marked in pass A: this run keeps it, the next one does not
    assert fsck.fsck(project).ok
    assert {r1} <= {d.oid for d in gc(project, grace_s=0).deleted}
    assert fsck.fsck(project).ok and gone_soon <= oids(project)


def test_a_ref_created_between_the_passes_keeps_its_record(project, clock) -> None:
    r1, out1 = make_experiment(project, "e1")
    refs.delete(project, baseline(project), "e1", r1)

    def confirm(plan):
        assert r1 in {d.oid for d in plan.deleted}
        refs.update(project, baseline(project), "again", r1, None)
        return True
    report = gc(project, grace_s=0, confirm=confirm)
    assert report.deleted == []
    assert {r1} | closure(project, out1) <= oids(project) and fsck.fsck(project).ok


def test_a_pointer_rewritten_between_the_passes_keeps_its_data(project, clock) -> None:
    v1 = add(project, "data", {"a.txt": "a\n", "sub/c.txt": "c\n"})
    add(project, "data", {"z.txt": "z\n"})

    def confirm(plan):
        assert v1.oid in {d.oid for d in plan.deleted}
        add(project, "data", {"a.txt": "a\n", "sub/c.txt": "c\n"})  # back to v1: same ids
        return True
    gc(project, grace_s=0, confirm=confirm)
    assert closure(project, v1.oid) <= oids(project) and fsck.fsck(project).ok


def test_an_object_freshened_between_the_passes_keeps_what_it_names(project, clock) -> None:
    v1 = add(project, "data", {"a.txt": "a\n", "sub/c.txt": "c\n"})
    add(project, "data", {"z.txt": "z\n"})
    clock.advance(2 * DAY)
    v1_only = closure(project, v1.oid)

    def confirm(plan):
        assert v1_only <= {d.oid for d in plan.deleted}
        # A writer that does not take the lock re-publishes v1: it finds the tree there
        # and freshens it (gc's clock is 2 days ahead, so "now" is an mtime 2 days on).
        path = project.store.info(v1.oid).path
        t = os.lstat(path).st_mtime_ns + 2 * DAY * NS
        os.utime(path, ns=(t, t))
        return True
    report = gc(project, grace_s=DAY, confirm=confirm)
    assert not v1_only & {d.oid for d in report.deleted}
    assert v1_only <= oids(project) and fsck.fsck(project).ok
    assert any("freshened during gc" in n for n in report.notes)
    assert {r.kind: r for r in report.roots}["grace"].objects == len(v1_only)


def test_the_second_pass_reads_nothing_the_first_one_read(project, clock, monkeypatch) -> None:
    for i in range(3):
        make_experiment(project, f"e{i}", created=(i + 1) * NS)
    add(project, "data", {"a.txt": "a\n", "d/b.txt": "b\n"})
    replace_file(project, "data", "a.txt", "A\n")
    captured = markers(monkeypatch)
    after_a: list = []
    with helpers.FileOpens() as opens:
        def confirm(plan):
            after_a.append((captured[-1].walker.structured_read, len(opens.objects(project.store))))
            return True
        report = gc(project, grace_s=0, confirm=confirm)
    assert len(report.deleted) == 2
    walker = captured[-1].walker
    opened = opens.objects(project.store)
    assert (walker.structured_read, len(opened)) == after_a[0]  # pass B opened no object
    # Pass A itself opened each object file at most once: a record read by the refs
    # provider is shared with the walker through the read cache, a header read whole
    # is not read again.
    assert opened and len(opened) == len(set(opened))
    assert set(opened) >= {oid for oid, _ in walker.kinds.items() if _ == RECORD}


# -- the plan's order ----------------------------------------------------------------------------

def _asked_headers(monkeypatch) -> list[str]:
    """Every id whose header gc's head reader is asked for."""
    asked: list[str] = []
    real = gcinventory.head_reader

    def head_reader(store, rstore, inv):
        head = real(store, rstore, inv)
        return lambda oid: (asked.append(oid), head(oid))[1]
    monkeypatch.setattr(gcinventory, "head_reader", head_reader)
    return asked


@pytest.mark.parametrize("blob_size", ["small", "big"])
def test_blobs_named_by_garbage_trees_are_never_opened(project, clock, monkeypatch, blob_size) -> None:
    """Big raw blobs (above writer.RAW_MAX) are classified last, so their tree names
    them first; small ones may be structured (a small tree is raw too), so any small
    raw object may have its header read, once, but a tree's hint still decides."""
    if blob_size == "big":
        spec = {f"f{i}.bin": os.urandom(writer.RAW_MAX + 1 + i) for i in range(5)}
    else:
        spec = {f"f{i}.txt": f"v1 {i}\n" for i in range(5)}
    v1 = add(project, "data", spec)
    add(project, "data", {"other.txt": "o\n"})
    blobs = closure(project, v1.oid) - {v1.oid}
    assert not any(project.store.info(o).compressed for o in closure(project, v1.oid))
    asked = _asked_headers(monkeypatch)
    report = gc(project, grace_s=0)
    assert {d.oid: d.kind for d in report.deleted} == {v1.oid: TREE, **{b: BLOB for b in blobs}}
    assert v1.oid in asked and len(asked) == len(set(asked))  # the tree's kind from its header
    if blob_size == "big":
        assert not set(asked) & blobs


def test_a_store_of_zstd_trees_opens_no_blob_a_garbage_tree_names(project, clock, monkeypatch) -> None:
    """A store written before small objects were stored raw: every tree is a small
    .zst, classified before every raw object, so its small raw blobs are never read."""
    v1 = add(project, "data", {f"f{i}.txt": f"v1 {i}\n" for i in range(5)})
    add(project, "data", {"other.txt": "o\n"})
    for oid in oids(project):
        if project.store.get(oid)[:3] == b"TLY":
            to_old_form(project.store, oid)
    blobs = closure(project, v1.oid) - {v1.oid}
    assert project.store.info(v1.oid).compressed
    asked = _asked_headers(monkeypatch)
    report = gc(project, grace_s=0)
    assert {d.oid: d.kind for d in report.deleted} == {v1.oid: TREE, **{b: BLOB for b in blobs}}
    assert v1.oid in asked and not set(asked) & blobs
    assert fsck.fsck(project).ok


def test_a_garbage_record_chain_is_one_level(project, clock, monkeypatch) -> None:
    """Parent records are optional edges: a chain of dropped records needs no barrier
    per generation, while required edges (record -> tree -> blob) still order."""
    base = baseline(project)
    parent = None
    chain = []
    for i in range(4):
        with project.store.writer() as w:
            logs = w.put_bytes(f"log {i}\n".encode())
            rid = record.put(w, record.Record(name=f"r{i}", baseline=base, created=i + 1,
                                              status="success", logs=logs, parent=parent))
        chain.append(rid)
        parent = rid
    rid, out = make_experiment(project, "e")
    refs.delete(project, base, "e", rid)
    levels: list[list[str]] = []  # as the plan hands them to the sweep
    real = gcsweep.sweep
    monkeypatch.setattr(gcsweep, "sweep", lambda store, lv, *a, **kw: (levels.extend(lv),
                                                                        real(store, lv, *a, **kw))[1])
    report = gc(project, grace_s=0)
    kinds = {d.oid: d.kind for d in report.deleted}
    records = [lv for lv in levels if all(kinds[o] == RECORD for o in lv)]
    assert len(records) == 1 and set(records[0]) == set(chain) | {rid}
    index = {o: i for i, lv in enumerate(levels) for o in lv}
    assert index[rid] < index[out] < max(index.values())
    assert fsck.fsck(project).ok


# -- the policy's batched ref drop ---------------------------------------------------------------

def test_policy_drops_many_refs_in_one_batch(project, clock, monkeypatch) -> None:
    ids = [make_experiment(project, f"e{i}", created=(i + 1) * NS, metrics={"acc": i / 100})[0]
           for i in range(70)]  # more than PARALLEL_MIN: the unlinks go to threads
    barriers = []
    real = gcsweep.barrier
    monkeypatch.setattr(gcsweep, "barrier", lambda store: (barriers.append(1), real(store))[1])
    monkeypatch.setattr(refs, "delete", lambda *a, **kw: pytest.fail("one ref at a time"))
    report = gc(project, grace_s=0, policy=Policy(keep_best=5, sort_by="acc:max"))
    assert sorted(n for _, n, _ in refs.list_refs(project)) == [f"e{i}" for i in range(65, 70)]
    assert len(report.dropped) == 65 and set(ids[:65]) <= {d.oid for d in report.deleted}
    assert 0 < len(barriers) <= 4  # refs, records, trees (no barrier after the blobs)
    assert fsck.fsck(project).ok
    report = gc(project, grace_s=0, policy=Policy(keep_best=0, keep_last=0, older_than="0s"))
    assert refs.list_refs(project) == [] and not (refs.refs_root(project) / baseline(project)).exists()


def test_remove_deletes_many_refs_in_one_batch_each_by_compare_and_swap(project, clock, monkeypatch) -> None:
    from cas.experiments import removal
    from cas.core.errors import Conflict, NotFound

    base = baseline(project)
    ids = {f"e{i}": make_experiment(project, f"e{i}", created=(i + 1) * NS)[0] for i in range(70)}
    moved, other = ids["e3"], ids["e4"]
    refs.update(project, base, "e3", other, moved)  # e3 moved since it was listed
    monkeypatch.setattr(refs, "delete", lambda *a, **kw: pytest.fail("one ref at a time"))
    items = [(base, n, oid) for n, oid in ids.items()] + [(base, "ghost", moved)]
    errors = removal.delete_refs(project, items)
    assert isinstance(errors[3], Conflict) and "changed meanwhile" in errors[3].message
    assert isinstance(errors[-1], NotFound)
    assert [e for i, e in enumerate(errors) if i not in (3, len(items) - 1)] == [None] * 69
    assert [(n, o) for _, n, o in refs.list_refs(project)] == [("e3", other)]
    assert removal.delete_refs(project, [(base, "e3", other)]) == [None]
    assert not (refs.refs_root(project) / base).exists()  # the last ref took its directory


# -- the forked sweep (levels of PARALLEL_MIN objects or more) ------------------------------------

def _many_garbage_blobs(project, n: int = 150) -> tuple[str, set[str]]:
    """A replaced directory of `n` files: its tree and `n` blobs become garbage."""
    v1 = add(project, "data", {f"f{i:03d}.txt": f"v1 {i}\n" for i in range(n)})
    add(project, "data", {"other.txt": "o\n"})
    return v1.oid, closure(project, v1.oid) - {v1.oid}


@pytest.mark.parametrize("per_child", [1000, 16])  # one child, or several
def test_the_forked_sweep_deletes_and_reports_as_the_inline_one(project, clock, monkeypatch, tmp_path,
                                                                per_child) -> None:
    import shutil

    top, blobs = _many_garbage_blobs(project)
    twin = tmp_path / "twin"
    shutil.copytree(project.root, twin, symlinks=True)
    monkeypatch.setattr(gcsweep, "PER_CHILD", per_child)
    forked = gc(project, grace_s=0)
    from cas.workspace.project import open_project
    monkeypatch.setattr(gcsweep, "FORK", False)  # threads
    threaded = gc(open_project(twin), grace_s=0)
    assert [d.to_json() for d in forked.deleted] == [d.to_json() for d in threaded.deleted]
    assert {d.oid for d in forked.deleted} == blobs | {top}
    assert set(oids(project)).isdisjoint(blobs) and fsck.fsck(project).ok


def test_the_forked_sweep_keeps_what_got_young_and_skips_what_went(project, clock, monkeypatch) -> None:
    top, blobs = _many_garbage_blobs(project)
    clock.advance(2 * DAY)
    young, went = sorted(blobs)[:2]

    def confirm(plan):
        path = project.store.raw_path(young)
        t = os.lstat(path).st_mtime_ns + 2 * DAY * NS
        os.utime(path, ns=(t, t))  # freshened by a writer that does not lock
        project.store.delete(went)  # and another one gone already
        return True
    monkeypatch.setattr(gcsweep, "PER_CHILD", 16)
    report = gc(project, grace_s=DAY, confirm=confirm)
    deleted = {d.oid for d in report.deleted}
    assert deleted == (blobs | {top}) - {young, went}
    assert young in oids(project) and any(young in n for n in report.notes)
    assert fsck.fsck(project).ok


def test_a_forked_childs_error_stops_gc_after_reaping_every_child(project, clock, monkeypatch) -> None:
    top, blobs = _many_garbage_blobs(project)
    bad = sorted(blobs)[40]
    real = gcsweep.unlink_object

    def unlink(store, oid, forms):
        if oid == bad:
            raise PermissionError(13, "Permission denied", store.raw_path(oid))
        real(store, oid, forms)
    monkeypatch.setattr(gcsweep, "unlink_object", unlink)  # inherited by the children
    monkeypatch.setattr(gcsweep, "PER_CHILD", 16)
    with pytest.raises(PermissionError) as exc:
        gc(project, grace_s=0)
    assert exc.value.filename == project.store.raw_path(bad)
    assert bad in oids(project) and top not in oids(project)  # the tree went first
    assert fsck.fsck(project).ok
    with pytest.raises(ChildProcessError):
        os.waitpid(-1, os.WNOHANG)  # no child left behind
    # The other children finished their parts; the failing one stopped at `bad`.
    left = blobs & oids(project)
    assert bad in left and len(left) < len(blobs) // 2
    monkeypatch.setattr(gcsweep, "unlink_object", real)
    assert {d.oid for d in gc(project, grace_s=0).deleted} == left
    assert set(oids(project)).isdisjoint(blobs) and fsck.fsck(project).ok


def test_a_crash_in_a_forked_child_kills_gc_and_leaves_a_consistent_store(repo) -> None:
    import subprocess
    import sys
    from pathlib import Path

    from support import helpers
    from cas.workspace import tracking
    from cas.workspace.project import init_project

    p, _ = init_project(repo)
    helpers.write_tree(repo / "data", {f"f{i:03d}.txt": f"v1 {i}\n" for i in range(200)})
    tracking.add(p, [str(repo / "data")])
    helpers.write_tree(repo / "data", {f"f{i:03d}.txt": f"v2 {i}\n" for i in range(200)})
    tracking.add(p, [str(repo / "data")])
    p.statcache.close()
    before = oids(p)
    root = str(Path(__file__).resolve().parents[2])
    env = {**os.environ, "PYTHONPATH": root, "TALLY_FAILPOINT": "gc:delete:30"}
    r = subprocess.run([sys.executable, "-m", "cli", "gc", "--grace", "0", "--yes"], cwd=repo,
                       capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == -9, r.stderr  # the child took its parent with it
    after = oids(p)
    assert after < before and fsck.fsck(p).ok
    del env["TALLY_FAILPOINT"]
    r = subprocess.run([sys.executable, "-m", "cli", "gc", "--grace", "0", "--yes"], cwd=repo,
                       capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    assert len(oids(p)) == len(before) - 201 and fsck.fsck(p).ok


def test_a_forked_child_that_dies_stops_gc(project, clock, monkeypatch) -> None:
    top, blobs = _many_garbage_blobs(project)
    bad = sorted(blobs)[40]
    real = gcsweep.unlink_object

    def unlink(store, oid, forms):
        if oid == bad:
            os.kill(os.getpid(), 9)  # the child dies mid-part, its report unwritten
        real(store, oid, forms)
    monkeypatch.setattr(gcsweep, "unlink_object", unlink)
    monkeypatch.setattr(gcsweep, "PER_CHILD", 16)
    with pytest.raises(RuntimeError, match="died of signal 9"):
        gc(project, grace_s=0)
    assert bad in oids(project) and fsck.fsck(project).ok
    with pytest.raises(ChildProcessError):
        os.waitpid(-1, os.WNOHANG)
    monkeypatch.setattr(gcsweep, "unlink_object", real)
    gc(project, grace_s=0)
    assert set(oids(project)).isdisjoint(blobs | {top}) and fsck.fsck(project).ok
