"""gc on a remote: roots, grace, dry run, repacking, and the lock against pushes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from support import helpers
from support.lab import Lab, M, P, sh
from support.remotelab import remote_kind, s3, tiny_packs  # noqa: F401 - fixtures

from cas.core.errors import LockBusy
from cas.gc.remotegc import RemoteGcRefused, gc_remote
from cas.remote import layout, locking, refstore
from cas.remote.connect import open_remote
from cas.sync import data, exps
from cas.workspace import tracking
from cas.workspace.project import init_project, open_project


@pytest.fixture
def proj(tmp_path: Path, remote_kind):
    root = tmp_path / "proj"
    root.mkdir()
    sh(root, "init", "-q", "-b", "main")
    sh(root, "config", "commit.gpgsign", "false")
    p, _ = init_project(root)
    remote_kind.add_to(p)
    return Lab(root)


def _two_versions(lab: Lab) -> tuple[str, str]:
    root = lab.root
    helpers.many_small_files(root / "data", 60, seed=1)
    (root / "data" / "big.bin").write_bytes(os.urandom(50_000))
    tracking.add(open_project(root), ["data"], cwd=root)
    v1 = lab.commit("v1")
    data.push(open_project(root))
    helpers.many_small_files(root / "data", 60, seed=2)  # every file rewritten
    (root / "data" / "big.bin").write_bytes(os.urandom(50_000))
    tracking.add(open_project(root), ["data"], cwd=root)
    v2 = lab.commit("v2")
    data.push(open_project(root))
    return v1, v2


def _stored(project) -> tuple[int, int]:
    r = open_remote(project)
    cat = r.catalog(refresh=True)
    return len(cat), len(cat.indexes)


def test_gc_keeps_what_roots_reach_and_deletes_the_rest(proj) -> None:
    lab = proj
    _two_versions(lab)
    lab.exp("e1", params=P(0.1), metrics=M(0.5), outs={"model.bin": os.urandom(20_000)})
    p = lab.project
    exps.push(p, everything=True)
    before, nidx = _stored(p)
    assert nidx >= 3
    young = gc_remote(p, dry_run=True)  # default grace: everything is minutes old
    assert young.deleted_objects == 0 and young.young_objects > 0
    keep_all = gc_remote(p, grace="0", dry_run=True, all_commits=True)
    assert keep_all.deleted_objects == 0
    plan = gc_remote(p, grace="0", dry_run=True, verbose=True)
    assert plan.deleted_objects == 63  # v1: 61 files, its tree and its d000 tree
    assert _stored(p)[0] == before  # a dry run deletes nothing
    done = gc_remote(p, grace="0")
    assert done.deleted_objects == plan.deleted_objects
    left, nidx = _stored(p)
    assert left == before - 63 and nidx == 1  # one consolidated index
    assert json.dumps(done.to_json())
    # What is left is complete: a fresh store can pull the data and the experiment.
    other = lab.root.parent / "other"
    sh(lab.root.parent, "clone", "-q", os.fspath(lab.root), os.fspath(other))
    po = open_project(other)
    for k, v in __import__("cas.remote.settings", fromlist=["x"]).resolve(p).options.items():
        __import__("cas.remote.settings", fromlist=["x"]).modify(po, "origin", k, v, local=True)
    assert data.pull(po).failed == {}
    assert helpers.manifest(other / "data") == helpers.manifest(lab.root / "data")
    assert [m.status for m in exps.pull(po, names=["e1"]).results] == ["pulled"]
    assert gc_remote(p, grace="0").deleted_objects == 0  # idempotent


def test_repack_moves_live_objects_out_of_mostly_dead_packs(proj) -> None:
    lab = proj
    lab.write({"params.yaml": "lr: 1\n"})
    lab.commit("base")
    for i in range(4):
        lab.exp(f"e{i}", params=P(i), metrics=M(i), outs={"m.bin": os.urandom(3000 + i)})
    p = lab.project
    exps.push(p, everything=True)  # one push: the experiments share packs
    r = open_remote(p)
    for ref in refstore.list_refs(r.backend):
        if ref.name != "e0":
            refstore.delete_ref(r.backend, ref)
    rep = gc_remote(p, grace="0", workspace=False)
    assert rep.deleted_objects > 0
    assert rep.packs_repacked + rep.packs_deleted > 0
    # e0 survives whole
    other = lab.root.parent / "o2"
    sh(lab.root.parent, "clone", "-q", os.fspath(lab.root), os.fspath(other))
    po = open_project(other)
    from cas.remote import settings
    for k, v in settings.resolve(p).options.items():
        settings.modify(po, "origin", k, v, local=True)
    res = exps.pull(po, names=["e0"])
    assert [m.status for m in res.results] == ["pulled"]
    exps.restore(po, "e0", force=True)
    assert (other / "m.bin").stat().st_size == 3000


def test_gc_waits_for_pushes_and_pushes_for_gc(proj) -> None:
    lab = proj
    _two_versions(lab)
    p = lab.project
    r = open_remote(p)
    with locking.RemoteLock(r.backend, exclusive=False, purpose="a push"):
        with pytest.raises(LockBusy, match="push is in progress"):
            gc_remote(p, grace="0")
    with locking.RemoteLock(r.backend, exclusive=True, purpose="a gc"):
        with pytest.raises(LockBusy, match="remote gc is running"):
            data.push(p)
    assert gc_remote(p, grace="0").deleted_objects > 0
    assert r.backend.list(layout.LOCKS) == []


def test_gc_refuses_a_root_nobody_has(proj) -> None:
    lab = proj
    lab.write({"params.yaml": "lr: 1\n"})
    lab.commit("base")
    p = lab.project
    r = open_remote(p)
    r.prepare_for_writing()
    refstore.push_ref(r.backend, lab.head(), "ghost", "ab" * 32)
    with pytest.raises(RemoteGcRefused):
        gc_remote(p, grace="0")
    assert gc_remote(p, grace="0", force=True).problems


def test_a_killed_push_leaves_garbage_that_gc_removes(proj, remote_kind) -> None:
    """SIGKILL after a pack is sent: the lock of the dead process is stale, the pack
    no index names is deleted by gc (grace 0), and a rerun push completes."""
    if remote_kind.kind == "memory":
        pytest.skip("fsspec's memory filesystem lives in one process; the push runs in another")
    lab = proj
    helpers.many_small_files(lab.root / "data", 80, seed=5)
    tracking.add(open_project(lab.root), ["data"], cwd=lab.root)
    lab.commit("v1")
    code = ("import sys; from cas.remote import upload; upload.PACK_TARGET = 64 * 1024; "
            "upload.SMALL_MAX = 16 * 1024; from cas.workspace.project import open_project; "
            "from cas.sync import data; data.push(open_project(sys.argv[1]))")
    env = {**os.environ, "TALLY_FAILPOINT": "push:after-pack"}
    done = subprocess.run([sys.executable, "-c", code, os.fspath(lab.root)], env=env,
                          capture_output=True)
    assert done.returncode == -9, done.stderr
    p = lab.project
    r = open_remote(p)
    assert r.backend.list(layout.PACKS) and not r.backend.list(layout.INDEX)
    assert r.backend.list(layout.LOCKS)  # the dead process's lock
    rep = gc_remote(p, grace="0")
    assert rep.orphans_deleted >= 1
    assert r.backend.list(layout.PACKS) == [] and r.backend.list(layout.LOCKS) == []
    assert data.push(p).failed == {}
    assert data.status(p)[0].remote == "complete"
