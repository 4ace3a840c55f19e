"""Workers running real experiments: the life cycle, snapshot isolation, failures with
their logs, worker death and retry, kill and stop, live values during a run,
checkpoints restored and resumed."""

from __future__ import annotations

import json
import os
import signal
import subprocess

import pytest

from cas.experiments import checkpoints
from cas.pipeline import runcache
from cas.queue import directory as queue
from cas.queue import status as queue_status
from cas.queue import workers as queue_workers
from cas.store import refs
from cas.workers import supervisor as worker
from cas.core.errors import WouldOverwrite
from cas.queue import entries
from cas.experiments.request import RunRequest
from cli.worker import LAUNCHER
from support.queuelab import PY, git as _git, make_project, TRAIN, CKPT, queue_runs, records, wait_for as _wait_for, spawn_worker as _spawn_worker

SLOW = os.environ.get("TALLY_SLOW") == "1"








@pytest.fixture
def proj(tmp_path):
    return make_project(tmp_path / "proj", train=TRAIN)






def test_life_cycle_with_a_sweep(proj):
    items = queue_runs(proj, "lr=0.1,0.01,0.001", "epochs=range(1,3)")
    assert len(items) == 6
    stats = worker.run_all(proj, jobs=2)
    assert sorted(stats.done) == sorted(it.name for it in items) and not stats.failed
    recs = records(proj)
    assert {(r.params["params.yaml"]["lr"], r.params["params.yaml"]["epochs"]) for r in recs.values()} == \
        {(lr, ep) for lr in (0.1, 0.01, 0.001) for ep in (1, 2)}
    assert all(r.status == "success" and "out.txt" in r.outs for r in recs.values())
    st = queue_status.status(proj)
    assert [e["state"] for e in st["entries"]] == ["done"] * 6
    assert all(e["record"] == refs.read(proj, e["entry"]["baseline"], e["name"]) for e in st["entries"])
    assert st["workers"] == []  # the worker unregistered on exit
    for it in items:
        log = queue.log_path(proj, it.id).read_text()
        assert "trained with" in log and f"=== {it.name}" in log
        assert not queue.run_dir(proj, it.id).exists()  # success: the run dir is gone
    assert not [n for n in os.listdir(proj.store_dir / "tmp") if n.startswith(("trash-", "run-"))]
    assert not [n for n in os.listdir(proj.store_dir / "locks") if n.startswith("workspace-run-")]
    # The user's workspace was never touched.
    assert (proj.root / "params.yaml").read_text() == "lr: 0.1\nepochs: 2\n"
    assert not (proj.root / "out.txt").exists()
    assert _git(proj.root, "status", "--porcelain") == "?? .tally/\n"


def test_queue_time_snapshot_isolation(proj):
    (it,) = queue_runs(proj, "lr=0.5")
    # Edits after queueing (params, code, an untracked file) must not leak into the run.
    (proj.root / "params.yaml").write_text("lr: 0.9\nepochs: 7\n")
    (proj.root / "train.py").write_text("raise SystemExit('edited code ran')\n")
    stats = worker.run_all(proj, jobs=1)
    assert stats.done == [it.name]
    rec = records(proj)[it.name]
    assert rec.params["params.yaml"] == {"lr": 0.5, "epochs": 2}
    assert proj.store.get(rec.outs["out.txt"][0]) == b"lr=0.5 epochs=2\n"


def test_failed_run_keeps_logs_and_retry_runs_it_again(proj):
    ok, bad = queue_runs(proj, "lr=0.1,0.666")
    stats = worker.run_all(proj, jobs=2)
    assert stats.done == [ok.name] and stats.failed == [bad.name]
    item = entries.find(proj, bad.name)
    assert item.state == "failed" and item.outcome.exit_code == 3
    assert "exit code 3" in item.outcome.reason
    log = queue.log_path(proj, bad.id).read_text()
    assert "diverged" in log and "trained with" in log
    assert records(proj)[bad.name].status == "failed"  # recorded, with partial outputs
    entries.retry(proj, keys=[bad.name])
    worker.run_all(proj, jobs=1)
    again = entries.find(proj, bad.name)
    assert again.state == "failed" and again.outcome.attempt == 2
    assert queue.log_path(proj, bad.id).read_text().count(f"=== {bad.name}") == 2


SLEEPY = """\
    import os, pathlib, sys, time
    from cas.live import Live
    live = Live()
    for step in range(2):
        live.log_metric("loss", 1.0 / (step + 1))
        live.log_metric("train/acc", step * 10)
        live.next_step()
    print("waiting", flush=True)
    go = pathlib.Path(os.environ["GO_FILE"])
    for _ in range(600):
        if go.exists():
            break
        time.sleep(0.05)
    open("out.txt", "w").write("done\\n")
    """






@pytest.fixture
def sleepy(tmp_path, monkeypatch):
    go = tmp_path / "go"
    monkeypatch.setenv("GO_FILE", str(go))
    return make_project(tmp_path / "proj", train=SLEEPY), go


def test_live_values_are_visible_during_the_run(sleepy):
    p, go = sleepy
    (it,) = queue_runs(p)
    w = _spawn_worker(p)
    try:
        rows = _wait_for(lambda: [r for r in queue_status.running_live(p) if r["live"]["step"] == 1],
                         what="live step 1")
        (row,) = rows
        assert row["name"] == it.name and row["worker_pid"] == w.pid
        assert row["live"]["metrics"] == {"tally-live/metrics.json": {"loss": 0.5, "train": {"acc": 10}}}
        (e,) = queue_status.status(p)["entries"]
        assert e["state"] == "running" and e["live"]["step"] == 1 and e["worker_pid"] == w.pid
        go.touch()
        assert w.wait(30) == 0
    finally:
        if w.poll() is None:
            w.kill()
    assert entries.find(p, it.name).state == "done"


def test_sigkilled_worker_entry_fails_with_reason_and_retry_runs_it(sleepy):
    p, go = sleepy
    (it,) = queue_runs(p)
    w = _spawn_worker(p)
    _wait_for(lambda: queue_status.running_live(p) and queue_status.running_live(p)[0]["live"]["step"] == 1,
              what="the run to start")
    os.kill(w.pid, signal.SIGKILL)
    w.wait(10)
    item = _wait_for(lambda: (lambda i: i if i.state == "failed" else None)(entries.find(p, it.name)),
                     what="the entry to be failed")
    assert item.outcome.reason == "worker died"
    # The run's processes went with their worker (PDEATHSIG -> SIGTERM -> the stage).
    _wait_for(lambda: "waiting" in queue.log_path(p, it.id).read_text(), what="the log")
    assert queue_workers.live_workers(p) == []
    go.touch()
    entries.retry(p, keys=[it.name])
    stats = worker.run_all(p, jobs=1)
    assert stats.done == [it.name]
    done = entries.find(p, it.name)
    assert done.state == "done" and done.outcome.attempt == 2
    assert records(p)[it.name].status == "success"


def test_kill_a_running_entry(sleepy):
    p, go = sleepy
    first, second = queue_runs(p, "lr=1,2")
    w = _spawn_worker(p)
    try:
        _wait_for(lambda: [r for r in queue_status.running_live(p) if r["live"]["step"] == 1],
                  what="the first run's stage")
        queue_workers.request_kill(p, first.name)
        _wait_for(lambda: entries.find(p, first.name).state == "failed", what="the kill")
        assert entries.find(p, first.name).outcome.reason == "killed by `tally queue kill`"
        go.touch()  # the worker moves on to the next entry
        assert w.wait(30) == 0
    finally:
        if w.poll() is None:
            w.kill()
    assert entries.find(p, second.name).state == "done"
    assert records(p)[first.name].status == "interrupted"


def test_stop_lets_the_current_run_finish(sleepy):
    p, go = sleepy
    a, b = queue_runs(p, "lr=1,2")
    w = _spawn_worker(p, "--keep-alive")
    try:
        _wait_for(lambda: queue_status.running_live(p), what="the first run")
        (info,) = queue_workers.request_stop(p)
        assert info.pid == w.pid
        go.touch()
        assert w.wait(30) == 0
    finally:
        if w.poll() is None:
            w.kill()
    assert entries.find(p, a.name).state == "done" and entries.find(p, b.name).state == "pending"
    # A stop request never stops workers started after it.
    assert worker.run_all(p, jobs=1).done == [b.name]




def test_checkpoints_restore_and_resume(tmp_path):
    p = make_project(tmp_path / "proj", train=CKPT, persist=("model.txt",))
    (first,) = queue_runs(p, "epochs=2", name="first")
    assert worker.run_all(p, jobs=1).done == ["first"]
    rec = records(p)["first"]
    assert [s for s, _ in rec.checkpoints] == [0, 1]

    # Restore step 0 into the workspace: only the checkpoint's files are written.
    got = checkpoints.restore(p, "first", step=0)
    assert got["step"] == 0 and sorted(got["written"])[0] == "model.txt"
    assert (p.root / "model.txt").read_text() == "epoch 0 lr 0.1\n"
    assert json.loads((p.root / "tally-live/metrics.json").read_text())["step"] == 0
    (p.root / "model.txt").write_text("my own edit\n")
    with pytest.raises(WouldOverwrite):
        checkpoints.restore(p, "first", step=1)
    assert (p.root / "model.txt").read_text() == "my own edit\n"
    checkpoints.restore(p, "first", step=1, force=True)
    assert (p.root / "model.txt").read_text() == "epoch 0 lr 0.1\nepoch 1 lr 0.1\n"

    # Resume from the last checkpoint, queued, with more epochs and another lr.
    (cont,) = queue_runs(p, "epochs=4", "lr=0.05", name="more", resume="first")
    assert cont.entry.parent == refs.read(p, rec.baseline, "first")
    assert worker.run_all(p, jobs=1).done == ["more"]
    more = records(p)["more"]
    assert more.parent == cont.entry.parent
    assert [s for s, _ in more.checkpoints] == [2, 3]
    assert p.store.get(more.outs["out.txt"][0]).decode() == \
        "epoch 0 lr 0.1\nepoch 1 lr 0.1\nepoch 2 lr 0.05\nepoch 3 lr 0.05\n"


def test_resume_in_the_workspace(tmp_path):
    p = make_project(tmp_path / "proj", train=CKPT, persist=("model.txt",))
    queue_runs(p, "epochs=1", name="base")
    worker.run_all(p, jobs=1)
    (p.root / "params.yaml").write_text("lr: 0.1\nepochs: 3\n")
    exp = checkpoints.run_resumed(p, RunRequest(resume="base", name="cont"))
    assert exp.record.status == "success"
    assert exp.record.parent == refs.read(p, exp.record.baseline, "base")
    assert [s for s, _ in exp.record.checkpoints] == [1, 2]
    assert (p.root / "out.txt").read_text() == "epoch 0 lr 0.1\nepoch 1 lr 0.1\nepoch 2 lr 0.1\n"


def _dvc_style_checkpoints(root) -> object:
    """CKPT with model.txt a plain output (no `persist`) and the live directory declared
    as DVC users declare dvclive's: metrics and plots with `cache: false`."""
    p = make_project(root, train=CKPT, outs=("out.txt", "model.txt"))
    (p.root / "dvc.yaml").write_text(
        f"stages:\n  train:\n    cmd: {PY} train.py\n    deps: [train.py]\n    params: [lr, epochs]\n"
        "    outs: [out.txt, model.txt]\n    metrics: [{tally-live/metrics.json: {cache: false}}]\n"
        "    plots: [{tally-live/plots/metrics: {cache: false}}]\n")
    _git(p.root, "commit", "-qam", "dvclive-style outputs")
    return p


def test_resume_continues_from_the_restored_outputs_without_persist(tmp_path):
    """The files a resume restores are the state the stage continues from: they are not
    removed before it runs (no `persist: true` needed), nor replaced from the run-cache."""
    p = _dvc_style_checkpoints(tmp_path / "proj")
    base = checkpoints.run_with_checkpoints(p, RunRequest(name="base"))
    assert base.record.status == "success" and [s for s, _ in base.record.checkpoints] == [0, 1]
    assert len(list(runcache.iter_index(p))) == 1
    (p.root / "params.yaml").write_text("lr: 0.1\nepochs: 4\n")
    exp = checkpoints.run_resumed(p, RunRequest(resume="base", name="cont"))
    assert exp.record.status == "success", p.store.get(exp.record.logs).decode()
    assert [s for s, _ in exp.record.checkpoints] == [2, 3]  # not 0..3 again
    assert (p.root / "model.txt").read_text() == "".join(f"epoch {i} lr 0.1\n" for i in range(4))
    assert exp.record.metrics["tally-live/metrics.json"]["step"] == 3
    history = (p.root / "tally-live/plots/metrics/loss.tsv").read_text().splitlines()
    assert [row.split("\t")[0] for row in history[1:]] == ["0", "1", "2", "3"]
    # What a resume makes depends on its checkpoint, which no run-cache key holds.
    assert len(list(runcache.iter_index(p))) == 1  # the base run's entry only


def test_a_queued_resume_continues_from_the_restored_outputs(tmp_path):
    p = _dvc_style_checkpoints(tmp_path / "proj")
    queue_runs(p, "epochs=2", name="first")
    assert worker.run_all(p, jobs=1).done == ["first"]
    queue_runs(p, "epochs=3", name="more", resume="first")
    assert worker.run_all(p, jobs=1).done == ["more"]
    more = records(p)["more"]
    assert [s for s, _ in more.checkpoints] == [2]
    assert p.store.get(more.outs["model.txt"][0]).decode() == \
        "".join(f"epoch {i} lr 0.1\n" for i in range(3))


def test_resume_refuses_a_command_line_stage_it_cannot_repeat(tmp_path):
    """A quick-stage experiment resumed without its stage would run the pipeline file."""
    from cas.core.errors import UsageError
    from cas.experiments.request import QuickStage

    p = make_project(tmp_path / "proj", train=CKPT, persist=("model.txt",))
    quick = QuickStage(cmd=(f"{PY} train.py",), deps=("train.py",), outs=("out.txt",))
    base = checkpoints.run_with_checkpoints(p, RunRequest(name="base", quick_stage=quick))
    assert [s.name for s in base.record.stages] == ["run"] and base.record.checkpoints
    for resume in (lambda: checkpoints.run_resumed(p, RunRequest(resume="base", name="c")),
                   lambda: queue_runs(p, name="q", resume="base")):
        with pytest.raises(UsageError, match="command-line stage"):
            resume()
    assert set(records(p)) == {"base"} and not queue_status.status(p)["entries"]
    (p.root / "params.yaml").write_text("lr: 0.1\nepochs: 3\n")
    cont = checkpoints.run_resumed(p, RunRequest(resume="base", name="cont", quick_stage=quick))
    assert [s.name for s in cont.record.stages] == ["run"] and cont.record.status == "success"
    assert [s for s, _ in cont.record.checkpoints] == [2]
    assert (p.root / "out.txt").read_text().count("epoch") == 3


@pytest.mark.skipif(not SLOW, reason="heavy: TALLY_SLOW=1")
def test_hundred_entries_two_detached_workers(proj):
    items = queue_runs(proj, "lr=range(0,100)")
    res = worker.start(proj, jobs=2, launcher=LAUNCHER)
    assert len(res["started"]) == 2
    _wait_for(lambda: all(e["state"] in ("done", "failed") for e in queue_status.status(proj)["entries"]),
              timeout=300, what="100 runs")
    states = [e["state"] for e in queue_status.status(proj)["entries"]]
    assert states == ["done"] * len(items)


def test_gc_keeps_queued_snapshots(proj):
    from cas.gc import collect as gc

    (proj.root / "notes.txt").write_text("only in the snapshot\n")
    (it,) = queue_runs(proj, "lr=0.3")
    (proj.root / "notes.txt").unlink()  # the workspace no longer has it: only the entry does
    report = gc.gc(proj, grace_s=0, force=True)
    assert not report.deleted or all(d.oid != it.entry.workspace for d in report.deleted)
    assert worker.run_all(proj, jobs=1).done == [it.name]
    rec = records(proj)[it.name]
    from cas.objects import tree
    names = {e.name for e in tree.decode(proj.store.get(rec.workspace)).entries}
    assert "notes.txt" in names


def test_ctrl_c_of_a_foreground_run_all(sleepy):
    p, go = sleepy
    (it,) = queue_runs(p)
    fg = subprocess.Popen([PY, "-m", "cli", "run", "--run-all"], cwd=p.root,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        _wait_for(lambda: [r for r in queue_status.running_live(p) if r["live"]["step"] == 1],
                  what="the run's stage")
        fg.send_signal(signal.SIGINT)
        out, err = fg.communicate(timeout=30)
    finally:
        if fg.poll() is None:
            fg.kill()
    assert fg.returncode == 130, err
    item = entries.find(p, it.name)
    assert item.state == "failed" and item.outcome.reason == "worker interrupted by signal 2"
    assert records(p)[it.name].status == "interrupted"


def test_run_dir_is_linked_and_never_rehashed(proj):
    from cas.queue import rundirs
    from cas.workers import rundir
    from cas.workspace import snapshot as workspace

    (proj.root / "data").mkdir()
    for i in range(20):
        (proj.root / "data" / f"{i}.csv").write_text(f"row {i}\n" * 100)
    (it,) = queue_runs(proj)
    rp = rundir.prepare(proj, run_id="t" * 16, workspace=it.entry.workspace,
                        baseline=it.entry.baseline, common_dir=rundir.git_common_dir(proj.root))
    snap = workspace.snapshot(rp.root / "data", statcache=proj.statcache)
    assert snap.files == 20 and snap.hashed == 0  # the checkout seeded the stat cache
    assert _git(rp.root, "rev-parse", "HEAD").strip() == it.entry.baseline
    assert (rp.root / "data" / "3.csv").read_text() == "row 3\n" * 100
    assert _git(proj.root, "status", "--porcelain") == "?? .tally/\n?? data/\n"  # untouched
    rundirs.cleanup(proj, "t" * 16)
    assert not rp.root.exists()


@pytest.mark.parametrize("mode", ["hardlink", "symlink", "copy"])
def test_link_modes_keep_the_store_read_only(tmp_path, mode):
    from cas.store import config as config_mod
    from cas.workspace.project import open_project

    p = make_project(tmp_path / "proj", train=TRAIN)
    config_mod.set_value(p.store_dir / "config", "cache.type", mode)
    p = open_project(p.root)
    (p.root / "weights.bin").write_bytes(b"w" * 5000)
    a, b = queue_runs(p, "lr=0.1,0.666")
    stats = worker.run_all(p, jobs=2)
    assert stats.done == [a.name] and stats.failed == [b.name]
    entries.remove(p, keys=[b.name])  # also deletes the failed run's directory
    assert not [n for n in os.listdir(p.store_dir / "tmp") if n.startswith(("run-", "trash-"))]
    for oid in p.store.iter_oids():
        info = p.store.info(oid)
        assert oct(os.stat(info.path).st_mode & 0o777) == oct(0o444), oid


def test_stop_kill_kills_the_current_run(sleepy):
    p, go = sleepy
    a, b = queue_runs(p, "lr=1,2")
    w = _spawn_worker(p, "--keep-alive")
    try:
        _wait_for(lambda: [r for r in queue_status.running_live(p) if r["live"]["step"] == 1],
                  what="the first run's stage")
        queue_workers.request_stop(p, kill=True)
        assert w.wait(30) == 0
    finally:
        if w.poll() is None:
            w.kill()
    first = entries.find(p, a.name)
    assert first.state == "failed" and first.outcome.reason == "killed by `tally queue stop --kill`"
    assert entries.find(p, b.name).state == "pending"
    assert queue_workers.live_workers(p) == []


def test_show_lists_queued_and_running_experiments_with_live_values(sleepy):
    """`tally show` shows a running queued experiment with its live metrics, and the
    still-queued ones, alongside the recorded experiments (filterable like them)."""
    from cas.experiments import listing

    p, go = sleepy
    items = queue_runs(p) + queue_runs(p)  # one worker: the second stays queued
    w = _spawn_worker(p)
    try:
        _wait_for(lambda: [r for r in queue_status.running_live(p) if r["live"]["step"] == 1],
                  what="live step 1")
        exps = {e.name: e for e in listing.list_experiments(p)}
        running = exps[items[0].name]
        assert running.status == "running" and not running.oid
        assert running.values["metrics:tally-live/metrics.json:loss"] == 0.5
        assert running.values["metrics:tally-live/metrics.json:train.acc"] == 10
        assert exps[items[1].name].status == "queued"
        table = listing.show(p, filter="status == \"running\" and loss < 1")
        assert [e.name for e in table.experiments] == [items[0].name]
        go.touch()
        assert w.wait(60) == 0
    finally:
        if w.poll() is None:
            w.kill()
    done = {e.name: e.status for e in listing.list_experiments(p)}
    assert done[items[0].name] == "success" and done[items[1].name] == "success"


def test_discard_survives_the_supervisor_removing_an_empty_trash(proj, monkeypatch):
    """The supervisor rmdirs an empty trash while an executor discards its run directory
    (between the executor's mkdir and its rename): the directory still reaches the
    trash instead of being left behind in .tally/tmp."""
    from cas.queue import rundirs

    trash = proj.store_dir / "tmp" / "trash-test"
    run_dir = proj.store_dir / "tmp" / "run-0123456789abcdef"
    (run_dir / "sub").mkdir(parents=True)
    real_rename = os.rename
    raced = []

    def rename(src, dst, *a, **kw):
        if not raced and os.fspath(src) == os.fspath(run_dir):
            raced.append(True)
            os.rmdir(trash)  # the supervisor's _empty_trash, at the worst moment
        return real_rename(src, dst, *a, **kw)

    monkeypatch.setattr(rundirs.os, "rename", rename)
    rundirs.discard(proj, "0123456789abcdef", trash)
    assert raced and not run_dir.exists()
    assert (trash / run_dir.name / "sub").is_dir()
