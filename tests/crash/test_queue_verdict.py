"""The queue's verdict agrees with what was published.

An entry's experiment is recorded (record, then ref) before its outcome is written
(spec/queue.md, "Write ordering"). Whatever goes wrong between the two (a cleanup
error, the executor killed, a full disk, its worker dying too), an entry whose
experiment was recorded as a success ends in done/, never in failed/. Each
interleaving is injected deterministically: monkeypatches inherited by the forked
executors, or failpoints (cas/core/failpoints.py) in real processes killed with SIGKILL.
"""

from __future__ import annotations

import errno
import os
import signal
import socket
import time

import pytest

from cas.queue import liveness
from cas.queue import directory as queue
from cas.queue import workers as queue_workers
from cas.objects import record
from cas.store import refs
from cas.queue import rundirs
from cas.queue.outcome import Outcome
from cas.workers import supervisor as worker
from cas.queue import entries
from support.queuelab import spawn_worker as _spawn_worker, wait_for as _wait_for, make_project, queue_runs, records

TRAIN = """\
    params = dict(line.split(": ") for line in open("params.yaml").read().splitlines())
    open("out.txt", "w").write(f"lr={params['lr']}\\n")
    """


@pytest.fixture
def proj(tmp_path):
    return make_project(tmp_path / "proj", train=TRAIN)


def _in_executor(test_pid: int) -> bool:
    """Monkeypatches reach the forked executors; this tells them from the supervisor."""
    return os.getpid() != test_pid


def _assert_done_as_published(p, it, *, note: str | None = None) -> Outcome:
    item = entries.find(p, it.name)
    assert item.state == "done", (item.state, item.outcome)
    o = item.outcome
    assert o.status == "success" and o.final is True and o.name == it.name
    assert o.record == refs.read(p, it.entry.baseline, it.name)
    assert records(p)[it.name].status == "success"
    if note is None:
        assert o.note is None
    else:
        assert note in o.note
    return o


# ---------------------------------------------------------------- the trash race


def test_discard_survives_the_trash_vanishing_after_eexist(proj, monkeypatch):
    """The race seen in a benchmark (100 runs, -j 2, load 5-8): the executor's
    mkdir(trash) fails with EEXIST, the supervisor rmdirs the (empty) trash, and
    Path.mkdir(exist_ok=True), re-checking with is_dir(), raised FileExistsError."""
    trash = proj.store_dir / "tmp" / "trash-test"
    trash.mkdir(parents=True)
    run_dir = proj.store_dir / "tmp" / "run-0123456789abcdef"
    (run_dir / "sub").mkdir(parents=True)
    real_mkdir = os.mkdir
    raced = []

    def mkdir(path, *a, **kw):
        try:
            return real_mkdir(path, *a, **kw)
        except FileExistsError:
            if not raced and os.fspath(path) == os.fspath(trash):
                raced.append(True)
                os.rmdir(trash)  # the supervisor's _empty_trash, at the worst moment
            raise

    monkeypatch.setattr(os, "mkdir", mkdir)
    rundirs.discard(proj, "0123456789abcdef", trash)
    assert raced and not run_dir.exists()
    assert (trash / run_dir.name / "sub").is_dir()


def test_the_trash_race_in_a_worker_leaves_the_entry_done(proj, monkeypatch):
    """The same interleaving end to end: before the fix the entry was failed with
    "internal error: FileExistsError" while its experiment was recorded a success."""
    (it,) = queue_runs(proj, "lr=0.5")
    real_mkdir = os.mkdir

    def mkdir(path, *a, **kw):
        if os.path.basename(os.fspath(path)).startswith("trash-"):
            try:
                real_mkdir(path, *a, **kw)  # the trash exists: another run was discarded
            except FileExistsError:
                pass
            try:
                return real_mkdir(path, *a, **kw)
            except FileExistsError:
                os.rmdir(path)  # ... and the supervisor empties it right after our EEXIST
                raise
        return real_mkdir(path, *a, **kw)

    monkeypatch.setattr(os, "mkdir", mkdir)
    stats = worker.run_all(proj, jobs=1)
    assert stats.done == [it.name] and not stats.failed
    _assert_done_as_published(proj, it)
    assert not queue.run_dir(proj, it.id).exists()


# ---------------------------------------------------------------- errors after publishing


def test_a_cleanup_error_after_recording_is_a_warning(proj, monkeypatch):
    (it,) = queue_runs(proj, "lr=0.5")

    def discard(*a, **kw):
        raise PermissionError(errno.EACCES, "Permission denied", "trash")

    monkeypatch.setattr(rundirs, "discard", discard)
    stats = worker.run_all(proj, jobs=1)
    assert stats.done == [it.name]
    _assert_done_as_published(proj, it)
    log = queue.log_path(proj, it.id).read_text()
    assert "warning: could not remove the run directory" in log
    assert queue.run_dir(proj, it.id).exists()  # left for `queue remove`, which deletes it
    entries.remove(proj, keys=[it.name])
    assert not queue.run_dir(proj, it.id).exists()


def test_an_error_raised_after_the_ref_is_reconciled(proj, monkeypatch):
    """experiments.run raising after it published (say, releasing its locks)."""
    from cas.experiments import runs as experiments
    from cas.core.errors import TallyError

    (it,) = queue_runs(proj, "lr=0.5")
    real_run = experiments.run

    def run(*a, **kw):
        real_run(*a, **kw)
        raise TallyError("cannot release the store lock")

    monkeypatch.setattr(experiments, "run", run)
    stats = worker.run_all(proj, jobs=1)
    assert stats.done == [it.name]
    o = _assert_done_as_published(proj, it, note="cannot release the store lock")
    assert o.reason == ""


def test_a_name_taken_by_another_run_meanwhile_is_not_ours(proj, monkeypatch):
    """Conflict: the record under the name was published by someone else during the
    attempt; it must not make the entry done."""
    from cas.experiments import runs as experiments

    (it,) = queue_runs(proj, "lr=0.5")
    real_run = experiments.run

    def run(*a, **kw):
        real_run(*a, **kw)  # "someone else" records an experiment under our name
        return real_run(*a, **kw)  # ours then finds the name taken

    monkeypatch.setattr(experiments, "run", run)
    stats = worker.run_all(proj, jobs=1)
    assert stats.failed == [it.name]
    item = entries.find(proj, it.name)
    assert item.state == "failed" and "already exists" in item.outcome.reason


# ---------------------------------------------------------------- killed before the outcome


def test_executor_killed_between_ref_and_outcome(proj, monkeypatch):
    """SIGKILL (OOM killer, a late `queue kill`) after the ref, before the outcome."""
    (it,) = queue_runs(proj, "lr=0.5")
    me = os.getpid()
    real = queue.complete_outcome

    def complete_outcome(*a, **kw):
        if _in_executor(me):
            os.kill(os.getpid(), signal.SIGKILL)
        return real(*a, **kw)

    monkeypatch.setattr(queue, "complete_outcome", complete_outcome)
    stats = worker.run_all(proj, jobs=1)
    assert stats.done == [it.name] and not stats.failed
    o = _assert_done_as_published(proj, it, note="killed by signal 9")
    assert o.executor_pid != me and o.pid == me


@pytest.mark.parametrize("point, state", [("started", "failed"), ("published", "done"),
                                          ("outcome", "done")])
def test_executor_sigkilled_at_each_failpoint(proj, failpoint, point, state):
    """Real SIGKILLs at each step of the executor (its failpoints, armed here and so
    in every executor this process forks), supervisor alive."""
    a, b = queue_runs(proj, "lr=0.5,0.25")
    failpoint(f"executor:{point}")
    stats = worker.run_all(proj, jobs=2)
    failpoint(None)
    for it in (a, b):
        item = entries.find(proj, it.name)
        assert item.state == state, (item.state, item.outcome)
        if state == "done":
            _assert_done_as_published(proj, it, note="killed by signal 9" if point == "published" else None)
        else:
            assert item.outcome.reason == "killed by signal 9"
            assert refs.read(proj, it.entry.baseline, it.name) is None  # nothing recorded
    assert sorted(stats.done if state == "done" else stats.failed) == sorted([a.name, b.name])
    if state == "failed":  # and a retry runs it normally
        entries.retry(proj, all_failed=True)
        assert sorted(worker.run_all(proj, jobs=2).done) == sorted([a.name, b.name])


def test_worker_and_executor_sigkilled_between_ref_and_outcome(proj, monkeypatch):
    """Both processes die (a detached worker, as after a machine-level crash of the
    pair) after the ref: whoever looks next reaps the entry to done, not "worker died"."""
    (it,) = queue_runs(proj, "lr=0.5")
    monkeypatch.setenv("TALLY_FAILPOINT", "worker:published")
    w = _spawn_worker(proj)
    assert w.wait(60) == -signal.SIGKILL
    monkeypatch.delenv("TALLY_FAILPOINT")
    item = _wait_for(lambda: (lambda i: i if i.state != "running" else None)(entries.find(proj, it.name)),
                     what="the entry to be reaped")
    assert item.outcome.note == "the worker died after the experiment was recorded"
    _assert_done_as_published(proj, it, note="the worker died")
    assert queue_workers.live_workers(proj) == []


def test_worker_and_executor_sigkilled_before_recording(proj, monkeypatch):
    (it,) = queue_runs(proj, "lr=0.5")
    monkeypatch.setenv("TALLY_FAILPOINT", "worker:started")
    w = _spawn_worker(proj)
    assert w.wait(60) == -signal.SIGKILL
    monkeypatch.delenv("TALLY_FAILPOINT")
    item = _wait_for(lambda: (lambda i: i if i.state != "running" else None)(entries.find(proj, it.name)),
                     what="the entry to be reaped")
    assert item.state == "failed" and item.outcome.reason == "worker died"
    assert refs.read(proj, it.entry.baseline, it.name) is None


# ---------------------------------------------------------------- a full disk


def test_executor_cannot_write_the_outcome(proj, monkeypatch):
    """ENOSPC on the outcome in the executor: before the fix it exited 70 and the
    supervisor failed the entry; now the supervisor decides from the ref."""
    (it,) = queue_runs(proj, "lr=0.5")
    me = os.getpid()
    real = queue.write_outcome

    def write_outcome(*a, **kw):
        if _in_executor(me):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(*a, **kw)

    monkeypatch.setattr(queue, "write_outcome", write_outcome)
    stats = worker.run_all(proj, jobs=1)
    assert stats.done == [it.name]
    _assert_done_as_published(proj, it, note="exited with code 0")


def test_nobody_can_write_the_outcome(proj, monkeypatch):
    """ENOSPC for the supervisor too: it moves the entry by its verdict and goes on
    (before, the error stopped the worker and every run it had)."""
    a, b = queue_runs(proj, "lr=0.5,0.25")

    def write_outcome(*a, **kw):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(queue, "write_outcome", write_outcome)
    stats = worker.run_all(proj, jobs=1)
    assert sorted(stats.done) == sorted([a.name, b.name])
    monkeypatch.undo()
    assert {i.name: i.state for i in entries.items(proj)} == {a.name: "done", b.name: "done"}


# ---------------------------------------------------------------- reaping and published()


def _record(p, it, *, created: int, status: str = "success") -> str:
    with p.store.writer() as w:
        oid = record.put(w, record.Record(name=it.name, baseline=it.entry.baseline,
                                          created=created, status=status))
    refs.update(p, it.entry.baseline, it.name, oid, None)
    return oid


def _dead_worker(p, wid: str, **info) -> None:
    import json
    import subprocess

    dead = subprocess.Popen(["true"])
    dead.wait()
    (queue.queue_dir(p) / "workers" / f"{wid}.json").write_text(json.dumps(
        {"pid": dead.pid, "host": socket.gethostname(), "boot_id": liveness.boot_id(), **info}))


def test_reaper_reconciles_with_the_published_record(proj):
    recorded, stale, failed, nothing = queue_runs(proj, "lr=1,2,3,4")
    t0 = time.time()
    current = {it.id: {"started": t0} for it in (recorded, stale, failed, nothing)}
    _dead_worker(proj, "1-dead", current=current)
    for _ in range(4):
        assert queue.claim(proj, "1-dead") is not None
    oid = _record(proj, recorded, created=time.time_ns())
    _record(proj, stale, created=int((t0 - 60) * 1e9))  # before the attempt: not its
    _record(proj, failed, created=time.time_ns(), status="failed")
    got = {i.name: i for i in entries.items(proj)}
    assert got[recorded.name].state == "done"
    assert got[recorded.name].outcome.record == oid
    assert got[recorded.name].outcome.note == "the worker died after the experiment was recorded"
    for it in (stale, failed, nothing):
        assert got[it.name].state == "failed"
        assert got[it.name].outcome.reason == "worker died" and got[it.name].outcome.record is None


def test_reaper_without_the_attempt_start_counts_since_queued(proj):
    """A worker that died before listing the run in its file: the entry's queue time
    bounds the record instead."""
    (it,) = queue_runs(proj, "lr=1")
    _dead_worker(proj, "1-dead")
    queue.claim(proj, "1-dead")
    _record(proj, it, created=time.time_ns())
    assert entries.find(proj, it.name).state == "done"


def test_published(proj):
    (it,) = queue_runs(proj, "lr=1")
    assert queue_workers.published(proj, it.entry, since=0) is None
    t = time.time_ns()
    oid = _record(proj, it, created=t, status="interrupted")
    assert queue_workers.published(proj, it.entry, since=t / 1e9 + 1) is None
    assert queue_workers.published(proj, it.entry, since=t / 1e9 - 1) == Outcome(
        status="failed", reason="run interrupted", exit_code=None, record=oid, name=it.name)
    # An unreadable record counts as not published.
    path = proj.store.raw_path(oid) if os.path.exists(proj.store.raw_path(oid)) else proj.store.zst_path(oid)
    os.chmod(path, 0o644)
    with open(path, "r+b") as f:
        f.write(b"\0" * 8)
    assert queue_workers.published(proj, it.entry, since=0) is None


def test_status_shows_the_reconciled_verdict(proj, monkeypatch, capsys):
    """`tally queue status` (table and --json) says why a done entry had no outcome."""
    import json

    from cli.main import run

    (it,) = queue_runs(proj, "lr=1")
    _dead_worker(proj, "1-dead")
    queue.claim(proj, "1-dead")
    _record(proj, it, created=time.time_ns())
    monkeypatch.chdir(proj.root)
    capsys.readouterr()
    assert run(["queue", "status", "--json"]) == 0
    (e,) = json.loads(capsys.readouterr().out)["entries"]
    assert e["state"] == "done" and e["reason"] is None
    assert e["note"] == "the worker died after the experiment was recorded"
    assert run(["queue", "status"]) == 0
    out, err = capsys.readouterr()
    assert "the worker died after the experiment was recorded" in out and "1 done, 0 failed" in err
