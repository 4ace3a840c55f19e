"""gc: roots, grace, order, refusals, temp files, retention, and the CLI around it.

Objects are aged by moving gc's clock (the `clock` fixture), never by sleeping.
Crash injection and concurrency live in tests/test_gc_concurrency.py; hostile
objects in tests/test_hostile.py.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import sqlite3
import sys
from pathlib import Path

import msgpack
import pytest

from support import helpers
from cas.objects import envelope
from cas.gc import fsck
from cas.gc import collect as gc_mod
from cas.gc import deletion as gcsweep
from cas.gc import reachability
from cas.objects import pointer
from cas.objects import record
from cas.store import refs
from cas.workspace import tracking
from cas.objects import tree
from cas.core.errors import LockBusy, UsageError
from cas.gc.collect import GcRefused, gc
from cas.gc.reachability import BLOB, LAYER, RECORD, TREE
from cas.gc.retention import Candidate, Drop, Policy, metric_value, select
from cli.main import run
from support.gclab import DAY, NS, add, replace_file, closure, oids, commit, baseline, deletion_log, make_experiment



# -- fixtures and builders ------------------------------------------------------------------



















# -- mark and sweep -------------------------------------------------------------------------

def test_the_clock_reaches_every_age_gc_reads(project, clock) -> None:
    """The fixture patches gc's modules where they look the names up: an object aged
    by `extra` is old to the inventory (pass A plans it) and to the re-stat right
    before its unlink (pass B deletes it rather than keep it as freshened)."""
    oid = project.store.put_bytes(b"unreferenced\n")
    clock.extra[oid] = 3 * DAY
    report = gc(project)  # default grace 24 h
    assert oid in {d.oid for d in report.deleted} and oid not in oids(project)
    assert not any(oid in n for n in report.notes)


def test_replaced_data_goes_and_workspace_data_stays(project, clock) -> None:
    v1 = add(project, "data", {"a.txt": "a\n", "b.txt": "b\n", "sub/c.txt": "c\n"})
    v2 = replace_file(project, "data", "b.txt", "B\n")
    old = closure(project, v1.oid) - closure(project, v2.oid)
    assert len(old) == 2  # the root tree and b's blob; sub/ is shared
    report = gc(project, grace_s=0)
    assert {d.oid for d in report.deleted} == old
    assert {d.kind for d in report.deleted} == {TREE, BLOB}
    assert oids(project) == closure(project, v2.oid)
    assert fsck.fsck(project).ok
    ws = {r.kind: r for r in report.roots}["workspace"]
    assert ws.roots == 1 and ws.objects == len(closure(project, v2.oid)) == report.kept_objects
    # A rerun has nothing left to do.
    assert gc(project, grace_s=0).deleted == []


def test_grace_period_keeps_young_garbage_and_everything_it_names(project, clock) -> None:
    v1 = add(project, "data", {"a.txt": "a\n", "sub/c.txt": "c\n"})
    v2 = replace_file(project, "data", "a.txt", "A\n")
    report = gc(project)  # default 24 h: everything is minutes old
    assert report.deleted == [] and report.young_objects == 2
    assert {r.kind for r in report.roots} == {"workspace", "grace"}
    clock.advance(2 * DAY)
    report = gc(project)
    assert len(report.deleted) == 2 and report.young_objects == 0
    # A young unreferenced tree keeps an old blob it names, though no root reaches it:
    # deleting the blob would leave a present tree naming a missing object.
    v3 = replace_file(project, "data", "a.txt", "again\n")
    young_tree = v3.oid
    old_blob = next(e.oid for _, e in tree.walk(v3.oid, lambda o: tree.decode(project.store.get(o)))
                    if e.name == "a.txt")
    add(project, "data", {"a.txt": "final\n"})
    clock.offset_s = 0
    clock.extra[old_blob] = 3 * DAY
    report = gc(project)
    assert young_tree in oids(project) and old_blob in oids(project)
    assert old_blob not in {d.oid for d in report.deleted}


def test_dry_run_reports_exactly_what_a_run_deletes(project, clock) -> None:
    add(project, "data", {"a.txt": "a\n", "b.txt": "b\n"})
    replace_file(project, "data", "a.txt", "x\n")
    replace_file(project, "data", "b.txt", "y\n")
    before = oids(project)
    plan = gc(project, grace_s=0, dry_run=True)
    assert oids(project) == before and plan.dry_run
    done = gc(project, grace_s=0)
    assert [d.to_json() for d in plan.deleted] == [d.to_json() for d in done.deleted]
    assert plan.deleted_bytes == done.deleted_bytes > 0
    assert before - oids(project) == {d.oid for d in done.deleted}


def test_json_report_shape(project, clock) -> None:
    add(project, "data", {"a.txt": "a\n"})
    replace_file(project, "data", "a.txt", "b\n")
    doc = gc(project, grace_s=0, dry_run=True).to_json()
    assert set(doc) >= {"dry_run", "grace_seconds", "scope", "store", "kept", "young", "deleted",
                        "roots", "dropped_experiments", "temp_files", "problems", "notes"}
    assert doc["deleted"]["objects"] == 2 == len(doc["deleted"]["list"])
    assert doc["deleted"]["by_kind"] == {"blob": {"objects": 1, "bytes": doc["deleted"]["list"][-1]["bytes"]},
                                         "tree": {"objects": 1, "bytes": doc["deleted"]["list"][0]["bytes"]}}
    assert doc["store"]["objects"] == doc["kept"]["objects"] + doc["deleted"]["objects"]
    json.dumps(doc)


def test_deletion_order_is_records_then_trees_then_blobs(project, clock, monkeypatch) -> None:
    add(project, "data", {"x/y/z.txt": "deep\n", "top.txt": "t\n"})
    rid, out = make_experiment(project, "e1")
    refs.delete(project, baseline(project), "e1", rid)
    add(project, "data", {"other.txt": "o\n"})
    order = deletion_log(monkeypatch)
    kinds = {d.oid: d.kind for d in gc(project, grace_s=0).deleted}
    assert sorted(order) == sorted(kinds)
    layers = [LAYER[kinds[o]] for o in order]
    assert layers == sorted(layers) and kinds[order[0]] == RECORD
    assert {kinds[o] for o in order} == {RECORD, TREE, BLOB}
    assert order.index(rid) < order.index(out)


def test_trees_are_deleted_parents_first(project, clock, monkeypatch) -> None:
    v1 = add(project, "data", {"x/y/z.txt": "deep\n"})
    load = lambda o: tree.decode(project.store.get(o))  # noqa: E731
    chain = [t for _, t in tree.walk_trees(v1.oid, load)]  # data, x, x/y: parents first
    add(project, "data", {"q.txt": "q\n"})
    order = deletion_log(monkeypatch)
    gc(project, grace_s=0)
    assert [o for o in order if o in chain] == chain


def _envelope_lookalikes(project) -> dict[str, bytes]:
    """Small user files that start like structured objects (raw in the store, like
    every small tree and record): bad bodies, a valid tree naming other garbage, a
    valid record, an entry-like list of ids."""
    a, b = (project.store.put_bytes(x) for x in (b"named by the fake tree\n", b"another\n"))
    fake_tree = tree.encode(tree.make([tree.Entry("x", tree.DIR, a, 1, 0), tree.Entry("y", tree.FILE, b, 1, 0o644)],
                                      subtree_files={"x": 1}))
    fake_record = record.encode(record.Record(name="r", baseline="ab" * 20, created=1, status="success",
                                              workspace=b, logs=a))
    return {"bad-tree": envelope.MAGIC + envelope.KIND_TREE + b"\x01" + b"\xc1 not msgpack",
            "bad-record": envelope.MAGIC + envelope.KIND_RECORD + b"\x01\x93\x01\x02",
            "entry": envelope.MAGIC + envelope.KIND_RUNCACHE + b"\x01" + msgpack.packb([bytes.fromhex(a)]),
            "unknown-kind": envelope.MAGIC + b"Z\x01\x90",
            "header-only": envelope.MAGIC + envelope.KIND_TREE + b"\x01",
            "valid-tree": fake_tree, "valid-record": fake_record}


@pytest.mark.parametrize("lookalikes_first", [True, False])
def test_a_user_file_that_looks_structured_is_a_blob_deleted_after_its_tree(
        project, clock, monkeypatch, lookalikes_first) -> None:
    """A referrer's hint is trusted: a garbage tree names these files as files, so they
    are blobs, deleted after that tree, whichever gc classifies first (the files are
    small and raw, so they are among the objects whose header it may read first)."""
    files = _envelope_lookalikes(project)
    v1 = add(project, "data", {name: data for name, data in files.items()})
    add(project, "data", {"new.txt": "new\n"})
    blobs = {e.name: e.oid for e in tree.decode(project.store.get(v1.oid)).entries}
    assert not any(project.store.info(o).compressed for o in blobs.values())
    ordered: list[int] = []
    if lookalikes_first:
        # The worst order: the tree classified last, every lookalike's header read first.
        real_order = reachability.deletion_order
        monkeypatch.setattr(gc_mod, "deletion_order", lambda garbage, walker, first: (
            ordered.append(1), real_order(garbage, walker, first=lambda o: o == v1.oid))[1])
    order = deletion_log(monkeypatch)
    report = gc(project, grace_s=0)
    kinds = {d.oid: d.kind for d in report.deleted}
    assert kinds[v1.oid] == TREE and {kinds[o] for o in blobs.values()} == {BLOB}
    assert all(order.index(v1.oid) < order.index(o) for o in blobs.values())
    assert len(ordered) == lookalikes_first  # the worst order was gc's plan
    assert not set(blobs.values()) & oids(project) and fsck.fsck(project).ok


def test_history_roots(project, clock) -> None:
    root = project.root
    v1 = add(project, "data", {"a.txt": "v1\n"})
    commit(root, "data.tally", ".gitignore", msg="v1")
    helpers.git(root, "tag", "t1")
    v2 = replace_file(project, "data", "a.txt", "v2\n")
    commit(root, "data.tally", msg="v2")
    helpers.git(root, "checkout", "-q", "-b", "side")
    v3 = replace_file(project, "data", "a.txt", "v3\n")
    commit(root, "data.tally", msg="v3")
    helpers.git(root, "checkout", "-q", "main")
    # The work tree now has v2's pointer (git checkout), v3 lives on branch side only,
    # v1 on an older commit and a tag.
    assert pointer.read(root, "data").oid == v2.oid
    need = lambda *ps: set().union(*(closure(project, p.oid) for p in ps))  # noqa: E731
    plan = {d.oid for d in gc(project, grace_s=0, dry_run=True).deleted}
    assert plan == need(v1, v3) - need(v2)
    plan = {d.oid for d in gc(project, grace_s=0, dry_run=True, all_branches=True).deleted}
    assert plan == need(v1) - need(v2, v3)
    plan = {d.oid for d in gc(project, grace_s=0, dry_run=True, all_tags=True).deleted}
    assert plan == need(v3) - need(v1, v2)
    report = gc(project, grace_s=0, all_commits=True)
    assert report.deleted == [] and "all commits" in report.scope
    hist = {r.kind: r for r in report.roots}["history"]
    assert hist.roots == 3 and hist.exclusive_objects == len(need(v1, v3) - need(v2))


def test_tally_lock_names_are_roots_and_absent_ones_are_ignored(project, clock) -> None:
    v1 = add(project, "data", {"a.txt": "v1\n"})
    (project.root / "tally.lock").write_text(
        f"schema: '1'\nstages:\n  train:\n    outs:\n    - path: data\n      oid: {v1.oid}\n"
        f"    deps:\n    - path: train.py\n      oid: {'ab' * 32}\n")
    (project.root / "data.tally").unlink()
    report = gc(project, grace_s=0)
    assert report.deleted == [] and closure(project, v1.oid) <= oids(project)
    need = closure(project, v1.oid)
    (project.root / "tally.lock").unlink()
    assert {d.oid for d in gc(project, grace_s=0).deleted} == need


# -- refusals ---------------------------------------------------------------------------------

def _garbage(project) -> set[str]:
    add(project, "junk", {"j.txt": "junk\n"})
    (project.root / "junk.tally").unlink()
    return set()


@pytest.mark.parametrize("damage", ["delete-blob", "delete-subtree", "corrupt-tree", "truncate-tree"])
def test_a_root_naming_a_missing_or_corrupt_object_stops_gc(project, clock, damage) -> None:
    v = add(project, "data", {"a.txt": "a\n", "sub/b.txt": "b\n"})
    load = lambda o: tree.decode(project.store.get(o))  # noqa: E731
    sub = next(t for p, t in tree.walk_trees(v.oid, load) if p.endswith("sub"))
    blob = next(e.oid for _, e in tree.walk(v.oid, load) if e.name == "a.txt")
    _garbage(project)
    s = project.store
    if damage == "delete-blob":
        s.delete(blob)
    elif damage == "delete-subtree":
        s.delete(sub)
    elif damage == "corrupt-tree":
        helpers.flip_byte(s.info(v.oid).path, -2)
    else:
        helpers.truncate(s.info(v.oid).path, 8)
    before = oids(project)
    with pytest.raises(GcRefused) as exc:
        gc(project, grace_s=0)
    assert oids(project) == before
    assert exc.value.exit_code == 5 and exc.value.report.problems
    assert all("data.tally" in p.detail for p in exc.value.report.problems)
    with pytest.raises(GcRefused):
        gc(project, grace_s=0, dry_run=True)
    report = gc(project, grace_s=0, force=True)
    assert report.forced and report.problems
    gone = {d.oid for d in report.deleted}
    if damage.startswith("delete"):
        # The root tree still reads: everything it names that is present stays.
        assert v.oid not in gone and blob not in gone
    else:
        # The root tree is unreadable: force keeps only what can be proven reachable,
        # and the damaged tree itself (a root names it; `fsck --repair` removes it).
        assert v.oid not in gone and blob in gone


def test_a_malformed_pointer_stops_gc(project, clock) -> None:
    add(project, "data", {"a.txt": "a\n"})
    _garbage(project)
    (project.root / "bad.tally").write_text("format: 1\noid: nothex\n")
    before = oids(project)
    with pytest.raises(GcRefused) as exc:
        gc(project, grace_s=0)
    assert oids(project) == before
    assert exc.value.report.problems[0].kind == "pointer"


def test_refs_without_a_provider_stop_gc(project, clock, monkeypatch) -> None:
    rid, _ = make_experiment(project, "e1")
    from cas.gc import providers, roots
    monkeypatch.setattr(roots, "PROVIDERS", tuple(p for p in providers.PROVIDERS
                                                  if p.kind != "experiments"))
    with pytest.raises(GcRefused) as exc:
        gc(project, grace_s=0)
    assert "no root provider" in exc.value.report.problems[0].detail
    assert rid in oids(project)


def test_experiment_records_and_what_they_name_are_kept(project, clock) -> None:
    rid, out = make_experiment(project, "e1", files={"m.bin": "weights\n"})
    report = gc(project, grace_s=0)
    assert report.deleted == []
    exp = {r.kind: r for r in report.roots}["experiments"]
    assert exp.objects == 4  # record, out tree, its blob, logs
    refs.delete(project, baseline(project), "e1", rid)
    assert {d.oid for d in gc(project, grace_s=0).deleted} >= {rid, out}
    assert fsck.fsck(project).ok


def test_a_record_missing_its_output_stops_gc(project, clock) -> None:
    rid, out = make_experiment(project, "e1")
    project.store.delete(out)
    with pytest.raises(GcRefused) as exc:
        gc(project, grace_s=0)
    assert any(p.where == out for p in exc.value.report.problems)
    assert not fsck.fsck(project).ok


# -- temp files and the stat cache ------------------------------------------------------------

def test_stale_temp_files_go_others_stay(project, clock) -> None:
    tmp = project.store.tmp
    tmp.mkdir(parents=True, exist_ok=True)
    names = {"stale": "obj-123-0badcafe-7", "clock": "clock-99-1234", "probe": ".reflink-probe-5-a",
             "log": "run-123-abcd1234.log", "other": "notes.txt"}
    for n in names.values():
        (tmp / n).write_bytes(b"x" * 10)
    (tmp / "run-dir").mkdir()
    (tmp / "run-dir" / "obj-1-0badcafe-1").write_bytes(b"y")
    report = gc(project, grace_s=0)
    assert report.temp_files == []  # younger than the floor even at --grace 0
    clock.advance(gcsweep.TMP_FLOOR_S + 1)
    plan = gc(project, grace_s=0, dry_run=True)
    assert sorted(plan.temp_files) == sorted([names["stale"], names["clock"], names["probe"]])
    assert (tmp / names["stale"]).exists()
    report = gc(project, grace_s=0)
    assert report.temp_bytes == 30
    left = {p.name for p in tmp.iterdir()}
    assert {names["log"], names["other"], "run-dir"} <= left and names["stale"] not in left
    assert (tmp / "run-dir" / "obj-1-0badcafe-1").exists()
    clock.advance(-gcsweep.TMP_FLOOR_S - 1)


def test_stat_cache_entries_of_deleted_objects_are_forgotten(project, clock) -> None:
    helpers.write_tree(project.root / "data", {"keep.txt": "k\n", "gone.txt": "g\n"})
    helpers.settle(project.statcache, [project.root / "data"])
    tracking.add(project, [str(project.root / "data")])  # records both files
    (project.root / "data" / "gone.txt").unlink()
    tracking.add(project, [str(project.root / "data")])
    def rows() -> set[str]:  # read through a connection of our own, as helpers.memo_rows
        db = sqlite3.connect(project.statcache.db_path)
        try:
            return {o for (o,) in db.execute("SELECT oid FROM entries")}
        finally:
            db.close()
    before = rows()
    report = gc(project, grace_s=0)
    gone = {d.oid for d in report.deleted}
    assert before & gone, "the test needs a cached entry that gc deletes"
    assert not rows() & gone and rows() == before - gone


# -- locking ------------------------------------------------------------------------------------

def test_gc_waits_for_writers_and_gives_up_naming_them(project, clock) -> None:
    add(project, "data", {"a.txt": "a\n"})
    replace_file(project, "data", "a.txt", "b\n")
    before = oids(project)
    with project.lock("store", shared=True, purpose="tally add"):
        with pytest.raises(LockBusy) as exc:
            gc(project, grace_s=0, lock_wait=0.2)
        # A dry run takes no lock.
        assert len(gc(project, grace_s=0, dry_run=True).deleted) == 2
    assert "gc waited" in exc.value.message and exc.value.exit_code == 7
    assert oids(project) == before
    assert len(gc(project, grace_s=0).deleted) == 2


def test_confirm_sees_the_plan_and_the_sweep_deletes_at_most_it(project, clock) -> None:
    add(project, "data", {"a.txt": "a\n"})
    replace_file(project, "data", "a.txt", "b\n")
    seen = []
    report = gc(project, grace_s=0, confirm=lambda plan: seen.append(len(plan.deleted)) or False)
    assert report.cancelled and report.deleted == [] and seen == [2]
    planned = set()

    def confirm(plan):
        planned.update(d.oid for d in plan.deleted)
        # Garbage made after the plan was shown is not deleted this time.
        replace_file(project, "data", "a.txt", "c\n")
        return True
    report = gc(project, grace_s=0, confirm=confirm)
    assert {d.oid for d in report.deleted} == planned
    assert len(gc(project, grace_s=0).deleted) == 2


# -- retention: the policy on plain data -----------------------------------------------------------

def exps(*rows) -> list[Candidate]:
    """rows: (name, created_day, status, acc)"""
    return [Candidate("c" * 40, n, f"{i:064x}", d * DAY * NS, s,
                       {} if acc is None else {"metrics.json:acc": acc, "metrics.json:loss": 1 - acc})
            for i, (n, d, s, acc) in enumerate(rows)]


def names(drops: list[Drop]) -> list[str]:
    return [d.exp.name for d in drops]


NOW = 100 * DAY * NS
SAMPLE = exps(("a", 1, "success", 0.5), ("b", 2, "failed", None), ("c", 3, "success", 0.9),
              ("d", 4, "success", 0.7), ("e", 5, "interrupted", 0.99), ("f", 6, "running", None),
              ("g", 7, "queued", None), ("h", 90, "success", None), ("u", 0, "unreadable", None))


@pytest.mark.parametrize("policy, dropped", [
    (Policy(), []),
    (Policy(drop_failed=True), ["b", "e"]),
    (Policy(keep_last=2), ["a", "b", "c", "d"]),
    (Policy(keep_last=2, drop_failed=True), ["a", "b", "c", "e"]),
    (Policy(keep_best=1, sort_by="acc:max"), ["a", "b", "c", "d", "h"]),
    (Policy(keep_best=2, sort_by="acc:max", drop_failed=True), ["a", "b", "e", "h"]),
    (Policy(keep_best=1, sort_by="loss:min"), ["a", "b", "c", "d", "h"]),
    (Policy(keep_best=1, sort_by="metrics.json:acc:min"), ["b", "c", "d", "e", "h"]),
    (Policy(older_than="30d"), ["a", "b", "c", "d", "e"]),
    (Policy(older_than="30d", keep_last=1), ["a", "b", "c", "d", "e"]),
    (Policy(older_than="96d", keep_best=1, sort_by="acc:max"), ["a", "b", "c"]),
    (Policy(older_than="96d", keep_best=1, sort_by="acc:max", drop_failed=True), ["a", "b", "e"]),
    (Policy(keep_last=1, keep_best=1, sort_by="acc:max"), ["a", "b", "c", "d"]),
])
def test_policy_selection(policy, dropped) -> None:
    assert names(select(SAMPLE, policy, now_ns=NOW)) == dropped


def test_policy_never_drops_promoted_running_queued_or_unreadable() -> None:
    everything = Policy(keep_last=0, older_than="0", drop_failed=True)
    promoted = {"c", "e"}
    got = names(select(SAMPLE, everything, now_ns=NOW, promoted=lambda e: e.name in promoted))
    assert got == ["a", "b", "d", "h"]


def test_policy_reasons_and_validation() -> None:
    d = select(SAMPLE, Policy(keep_last=2, older_than="30d"), now_ns=NOW)
    assert d[0].reason == "not among the last 2, older than 30d"
    assert select(SAMPLE, Policy(drop_failed=True), now_ns=NOW)[0].reason == "status failed"
    with pytest.raises(UsageError, match=":max or :min"):
        Policy(keep_best=3, sort_by="acc")
    with pytest.raises(UsageError, match="needs --sort-by"):
        Policy(keep_best=3)
    with pytest.raises(UsageError):
        Policy(older_than="soon")
    with pytest.raises(UsageError, match="ambiguous"):
        metric_value({"a.json:acc": 1, "b.json:acc": 2}, "acc")
    assert metric_value({"a.json:acc": float("nan")}, "acc") is None
    assert metric_value({"a.json:acc": True}, "acc") is None


# -- retention end to end -------------------------------------------------------------------------

def test_policy_drops_refs_then_their_objects(project, clock) -> None:
    ids = {}
    for i, (n, acc, st) in enumerate([("e1", 0.1, "success"), ("e2", 0.9, "success"),
                                      ("e3", 0.5, "failed"), ("e4", 0.3, "success")]):
        ids[n] = make_experiment(project, n, status=st, created=(i + 1) * NS, metrics={"acc": acc})
    plan = gc(project, grace_s=0, dry_run=True, policy=Policy(keep_best=1, sort_by="acc:max",
                                                              drop_failed=True))
    assert sorted(d.exp.name for d in plan.dropped) == ["e1", "e3", "e4"]
    assert {n for _, n, _ in refs.list_refs(project)} == {"e1", "e2", "e3", "e4"}
    planned = {d.oid for d in plan.deleted}
    assert {ids[n][0] for n in ("e1", "e3", "e4")} <= planned and ids["e2"][0] not in planned
    report = gc(project, grace_s=0, policy=Policy(keep_best=1, sort_by="acc:max", drop_failed=True))
    assert {n for _, n, _ in refs.list_refs(project)} == {"e2"}
    assert {d.oid for d in report.deleted} == planned
    assert fsck.fsck(project).ok


def test_policy_from_config_and_only_a_commit_naming_the_record_promotes(project, clock) -> None:
    """A committed pointer (or tally.lock) naming an experiment's output does not
    promote the experiment: its ref may go, the data stays while history names it."""
    from cas.store import config as config_mod
    from cas.workspace.project import open_project

    base = baseline(project)
    r1, out1 = make_experiment(project, "old1", created=1 * NS)
    r2, out2 = make_experiment(project, "old2", created=2 * NS)
    r3, out3 = make_experiment(project, "old3", created=3 * NS)
    (project.root / "model.tally").write_bytes(pointer.Pointer("model", out2, True, 1, 1).encode())
    commit(project.root, "model.tally", msg="old2's output, committed by hand")
    (project.root / "model.tally").unlink()
    helpers.git(project.root, "commit", "-q", "--allow-empty", "-m", f"promote\n\nTally-Record: {r3}")
    config_mod.set_value(project.store_dir / "config", "gc.older_than", "1d")
    project = open_project(project.root)
    report = gc(project, grace_s=0, all_branches=True)
    assert [d.exp.name for d in report.dropped] == ["old1", "old2"]
    assert [(k.exp.name, k.reason) for k in report.kept_experiments] == [
        ("old3", "promoted (a commit names its record)")]
    assert report.to_json()["kept_experiments"] == [
        {"baseline": base, "name": "old3", "record": r3,
         "reason": "promoted (a commit names its record)"}]
    assert r1 not in oids(project) and r2 not in oids(project) and r3 in oids(project)
    assert out2 in oids(project)  # named by the committed pointer
    assert gc(project, grace_s=0, policy=Policy()).dropped == []


def test_policy_respects_a_ref_that_moved_after_the_plan(project, clock) -> None:
    r1, _ = make_experiment(project, "e1", created=1 * NS)

    def confirm(plan):
        assert [d.exp.name for d in plan.dropped] == ["e1"]
        refs.rename(project, baseline(project), "e1", "kept")  # same record, new name
        return True
    report = gc(project, grace_s=0, policy=Policy(older_than="1d"), confirm=confirm)
    assert report.dropped == [] and any("changed meanwhile" in n for n in report.notes)
    assert r1 in oids(project) and fsck.fsck(project).ok


def test_run_cache_roots_and_drop_run_cache(project, clock) -> None:
    runcache = pytest.importorskip("cas.pipeline.runcache")
    if not hasattr(runcache, "save"):
        pytest.skip("run-cache API not there yet")
    blob = project.store.put_bytes(b"cached output\n")
    dep = project.store.put_bytes(b"input\n")
    entry = runcache.make_entry(["echo hi"], ".", {"in.txt": dep}, {}, {"out.txt": (blob, False)})
    runcache.save(project, entry)
    report = gc(project, grace_s=0)
    assert report.deleted == [] and "run-cache" in {r.kind for r in report.roots}
    report = gc(project, grace_s=0, drop_run_cache=True)
    assert report.run_cache_dropped == 1 and blob not in oids(project)
    assert fsck.fsck(project).ok


# -- CLI ---------------------------------------------------------------------------------------------

@pytest.fixture
def cli(project, monkeypatch, capsys):
    monkeypatch.chdir(project.root)

    def tally(*args: str, stdin: str | None = None, tty: bool = False) -> tuple[int, str, str]:
        capsys.readouterr()
        fake = io.StringIO(stdin or "")
        fake.isatty = lambda: tty  # type: ignore[method-assign]
        monkeypatch.setattr(sys, "stdin", fake)
        code = run(list(args))
        out, err = capsys.readouterr()
        return code, out, err
    return tally


def test_cli_refuses_without_yes_when_not_a_terminal(project, cli, clock) -> None:
    add(project, "data", {"a.txt": "a\n"})
    replace_file(project, "data", "a.txt", "b\n")
    before = oids(project)
    code, out, err = cli("gc", "--grace", "0")
    assert code == 2 and "--yes" in err and oids(project) == before
    code, out, err = cli("gc", "--grace", "0", "--dry-run")
    assert code == 0 and out.startswith("Would delete 2 object(s)") and oids(project) == before
    code, out, err = cli("gc", "--grace", "0", "--yes")
    assert code == 0 and out.startswith("Deleted 2 object(s)") and len(before - oids(project)) == 2


def test_cli_asks_on_a_terminal(project, cli, clock) -> None:
    add(project, "data", {"a.txt": "a\n"})
    replace_file(project, "data", "a.txt", "b\n")
    before = oids(project)
    code, out, err = cli("gc", "--grace", "0", stdin="n\n", tty=True)
    assert code == 0 and "[y/N]" in err and "cancelled" in err and oids(project) == before
    code, out, err = cli("gc", "--grace", "0", stdin="y\n", tty=True)
    assert code == 0 and "Deleted 2" in out and len(before - oids(project)) == 2


def test_cli_json_and_verbose(project, cli, clock) -> None:
    add(project, "data", {"a.txt": "a\n"})
    replace_file(project, "data", "a.txt", "b\n")
    code, out, _ = cli("gc", "--grace", "0", "--dry-run", "--json")
    doc = json.loads(out)
    assert code == 0 and doc["dry_run"] and doc["deleted"]["objects"] == 2
    code, out, _ = cli("gc", "--grace", "0", "--dry-run", "-v")
    assert all(d["oid"] in out for d in doc["deleted"]["list"])


def test_cli_exit_codes(project, cli, clock) -> None:
    v = add(project, "data", {"a.txt": "a\n", "b.txt": "b\n"})
    code, _, err = cli("gc", "--grace", "soon", "--yes")
    assert code == 2 and "bad duration" in err
    code, _, err = cli("gc", "--keep-best", "2", "--sort-by", "acc", "--yes")
    assert code == 2 and ":max or :min" in err
    with project.lock("store", shared=True):
        code, _, err = cli("gc", "--grace", "0", "--yes", "--wait", "0.1")
    assert code == 7 and "busy" in err
    project.store.delete(next(e.oid for _, e in tree.walk(v.oid, lambda o: tree.decode(project.store.get(o)))))
    code, out, err = cli("gc", "--grace", "0", "--yes", "--json")
    assert code == 5 and json.loads(out)["problems"][0]["kind"] == "missing"
    assert "missing" in err and "--force" in err
    code, out, err = cli("gc", "--grace", "0", "--yes", "--force")
    assert code == 0 and "forced past" in out


def test_cli_help_documents_exit_codes(cli) -> None:
    code, out, _ = cli("gc", "--help")
    assert code == 0
    for word in ("Exit codes", "--yes", "refused", "busy", "--keep-best", "--older-than"):
        assert word in out


def test_a_promote_commit_citing_the_record_protects_it(project, clock) -> None:
    r1, _ = make_experiment(project, "cited", created=1 * NS)
    r2, _ = make_experiment(project, "plain", created=2 * NS)
    # cas/experiments/promote.py writes `Tally-Record: <id>` trailers; that alone is enough.
    helpers.git(project.root, "commit", "-q", "--allow-empty", "-m", f"promote\n\nTally-Record: {r1}")
    report = gc(project, grace_s=0, policy=Policy(older_than="1d"))
    assert [d.exp.name for d in report.dropped] == ["plain"]
    assert r1 in oids(project) and r2 not in oids(project)


# -- the Typer-free front end (cli/parse.py, gc being declared `fast`) -----------------------------

@pytest.mark.parametrize("args", [
    ("--grace", "0", "--dry-run", "--verbose"),
    ("--grace", "0", "--dry-run", "--json"),
    ("--grace", "0"),  # not a terminal and no --yes: exit 2
    ("--grace", "soon", "--yes"),
    ("--keep-best", "2", "--sort-by", "acc", "--yes"),
    ("--keep-best", "two", "--yes"),
    ("--bogus",),
    ("--grace", "0", "--yes", "--keep-last", "1", "--keep-failed", "--wait", "5"),
])
def test_the_typer_free_front_end_matches_the_typer_one(project, cli, clock, monkeypatch, args) -> None:
    """gc through the fast parser, as cli/entry.py dispatches it, says and does what the
    Typer command built from the same declaration says and does, in two copies of one
    store."""
    from cli.commands import gc as gc_command

    add(project, "data", {"a.txt": "a\n"})
    replace_file(project, "data", "a.txt", "b\n")
    make_experiment(project, "e1", created=1 * NS, metrics={"acc": 0.5})
    make_experiment(project, "e2", created=2 * NS, metrics={"acc": 0.7})
    twin = project.root.parent / "twin"
    shutil.copytree(project.root, twin, symlinks=True)

    def call(where: Path) -> tuple[int, str, str]:
        monkeypatch.chdir(where)
        code, out, err = cli("gc", *args)
        if "--json" in args and code == 0:
            out = json.dumps({k: v for k, v in json.loads(out).items() if k != "seconds"})
        return code, out, err
    shipped = gc_command.COMMAND
    assert shipped.fast
    monkeypatch.setattr(gc_command, "COMMAND", shipped._replace(fast=False))  # through Typer
    slow = call(project.root)
    monkeypatch.setattr(gc_command, "COMMAND", shipped)  # as shipped: the fast parser
    fast = call(twin)
    assert fast == slow
    assert sorted(p.name for p in (twin / ".tally/objects").rglob("*")) == \
        sorted(p.name for p in (project.root / ".tally/objects").rglob("*"))


def test_the_typer_free_front_end_imports_neither_typer_parsing_nor_pydantic(project, clock) -> None:
    import subprocess

    add(project, "data", {"a.txt": "a\n"})
    code = ("import sys; from cli.entry import run; run(['gc', '--grace', '0', '--yes']); "
            "assert 'pydantic' not in sys.modules, 'pydantic imported'; "
            "assert 'typer' not in sys.modules, 'typer imported'")
    r = subprocess.run([sys.executable, "-c", code], cwd=project.root, capture_output=True, text=True,
                       env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])})
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("Deleted 0 object(s)")


def test_keep_last_in_a_multi_stage_pipeline_with_a_committed_lock(project, clock, cli) -> None:
    """Every experiment reuses `prepare`'s output, which the committed tally.lock names:
    that does not make them promoted, so --keep-last drops the older ones; the one a
    promote commit names stays, and every kept experiment says why (report and JSON)."""
    from cas.experiments import promote, runs
    from cas.experiments.request import RunRequest

    root = project.root
    (root / "data.txt").write_text("1 2 3\n")
    (root / "params.yaml").write_text("lr: 0.1\n")
    (root / "tally.yaml").write_text(
        "stages:\n  prepare:\n    cmd: cp data.txt prepared.txt\n    deps: [data.txt]\n"
        "    outs: [prepared.txt]\n"
        "  train:\n    cmd: cat prepared.txt params.yaml > model.txt\n"
        "    deps: [prepared.txt]\n    params: [lr]\n    outs: [model.txt]\n")
    runs.run(project, RunRequest(name="first"))
    helpers.git(root, "add", "-A")
    helpers.git(root, "commit", "-q", "-m", "pipeline and its lock")
    names = [f"lr{i}" for i in range(1, 6)]
    for i, name in enumerate(names, 1):
        exp = runs.run(project, RunRequest(name=name, set_params=(f"lr=0.{i}5",)))
        assert [s.state for s in exp.record.stages] == ["skipped", "ran"]
        assert "prepared.txt" in exp.record.outs  # named by the committed tally.lock too
    assert promote.promote(project, names=["lr1"]).results[0].status == "created"

    report = gc(project, grace_s=0, dry_run=True, policy=Policy(keep_last=2))
    assert sorted(d.exp.name for d in report.dropped) == ["first", "lr2", "lr3"]
    kept = {k.exp.name: k.reason for k in report.kept_experiments}
    assert kept == {"lr1": "promoted (a commit names its record)",
                    "lr4": "among the last 2", "lr5": "among the last 2"}
    doc = report.to_json()
    assert {k["name"]: k["reason"] for k in doc["kept_experiments"]} == kept
    assert sorted(d["name"] for d in doc["dropped_experiments"]) == ["first", "lr2", "lr3"]
    code, out, _ = cli("gc", "--grace", "0", "--dry-run", "--keep-last", "2", "--verbose")
    assert code == 0
    assert "Would keep 3 experiment(s): 2 among the last 2; 1 promoted (a commit names its record)" in out
    assert f"  kept {report.kept_experiments[0].exp.label}: " in out
