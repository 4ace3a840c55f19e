"""gc against crashes and concurrent writers.

- Ablation: a writer has published objects but not yet the pointer naming them. The
  store lock alone (grace 0) protects them; the grace period alone (a writer that
  does not lock) protects them; without both they are deleted and the pointer
  written next dangles. So these two mechanisms are exactly what makes gc safe.
- Stress: several processes running `tally add` in a loop and `tally gc --grace 0
  --yes` in a loop at once, adds reusing content gc considers garbage; every pointer
  an add wrote is complete the moment the add returns, and fsck passes at the end.
- Crash injection: `tally gc` SIGKILLed at every failpoint (lock taken, refs dropped,
  each deletion, each durability barrier, after the sweep): fsck passes, every
  pointer and ref resolves, every present tree and record names only present
  objects, and a rerun ends in the same store as an uninterrupted gc.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from support import helpers
from cas.gc import fsck
from cas.gc import collect as gc_mod
from cas.objects import pointer
from cas.objects import record
from cas.store import refs
from cas.workspace import tracking
from cas.objects import tree
from cas.core.errors import LockBusy
from cas.workspace.project import open_project
from support.consistency import REPO, tally, assert_consistent







# -- ablation: the lock and the grace period are what protect a write in flight ---------------------

class _NoLock:
    def acquire(self):
        return self

    def release(self) -> None:
        pass


@pytest.mark.parametrize("protection", ["lock", "grace", "neither"])
def test_lock_and_grace_are_what_protect_a_write_in_flight(project, monkeypatch, protection) -> None:
    if protection != "lock":
        # A writer that ignores the protocol: gc's exclusive lock no longer excludes it.
        real = project.lock
        monkeypatch.setattr(project, "lock", lambda name, shared=False, **kw:
                            _NoLock() if name == "store" and not shared else real(name, shared=shared, **kw))
    grace = 24 * 3600 if protection == "grace" else 0
    data = project.root / "data"
    helpers.write_tree(data, {"new.bin": os.urandom(3000), "sub/x.txt": "x\n"})
    with project.lock("store", shared=True, purpose="tally add"):  # the writer's side
        with project.store.writer() as w:
            from cas.workspace import snapshot as workspace
            snap = workspace.snapshot(data, statcache=project.statcache, writer=w)
        # Objects are published; the pointer naming them is not written yet.
        if protection == "lock":
            with pytest.raises(LockBusy):
                gc_mod.gc(project, grace_s=grace, lock_wait=0.2)
        else:
            gc_mod.gc(project, grace_s=grace)
        pointer.write(project.root, pointer.Pointer("data", snap.oid, True, snap.size, snap.files))
    report = fsck.fsck(project)
    if protection == "neither":
        assert not report.ok and {p.kind for p in report.problems} == {"missing"}
    else:
        assert report.ok, report.problems


# -- stress: adds and gc --grace 0 at once ----------------------------------------------------------

WORKER = textwrap.dedent("""
    import os, random, subprocess, sys, time
    from pathlib import Path
    from cas.workspace import tracking; from cas.objects import tree
    from cas.core.errors import TallyError
    from cas.workspace.project import open_project
    root, i, seconds = Path(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
    rnd = random.Random(i)
    d = root / f"w{i}"
    end = time.monotonic() + seconds
    done = failed = 0
    while time.monotonic() < end:
        if d.exists():
            for f in d.iterdir():
                f.unlink()
        d.mkdir(exist_ok=True)
        # Content from a small shared pool: adds keep re-using objects that an earlier
        # pointer dropped and gc considers garbage, the race the lock must close.
        for k in range(4):
            (d / f"f{k}").write_text(f"shared {rnd.randrange(6)} {k}\\n" * 50)
        (d / "own").write_bytes(os.urandom(100))
        try:
            # The `tally add` use case itself, called in a loop (a fresh interpreter per
            # add would spend the test's time starting Python).
            tracking.add(open_project(root), [str(d)])
        except TallyError as exc:
            print("add failed", exc, file=sys.stderr)
            failed += 1
            continue
        p = open_project(root)
        ptr = (root / f"w{i}.tally").read_text().split("oid: ")[1].split()[0]
        # Right after the add: everything the new pointer names is present.
        load = lambda o: tree.decode(p.store.get(o))
        for _, e in tree.walk(ptr, load):
            if not p.store.has(e.oid):
                print("MISSING", e.oid, file=sys.stderr)
                sys.exit(3)
        done += 1
        time.sleep(rnd.uniform(0, 0.03))
    print(done, failed)
""")


def _stress(repo: Path, workers: int, seconds: float) -> None:
    (repo / "worker.py").write_text(WORKER)
    from cas.workspace.project import init_project
    init_project(repo)
    procs = [subprocess.Popen([sys.executable, "worker.py", str(repo), str(i), str(seconds)],
                              cwd=repo, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": str(REPO)})
             for i in range(workers)]
    gcs = {0: 0, 7: 0}
    deleted = 0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        r = tally(repo, "gc", "--grace", "0", "--yes", "--wait", "5", "--json")
        assert r.returncode in (0, 7), r.stderr
        gcs[r.returncode] += 1
        if r.returncode == 0:
            import json
            deleted += json.loads(r.stdout)["deleted"]["objects"]
    results = []
    for pr in procs:
        out, err = pr.communicate(timeout=120)
        assert pr.returncode == 0, err
        results.append(tuple(map(int, out.split())))
    assert all(done > 0 for done, _ in results), results
    assert gcs[0] > 0 and deleted > 0, (gcs, deleted)
    r = tally(repo, "gc", "--grace", "0", "--yes")
    assert r.returncode == 0, r.stderr
    assert_consistent(repo)
    r = tally(repo, "checkout", "--force")
    assert r.returncode == 0, r.stderr


def test_adds_and_gc_grace_zero_at_once(repo: Path) -> None:
    _stress(repo, workers=3, seconds=6)


@helpers.slow
def test_adds_and_gc_grace_zero_at_once_long(repo: Path) -> None:
    _stress(repo, workers=4, seconds=60)


# -- crash injection --------------------------------------------------------------------------------

def _build(repo: Path) -> Path:
    """A store with garbage of every kind: replaced trees and blobs, dropped
    experiments (records, their trees, logs), stale temp files."""
    from cas.workspace.project import init_project
    p, _ = init_project(repo)
    base = helpers.git(repo, "rev-parse", "HEAD").strip()
    for v in range(3):
        helpers.write_tree(repo / "data", {f"d{k}/f{j}.txt": f"v{v} {k} {j}\n" for k in range(3)
                                           for j in range(2)} | {"same.txt": "same\n"})
        tracking.add(p, [str(repo / "data")])
    for n, st in [("ok1", "success"), ("bad1", "failed"), ("bad2", "failed")]:
        with p.store.writer() as w:
            blobs = [(f"m{j}", w.put_bytes(f"{n} weights {j}\n".encode())) for j in range(2)]
            t = tree.make([tree.Entry(name, tree.FILE, o, len(f"{n} weights {j}\n"), 0o644)
                           for j, (name, o) in enumerate(blobs)], subtree_files={})
            sub = w.put_bytes(tree.encode(t), compress=True)
            top = tree.make([tree.Entry("model", tree.DIR, sub, t.total_bytes, 0)],
                            subtree_files={"model": t.total_files})
            top_oid = w.put_bytes(tree.encode(top), compress=True)
            logs = w.put_bytes(f"log {n}\n".encode())
            rid = record.put(w, record.Record(name=n, baseline=base, created=1, status=st,
                                              outs={"out": (top_oid, True)}, logs=logs))
        refs.update(p, base, n, rid, None)
    p.statcache.close()
    return repo


def _oids(root: Path) -> set[str]:
    return set(open_project(root).store.iter_oids())


def _copy(src: Path, dst: Path) -> Path:
    # The stat cache is only a cache; its WAL files come and go with connections.
    shutil.copytree(src, dst, symlinks=True,
                    ignore=shutil.ignore_patterns("statcache.db-wal", "statcache.db-shm"))
    return dst


GC_ARGS = ("gc", "--grace", "0", "--yes", "--drop-failed")


@pytest.fixture
def crash_store(repo: Path, tmp_path: Path):
    if not hasattr(refs, "roots"):
        pytest.skip("experiment refs are not gc roots yet (cas/store/refs.py roots())")
    _build(repo)
    ref = _copy(repo, tmp_path / "reference")
    r = tally(ref, *GC_ARGS, "--json")
    assert r.returncode == 0, r.stderr
    import json
    doc = json.loads(r.stdout)
    assert {"record", "tree", "blob"} <= set(doc["deleted"]["by_kind"]), doc["deleted"]["by_kind"]
    return repo, _oids(ref), doc["deleted"]["objects"]


def _crash_at(src: Path, dst: Path, point: str, expected: set[str]) -> bool:
    work = _copy(src, dst)
    r = tally(work, *GC_ARGS, env={"TALLY_FAILPOINT": point})
    killed = r.returncode == -signal.SIGKILL
    assert killed or r.returncode == 0, (point, r.returncode, r.stderr)
    assert_consistent(work)
    r = tally(work, *GC_ARGS)
    assert r.returncode == 0, (point, r.stderr)
    assert _oids(work) == expected, point
    assert_consistent(work)
    assert [n for _, n, _ in refs.list_refs(open_project(work))] == ["ok1"]
    helpers.make_writable(work)
    shutil.rmtree(work)
    return killed


def _points(n_deleted: int, every: bool) -> list[str]:
    """Failpoints in execution order: the lock, the refs, each deletion, each barrier."""
    deletes = range(1, n_deleted + 1) if every else sorted({1, n_deleted // 2, n_deleted})
    levels = (1, 2, 3, 4) if every else (2,)
    return (["gc:locked", "gc:refs-dropped"] + [f"gc:delete:{i}" for i in deletes]
            + [f"gc:level:{i}" for i in levels] + ["gc:swept"])


def test_sigkill_at_failpoints(crash_store, tmp_path: Path) -> None:
    src, expected, n = crash_store
    points = _points(n, every=False)
    killed = [p for i, p in enumerate(points) if _crash_at(src, tmp_path / f"crash{i}", p, expected)]
    assert killed == points  # every failpoint was reached, so each crash really happened


@helpers.slow
def test_sigkill_at_every_failpoint(crash_store, tmp_path: Path) -> None:
    src, expected, n = crash_store
    points = _points(n, every=True)
    killed = [p for i, p in enumerate(points) if _crash_at(src, tmp_path / f"crash{i}", p, expected)]
    assert killed == points


@helpers.slow
def test_sigkill_at_random_times(crash_store, tmp_path: Path) -> None:
    src, expected, _ = crash_store
    rnd = random.Random(0)
    for i in range(40):
        work = _copy(src, tmp_path / f"rand{i}")
        proc = subprocess.Popen([sys.executable, "-m", "cli", *GC_ARGS], cwd=work,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rnd.uniform(0.05, 0.6))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert_consistent(work)
        assert tally(work, *GC_ARGS).returncode == 0
        assert _oids(work) == expected
        helpers.make_writable(work)
        shutil.rmtree(work)
