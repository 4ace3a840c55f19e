"""Stores written before small objects were stored raw keep working.

tally 0.1 wrote every tree and record in the zstd form whatever its size; a tally
since writes content of at most writer.RAW_MAX bytes raw (spec/store.md, "Compression
policy"). Readers never depended on the form, so an old store, a new one and one that
mixes both (an old store a new tally has written to) must read, check out, gc and
fsck alike, and an id present in both forms (a crash between two publishes) stays
one object. The first test keeps the spec's demo store as tally 0.1 wrote it, byte
for byte (restic's testdata: a small store of each released format).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from support import helpers
from cas.store import zstdframe as codec
from cas.objects import envelope
from cas.gc import fsck
from cas.objects import pointer
from cas.objects import record
from cas.store import refs
from cas.workspace import tracking
from cas.objects import tree
from cas.gc.collect import gc
from cas.gc.reachability import BLOB, LAYER, RECORD, TREE
from support.gclab import add, baseline, closure, deletion_log, make_experiment, oids
from support.oldforms import to_old_form

# spec/store.md's worked example as tally 0.1 stored it: blobs raw, trees zstd (level 1).
DEMO = {"a.txt": "hello\n", "bin/run.sh": helpers.Exe(b"#!/bin/sh\necho hi\n")}
DEMO_ROOT = "ed806ec7808b57b289918783a4acd783de8a1bca12b09140d398fc7af8e822fc"
DEMO_BIN = "e5182e5f7bd069f8a27542b529d07a076847c8e12e20fc7c51f45922db3ad0e6"
GOLDEN = {  # id -> (file name in its shard, hex of the file)
    "8e4c7c1b99dbfd50e7a95185fead5ee1448fa904a2fdd778eaf5f2dbfd629a99": (
        "4c7c1b99dbfd50e7a95185fead5ee1448fa904a2fdd778eaf5f2dbfd629a99", b"hello\n".hex()),
    "4b694fa6468140836e2f43625aca1150ec72032dc23a12e13416ca026c647ef3": (
        "694fa6468140836e2f43625aca1150ec72032dc23a12e13416ca026c647ef3",
        b"#!/bin/sh\necho hi\n".hex()),
    DEMO_ROOT: (DEMO_ROOT[2:] + ".zst",
                "28b52ffd2061090300544c5954019318029295a5612e74787400c4208e4c7c1b99dbfd50e7a951"
                "85fead5ee1448fa904a2fdd778eaf5f2dbfd629a9906cd01a495a362696e01c420e5182e5f7bd0"
                "69f8a27542b529d07a076847c8e12e20fc7c51f45922db3ad0e61200"),
    DEMO_BIN: (DEMO_BIN[2:] + ".zst",
               "28b52ffd2038c10100544c5954019312019195a672756e2e736800c4204b694fa6468140836e2f"
               "43625aca1150ec72032dc23a12e13416ca026c647ef312cd01ed"),
}
POINTER = (f"# tally: demo is stored in .tally/; `tally checkout` restores it\nformat: 1\n"
           f"oid: {DEMO_ROOT}\nkind: dir\nsize: 24\nfiles: 2\nmode: 0\n")




def structured(project) -> set[str]:
    return {o for o in oids(project) if project.store.read_head(o, 3) == envelope.MAGIC}


def test_the_0_1_demo_store_reads_checks_out_and_collects(project, clock, monkeypatch) -> None:
    root, store = project.root, project.store
    for oid, (name, hexdata) in GOLDEN.items():
        path = store.objects / oid[:2] / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(bytes.fromhex(hexdata))
        path.chmod(0o444)
    (root / "demo.tally").write_text(POINTER)
    assert store.info(DEMO_ROOT).compressed and store.info(DEMO_BIN).compressed
    assert tree.decode(store.get(DEMO_ROOT)).get("bin").oid == DEMO_BIN

    report = fsck.fsck(project)
    assert report.ok and report.objects == 4 and report.trees == 2
    tracking.checkout(project)
    assert helpers.read_tree(root / "demo") == {
        "a.txt": ("file", b"hello\n", False), "bin/run.sh": ("file", b"#!/bin/sh\necho hi\n", True)}
    assert [s.state for s in tracking.status(project)] == ["unchanged"]

    # A new tally adding the same directory finds the old .zst trees present: it
    # freshens them and writes no raw twin.
    assert tracking.add(project, [str(root / "demo")])[0].pointer.oid == DEMO_ROOT
    assert not os.path.exists(store.raw_path(DEMO_ROOT)) and not os.path.exists(store.raw_path(DEMO_BIN))
    assert gc(project, grace_s=0).deleted == []

    (root / "demo.tally").unlink()
    order = deletion_log(monkeypatch)
    report = gc(project, grace_s=0)
    assert {d.oid: d.kind for d in report.deleted} == {DEMO_ROOT: TREE, DEMO_BIN: TREE,
                                                        **{o: BLOB for o in GOLDEN if o not in (DEMO_ROOT, DEMO_BIN)}}
    assert order[:2] == [DEMO_ROOT, DEMO_BIN] and oids(project) == set()


@pytest.mark.parametrize("old", ["all", "some", "both-forms"])
def test_a_store_mixing_old_zstd_and_new_raw_structured_objects(project, clock, monkeypatch, old) -> None:
    """gc's order (records, trees parents first, blobs) and fsck hold whichever form
    each structured object is in; an id in both forms is one object, deleted whole."""
    v1 = add(project, "data", {"a.txt": "a\n", "sub/b.txt": "b\n", "sub/deep/c.txt": "c\n"})
    rid, out = make_experiment(project, "e1")
    small = structured(project)
    assert len(small) >= 5 and not any(project.store.info(o).compressed for o in small)
    for i, oid in enumerate(sorted(small)):
        if old == "all" or i % 2:
            to_old_form(project.store, oid)
        elif old == "both-forms":  # a crash between two publishes of one id
            Path(project.store.zst_path(oid)).write_bytes(codec.compress(project.store.get(oid), 1))
    assert fsck.fsck(project).ok
    assert record.load(project.store, rid).outs["model"][0] == out
    shutil.rmtree(project.root / "data")
    tracking.checkout(project)
    assert helpers.read_tree(project.root / "data")["sub/deep/c.txt"] == ("file", b"c\n", False)

    (project.root / "data.tally").unlink()
    refs.delete(project, baseline(project), "e1", rid)
    garbage = closure(project, v1.oid) | closure(project, out) | {rid, record.load(project.store, rid).logs}
    load = lambda o: tree.decode(project.store.get(o))  # noqa: E731
    chain = [t for _, t in tree.walk_trees(v1.oid, load)]  # data, sub, sub/deep: parents first
    kinds = {o: (RECORD if o == rid else TREE if o in small else BLOB) for o in garbage}
    order = deletion_log(monkeypatch)
    report = gc(project, grace_s=0)
    assert {d.oid: d.kind for d in report.deleted} == kinds
    assert sorted(set(order)) == sorted(garbage) and not oids(project) & garbage
    layers = [LAYER[kinds[o]] for o in order]
    assert layers == sorted(layers) and order[0] == rid
    assert [o for o in order if o in chain] == chain
    assert fsck.fsck(project).ok
    assert not any(os.path.exists(project.store.zst_path(o)) or os.path.exists(project.store.raw_path(o))
                   for o in garbage)


def test_pointer_still_reads_a_tree_of_either_form(project) -> None:
    ptr = add(project, "data", {"x.txt": "x\n"})
    to_old_form(project.store, ptr.oid)
    assert pointer.read(project.root, "data").oid == ptr.oid
    assert [s.state for s in tracking.status(project)] == ["unchanged"]


@pytest.mark.parametrize("hurt", ["zstd", "raw"])
def test_fsck_checks_each_form_of_an_id_in_both(project, hurt) -> None:
    """Both files of an id are re-hashed, the damaged one is named by its form, and
    --repair removes only that file: the sound form stays and is read from then on."""
    ptr = add(project, "data", {"x.txt": "x\n", "y.txt": "y\n"})
    oid = ptr.oid
    content = project.store.get(oid)
    zst = Path(project.store.zst_path(oid))
    zst.write_bytes(codec.compress(content, 1))  # a crash between two publishes
    assert fsck.fsck(project).ok
    damaged = zst if hurt == "zstd" else Path(project.store.raw_path(oid))
    os.chmod(damaged, 0o644)
    damaged.write_bytes(codec.compress(content + b"!", 1) if hurt == "zstd" else content + b"!")
    report = fsck.fsck(project)
    assert [(p.kind, p.where, p.detail.split(":")[0]) for p in report.problems[:1]] == \
        [("object", oid, f"{hurt} form")]
    assert len([p for p in report.problems if p.kind == "object"]) == 1
    fixed = fsck.fsck(project, repair=True)
    assert fixed.repaired == [oid] and not damaged.exists()
    assert project.store.get(oid) == content
    assert fsck.fsck(project).ok
