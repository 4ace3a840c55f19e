"""Damaged bytes never reach the workspace unnoticed (issue 13, item 3; spec/checkout.md,
"Verification").

A raw object flipped in place keeps its size, so neither the tree nor the pointer
catches it by size. A copy checkout hashes what it copies and refuses; a linked
checkout cannot without reading the object, so `--verify` does, and fsck, which
re-hashes every object, makes the stat cache forget what it vouched for.
"""

from __future__ import annotations

import os
import shutil

import pytest

from cas.core.errors import CorruptObject
from cas.gc import fsck
from cas.workspace import tracking
from support import helpers


def _flip(project, oid: str) -> None:
    path = project.store.raw_path(oid)
    os.chmod(path, 0o644)
    with open(path, "r+b") as f:
        first = f.read(1)
        f.seek(0)
        f.write(bytes([first[0] ^ 0x20]))
    os.chmod(path, 0o444)


def _setup(project, mode: str, size: int):
    from cas.store import config
    from cas.workspace.project import open_project

    config.set_value(project.store_dir / "config", "cache.type", mode)
    project = open_project(project.root)
    data = os.urandom(size)
    helpers.write_tree(project.root / "data", {"a.bin": data, "b.txt": "fine\n"})
    (added,) = tracking.add(project, [str(project.root / "data")])
    from cas.objects import tree
    t = tree.decode(project.store.get(added.pointer.oid))
    return project, t.get("a.bin").oid


@pytest.mark.parametrize("size", [100, 3 * 1024 * 1024])  # small: read+hash+write; large: copy then hash
def test_a_copy_checkout_refuses_a_flipped_object(project, size: int) -> None:
    project, oid = _setup(project, "copy", size)
    _flip(project, oid)
    helpers.make_writable(project.root / "data")
    shutil.rmtree(project.root / "data")
    with pytest.raises(CorruptObject) as exc:
        tracking.checkout(project)
    assert exc.value.exit_code == 5 and oid in exc.value.message
    assert not (project.root / "data" / "a.bin").exists()  # no damaged file took the name
    assert [x.name for x in (project.root / "data").iterdir() if x.name.startswith(".tally-tmp")] == []
    (st,) = tracking.status(project)
    assert st.state != "unchanged"


def test_linked_checkouts_verify_on_request_and_fsck_closes_the_gap(project) -> None:
    project, oid = _setup(project, "hardlink,copy", 200)
    helpers.make_writable(project.root / "data")
    shutil.rmtree(project.root / "data")
    _flip(project, oid)
    tracking.checkout(project)  # a hardlink is the object itself: unverified by default
    helpers.make_writable(project.root / "data")
    shutil.rmtree(project.root / "data")
    with pytest.raises(CorruptObject):
        tracking.checkout(project, verify=True)
    tracking.checkout(project)
    # The hardlinked file was recorded as holding `oid`; fsck finds the damage and
    # makes the stat cache forget it, so status sees the file as it really is.
    report = fsck.fsck(project)
    assert not report.ok and any(p.where == oid for p in report.problems)
    (st,) = tracking.status(project)
    assert st.state == "modified" and "a.bin" in st.modified


@pytest.mark.parametrize("where", ["model/w.bin", "w.bin"])  # a data directory, a data file
def test_restore_verifies_linked_outputs_on_request(lab, where: str) -> None:
    """restore passes `verify` to every checkout it makes, as `tally checkout` does."""
    from cas.experiments import restore
    from cas.objects import record, tree
    from cas.store import config
    from support.lab import tree_lookup

    config.set_value(lab.root / ".tally" / "config", "cache.type", "hardlink,copy")
    weights = os.urandom(300)  # incompressible: stored raw, so it is hardlinked
    out = where.split("/")[0]
    rec = lab.exp("trained", outs={out: {"w.bin": weights} if "/" in where else weights})
    project = lab.project
    oid, _ = tree_lookup(project, record.load(project.store, rec).workspace, where)
    _flip(project, oid)
    with pytest.raises(CorruptObject) as exc:
        restore.restore(project, "trained", verify=True)
    assert exc.value.exit_code == 5 and oid in exc.value.message
    assert not (lab.root / where).exists()  # no damaged file took the name
    done = restore.restore(project, "trained")  # a hardlink is the object: unverified by default
    assert where in done.written and done.modes == {"hardlink": 1}


def test_a_killed_checkouts_temp_files_are_reported_then_removed(project) -> None:
    """Issue 13, item 6: `.tally-tmp-*` files of a checkout killed mid-way used to stay in
    the data directories for good, unseen by status."""
    import subprocess

    helpers.write_tree(project.root / "data", {"a.txt": "a\n", "sub/b.txt": "b\n"})
    tracking.add(project, [str(project.root / "data")])
    dead = subprocess.Popen(["true"])
    dead.wait()
    leftover = project.root / "data" / "sub" / f".tally-tmp-{dead.pid}-deadbeef-3"
    leftover.write_text("half a file")
    live = project.root / "data" / f".tally-tmp-{os.getpid()}-cafe-1"  # a writer still at work
    live.write_text("being written")
    (st,) = tracking.status(project)
    assert st.state == "unchanged"
    assert st.leftovers == ["data/" + live.name, "data/sub/" + leftover.name]
    tracking.checkout(project)
    assert not leftover.exists() and live.exists()


def test_a_pointer_whose_kind_was_changed_is_named_in_the_error(project) -> None:
    """Issue 13, item 7: the error used to be 'not a tally tree' without the pointer."""
    (project.root / "f.txt").write_text("hello\n")
    tracking.add(project, [str(project.root / "f.txt")])
    p = project.root / "f.txt.tally"
    p.write_text(p.read_text().replace("kind: file", "kind: dir").replace("mode: 644", "mode: 0"))
    (project.root / "f.txt").unlink()
    with pytest.raises(CorruptObject.__mro__[1]) as exc:  # Corruption: exit 5
        tracking.checkout(project)
    assert exc.value.message.startswith("f.txt.tally: ") and exc.value.exit_code == 5


def test_one_damaged_ref_does_not_hide_the_others(lab) -> None:
    """Issue 13, item 7: show and diff failed for every experiment over one bad ref."""
    from cas.experiments import compare, listing
    from cas.store import refs

    lab.exp("good", params={"params.yaml": {"lr": 1}}, metrics={"m.json": {"acc": 0.5}})
    lab.exp("other", params={"params.yaml": {"lr": 2}}, metrics={"m.json": {"acc": 0.7}})
    bad = refs.ref_path(lab.project, lab.head(), "good")
    os.chmod(bad, 0o644)
    bad.write_text("garbage\n")
    rows = {e.name: e for e in listing.list_experiments(lab.project)}
    assert rows["other"].status == "success"
    assert rows["good"].status == "unreadable" and str(bad) in rows["good"].problem
    assert compare.diff(lab.project, "other").rows  # the others still diff
