"""gc while experiments run: in-flight roots instead of a run-long store lock.

A `tally run` holds the store lock shared only around its bursts of puts, not while a
stage command runs, and names every object it has put or reused in its in-flight file
(`.tally/inflight/<pid>-<hex>`, flock'ed for its life). So `tally gc --grace 0` run
during a stage neither waits nor fails (it used to exit 7 after --wait), deletes real
garbage, and keeps everything the running experiment relies on: its deps, the outputs
of earlier stages, run-cache entries not yet indexed, and the checkpoints its stage
process stored. A file whose owner died (SIGKILL) is removed by the next gc, and what
only it named is collected. The stages here block on a FIFO the test controls, so
every interleaving is forced, never timed.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from cas.gc import fsck
from cas.gc import collect as gc_mod
from cas.core import hashing
from cas.objects import record
from cas.store import refs
from cas.store.inflight import DIR_NAME, InFlight, scan
from cas.workspace.project import open_project
from cas.queue import entries
from support.consistency import assert_consistent
from support.queuelab import spawn_worker as _spawn_worker, wait_for as _wait_for, make_project, queue_runs

REPO = Path(__file__).resolve().parents[2]
PY = sys.executable


def tally(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([PY, "-m", "cli", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=120)


def gc_json(cwd: Path, *extra: str) -> dict:
    """`tally gc --grace 0 --yes --json`, waiting 2 s at most for the store lock; exit 0."""
    r = tally(cwd, "gc", "--grace", "0", "--yes", "--json", "--wait", "2", *extra)
    assert r.returncode == 0, f"gc exited {r.returncode}: {r.stderr}"
    return json.loads(r.stdout)


def inflight_files(root: Path) -> list[str]:
    d = root / ".tally" / DIR_NAME
    return sorted(os.listdir(d)) if d.is_dir() else []


class Gate:
    """A FIFO a stage blocks on (`cat FIFO`) until the test opens it for writing, and a
    file where the stage writes its pid when it gets there."""

    def __init__(self, tmp: Path) -> None:
        self.fifo, self.started = tmp / "gate.fifo", tmp / "gate.started"
        os.mkfifo(self.fifo)

    @property
    def shell(self) -> str:
        return f"echo $$ > {self.started} && cat {self.fifo} > /dev/null"

    def wait_started(self) -> int:
        _wait_for(lambda: self.started.is_file() and self.started.read_text().strip(),
                  timeout=60, what="the stage to start")
        return int(self.started.read_text())

    def release(self) -> None:
        with open(self.fifo, "w") as f:  # blocks until the stage's `cat` has it open
            f.write("go\n")


def _start_run(root: Path, *args: str, env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen([PY, "-m", "cli", "run", *args], cwd=root, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **(env or {})}, start_new_session=True)


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def _finish(run: subprocess.Popen, gate: Gate, root: Path) -> record.Record:
    """Release the blocked stage, check the run succeeded, return its (only) record."""
    gate.release()
    _, err = run.communicate(timeout=120)
    assert run.returncode == 0, err
    p = open_project(root)
    ((_, _, oid),) = refs.list_refs(p)
    return record.load(p.store, oid)


def _two_stages(project, gate: Gate) -> None:
    """prep: in.txt -> MID.TXT (upper case); train: blocks on the gate, then copies
    mid.txt to out.txt."""
    (project.root / "dvc.yaml").write_text(textwrap.dedent(f"""\
        stages:
          prep:
            cmd: tr a-z A-Z < in.txt > mid.txt
            deps: [in.txt]
            outs: [mid.txt]
          train:
            cmd: {gate.shell} && cp mid.txt out.txt
            deps: [mid.txt]
            outs: [out.txt]
        """))
    (project.root / "in.txt").write_text("input only this run has seen\n")


def test_gc_during_a_stage_deletes_garbage_and_keeps_what_the_run_put(project, tmp_path) -> None:
    gate = Gate(tmp_path)
    _two_stages(project, gate)
    garbage = project.store.put_bytes(b"nothing names this\n")
    dep = hashing.hash_bytes(b"input only this run has seen\n")
    mid = hashing.hash_bytes(b"INPUT ONLY THIS RUN HAS SEEN\n")
    run = _start_run(project.root)
    try:
        gate.wait_started()
        # The train stage is running: the dep and prep's output (and prep's run-cache
        # entry, not indexed yet) are published, and named by nothing but the run's
        # in-flight file.
        report = gc_json(project.root)  # before in-flight roots: exit 7 after --wait
        deleted = {d["oid"] for d in report["deleted"]["list"]}
        assert garbage in deleted and not project.store.has(garbage)
        assert project.store.has(dep) and project.store.has(mid)
        assert report["inflight"] == {"live": 1, "removed": []}
        (name,) = inflight_files(project.root)
        named = set((project.store_dir / DIR_NAME / name).read_text().split())
        assert {dep, mid} <= named and not deleted & named
        assert all(project.store.has(o) for o in named if o != garbage)
        rec = _finish(run, gate, project.root)
    finally:
        _stop(run)
    p = open_project(project.root)
    assert rec.status == "success" and rec.deps["in.txt"] == dep
    assert rec.outs["mid.txt"][0] == rec.outs["out.txt"][0] == mid
    assert p.store.get(mid) == b"INPUT ONLY THIS RUN HAS SEEN\n"
    assert_consistent(project.root)
    assert inflight_files(project.root) == []


def test_reuse_between_the_passes_survives(project) -> None:
    """Pass A plans an unreferenced object; a writer then reuses it (dedup: no put, the
    id goes into its in-flight file in a burst under the lock); pass B keeps it."""
    content = b"garbage about to be reused\n"
    oid = project.store.put_bytes(content)
    writers = []

    def between(plan) -> bool:
        assert oid in {d.oid for d in plan.deleted}  # pass A: garbage
        with project.lock("store", shared=True, timeout=5):
            w = project.store.writer(inflight=True)
            assert w.put_bytes(content) == oid  # present: reused, nothing written
            assert w.written == 0
            w.flush()  # the burst ends: the in-flight file is written, then the lock goes
        writers.append(w)
        return True

    report = gc_mod.gc(project, grace_s=0, confirm=between)
    assert oid not in {d.oid for d in report.deleted}
    assert project.store.has(oid)
    assert report.inflight_live == 1
    # Once the writer is done (what names the object was never written), it is garbage.
    writers[0].close()
    report = gc_mod.gc(project, grace_s=0)
    assert oid in {d.oid for d in report.deleted}
    assert not os.listdir(project.store_dir / DIR_NAME)


def test_a_checkpoint_reused_between_the_passes_survives(project) -> None:
    """The same race for an object a writer takes from the store without any put (a
    run-cache hit's outputs, a directory memo's tree): keep() names it."""
    oid = project.store.put_bytes(b"an output restored from the run-cache\n")

    def between(plan) -> bool:
        with project.lock("store", shared=True, timeout=5):
            w = project.store.writer(inflight=True)
            w.keep(oid)
            w.flush()
        between.w = w
        return True

    report = gc_mod.gc(project, grace_s=0, confirm=between)
    assert project.store.has(oid) and not report.deleted
    between.w.close()


def test_a_sigkilled_runs_inflight_file_is_removed_and_its_objects_collected(project, tmp_path) -> None:
    gate = Gate(tmp_path)
    _two_stages(project, gate)
    dep = hashing.hash_bytes(b"input only this run has seen\n")
    run = _start_run(project.root)
    try:
        stage_pid = gate.wait_started()
        (name,) = inflight_files(project.root)
        os.kill(run.pid, signal.SIGKILL)  # tally run dies mid-stage
        run.wait()
        os.killpg(stage_pid, signal.SIGKILL)  # and its stage (its own process group)
    finally:
        _stop(run)
    assert inflight_files(project.root) == [name]  # left behind: nobody removes it but gc
    assert scan(project.store_dir, remove_dead=False).dead == [name]
    # Inside the grace period the objects stay (young), but the dead file goes anyway.
    report = gc_json(project.root, "--grace", "24h")
    assert report["inflight"]["removed"] == [name] and project.store.has(dep)
    assert inflight_files(project.root) == []
    report = gc_json(project.root)
    assert dep in {d["oid"] for d in report["deleted"]["list"]}
    assert not project.store.has(dep)
    assert fsck.fsck(open_project(project.root)).ok


def test_pass_b_removes_a_dead_owners_file_written_by_hand(project) -> None:
    """The on-disk contract alone: a file nobody holds is dead, whatever it names."""
    oid = project.store.put_bytes(b"named by a dead writer\n")
    d = project.store_dir / DIR_NAME
    d.mkdir()
    (d / "12345-0badc0de").write_text(oid + "\n")
    (d / "README").write_text("not ours: ignored\n")
    plan = gc_mod.gc(project, grace_s=0, dry_run=True)
    assert oid in {x.oid for x in plan.deleted}  # a dead file is no root, even in pass A
    assert (d / "12345-0badc0de").exists()  # and a dry run deletes nothing
    report = gc_mod.gc(project, grace_s=0)
    assert report.inflight_removed == ["12345-0badc0de"]
    assert oid in {x.oid for x in report.deleted}
    assert sorted(os.listdir(d)) == ["README"]


def test_a_live_file_pins_what_it_names_and_a_partial_line_is_ignored(project) -> None:
    keep = project.store.put_bytes(b"pinned\n")
    other = project.store.put_bytes(b"half-named\n")
    f = InFlight.create(project.store_dir)
    try:
        f.append([keep])
        os.write(f._fd, other[:40].encode())  # an append in progress: no newline yet
        report = gc_mod.gc(project, grace_s=0)
        deleted = {x.oid for x in report.deleted}
        assert keep not in deleted and other in deleted
        assert report.inflight_live == 1 and report.inflight_removed == []
    finally:
        f.close()
    assert not f.path.exists()


LIVE_TRAIN = """\
    import os, pathlib, sys
    from cas.live import Live
    pathlib.Path("model.bin").write_bytes(b"weights at step 0 only the checkpoint has\\n")
    with Live() as live:
        live.log_metric("loss", 0.5)
        live.checkpoint("model.bin")
        pathlib.Path("model.bin").write_bytes(b"final weights\\n")
        os.system(sys.argv[1])  # the gate: the checkpoint is stored, the run not recorded
    """


def test_live_checkpoints_stored_by_the_stage_survive_a_gc(project, tmp_path) -> None:
    gate = Gate(tmp_path)
    (project.root / "train.py").write_text(textwrap.dedent(LIVE_TRAIN))
    (project.root / "dvc.yaml").write_text(
        f"stages:\n  train:\n    cmd: {PY} train.py '{gate.shell}'\n"
        f"    deps: [train.py]\n    outs: [model.bin]\n")
    ckpt_blob = hashing.hash_bytes(b"weights at step 0 only the checkpoint has\n")
    run = _start_run(project.root, env={"PYTHONPATH": str(REPO)})
    try:
        gate.wait_started()
        assert project.store.has(ckpt_blob)  # stored by the stage process
        report = gc_json(project.root)
        assert ckpt_blob not in {d["oid"] for d in report["deleted"]["list"]}
        assert project.store.has(ckpt_blob)
        rec = _finish(run, gate, project.root)
    finally:
        _stop(run)
    p = open_project(project.root)
    ((step, tree_oid),) = rec.checkpoints
    assert step == 0 and p.store.has(tree_oid)
    assert_consistent(project.root)


QUEUE_TRAIN = """\
    import os, sys
    open("out.txt", "w").write("queued output\\n")
    sys.exit(os.system(os.environ["GATE"]) and 1)
    """


def test_gc_while_a_queue_worker_runs_an_entry(tmp_path, monkeypatch) -> None:
    gate = Gate(tmp_path)
    monkeypatch.setenv("GATE", gate.shell)
    p = make_project(tmp_path / "proj", train=QUEUE_TRAIN,
                     extra={"data.txt": "a file only the queued snapshot has\n"})
    garbage = p.store.put_bytes(b"garbage beside a queue\n")
    (it,) = queue_runs(p, "lr=0.7")
    w = _spawn_worker(p)
    try:
        gate.wait_started()
        report = gc_json(p.root)
        assert inflight_files(p.root)  # the executor's run, in its run directory
        assert garbage in {d["oid"] for d in report["deleted"]["list"]}
        assert report["inflight"]["live"] >= 1
        gate.release()
        assert w.wait(120) == 0
    finally:
        if w.poll() is None:
            os.killpg(w.pid, signal.SIGKILL)
            w.wait()
    assert entries.find(p, it.name).state == "done"
    rec = record.load(p.store, refs.read(p, it.entry.baseline, it.name))
    assert p.store.get(rec.outs["out.txt"][0]) == b"queued output\n"
    assert_consistent(p.root)
    assert inflight_files(p.root) == []


@pytest.mark.parametrize("grace", ["0"])
def test_gc_json_reports_inflight(project, grace) -> None:
    r = tally(project.root, "gc", "--grace", grace, "--yes", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["inflight"] == {"live": 0, "removed": []}


@pytest.mark.parametrize("point", ["gc:locked", "gc:delete", "gc:swept"])
def test_gc_sigkilled_during_a_stage_leaves_the_run_whole(project, tmp_path, point) -> None:
    """gc dies (SIGKILL at a failpoint) while a run's stage is blocked: the run's
    in-flight file is untouched, a second gc finishes the sweep, and the run records."""
    gate = Gate(tmp_path)
    _two_stages(project, gate)
    for i in range(3):
        project.store.put_bytes(b"garbage %d\n" % i)
    run = _start_run(project.root)
    try:
        gate.wait_started()
        (name,) = inflight_files(project.root)
        r = subprocess.run([PY, "-m", "cli", "gc", "--grace", "0", "--yes", "--wait", "2"],
                           cwd=project.root, capture_output=True, text=True, timeout=120,
                           env={**os.environ, "TALLY_FAILPOINT": point})
        assert r.returncode == -signal.SIGKILL, r.stderr
        assert inflight_files(project.root) == [name]
        report = gc_json(project.root)
        assert report["inflight"] == {"live": 1, "removed": []}
        gate.release()
        out, err = run.communicate(timeout=120)
        assert run.returncode == 0, err
    finally:
        _stop(run)
    assert_consistent(project.root)
    assert inflight_files(project.root) == []
