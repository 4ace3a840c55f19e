"""CLI end to end for the queue: `tally run --queue/--dry-run/--run-all/--resume` and
`tally queue status|logs|kill|stop|remove|retry|start`: exit codes, stdout/stderr, --json."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import pytest

from cas.queue import directory as queue
from cas.queue import status as queue_status
from cas.queue import workers as queue_workers
from cas.queue import entries
from cli.main import run
from support.queuelab import CKPT, TRAIN, wait_for as _wait_for, make_project

PY_DIR = str(Path(sys.executable).parent)


@pytest.fixture
def cli_proj(tmp_path, monkeypatch):
    p = make_project(tmp_path / "proj", train=TRAIN)
    monkeypatch.chdir(p.root)
    return p


def tally(capsys, *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = run(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_queue_dry_run_then_queue_then_run_all(cli_proj, capsys):
    code, out, err = tally(capsys, "run", "--queue", "--dry-run", "-S", "lr=0.1,0.2", "-S", "epochs=range(1,3)")
    assert code == 0 and out.count("would queue") == 4 and "params.yaml:lr=0.2 params.yaml:epochs=2" in out
    assert entries.items(cli_proj) == []
    code, out, err = tally(capsys, "run", "--queue", "--json", "-n", "sw", "-S", "lr=0.1,0.2")
    doc = json.loads(out)
    assert code == 0 and doc["queued"] and [e["name"] for e in doc["entries"]] == ["sw-1", "sw-2"]
    code, out, err = tally(capsys, "queue", "status")
    assert code == 0 and out.splitlines()[0].split() == \
        ["NAME", "ID", "STATE", "QUEUED", "STARTED", "TOOK", "WORKER", "NOTE"]
    assert "sw-1" in out and "pending" in out and "2 queued, 0 running" in err
    code, out, err = tally(capsys, "run", "--run-all", "-j", "2")
    assert code == 0 and "2 done, 0 failed" in err
    code, out, err = tally(capsys, "queue", "status", "--json")
    doc = json.loads(out)
    assert [e["state"] for e in doc["entries"]] == ["done", "done"] and doc["workers"] == []
    assert all(e["worker_pid"] and e["record"] and e["started"] and e["finished"] for e in doc["entries"])
    code, out, err = tally(capsys, "queue", "logs", "sw-1")
    assert code == 0 and "=== sw-1" in out and "trained with" in out


def test_failed_runs_exit_8_logs_retry_remove(cli_proj, capsys):
    tally(capsys, "run", "--queue", "-n", "bad", "-S", "lr=0.666")
    code, out, err = tally(capsys, "run", "--run-all")
    assert code == 8 and "1 queued run(s) failed: bad" in err
    code, out, err = tally(capsys, "queue", "logs", "bad")
    assert code == 0 and "diverged" in out
    code, out, err = tally(capsys, "queue", "status")
    assert "failed" in out and "exit code 3" in out
    code, out, err = tally(capsys, "queue", "retry", "--failed")
    assert code == 0 and "queued bad again" in out
    code, out, err = tally(capsys, "queue", "remove", "--queued", "--json")
    assert code == 0 and [r["name"] for r in json.loads(out)] == ["bad"]
    code, out, err = tally(capsys, "queue", "status")
    assert "The queue is empty" in out


def test_errors_and_exit_codes(cli_proj, capsys):
    assert tally(capsys, "queue", "logs", "nope")[0] == 3
    assert tally(capsys, "queue", "kill", "nope")[0] == 3
    tally(capsys, "run", "--queue", "-n", "p1")
    code, out, err = tally(capsys, "queue", "kill", "p1")
    assert code == 4 and "not running" in err
    code, out, err = tally(capsys, "run", "--queue", "-n", "p1")
    assert code == 4 and "already in the queue" in err
    assert tally(capsys, "queue", "remove")[0] == 2
    assert tally(capsys, "queue", "retry")[0] == 2
    assert tally(capsys, "run", "--queue", "-S", "lr=1", "-S", "lr=2")[0] == 2
    assert tally(capsys, "run", "--queue", "-o", "x", "--", "echo")[0] == 2
    assert tally(capsys, "run", "--resume", "nope")[0] == 3
    code, out, err = tally(capsys, "queue", "stop")
    assert code == 0 and "no worker is running" in out
    code, out, err = tally(capsys, "queue", "remove", "p1")
    assert code == 0 and "removed p1 (pending)" in out
    code, out, err = tally(capsys, "queue", "start", "-j", "2")
    assert code == 0 and "the queue is empty" in err


def test_start_detached_workers_and_follow_logs(cli_proj, capsys):
    tally(capsys, "run", "--queue", "-S", "lr=1,2,3")
    code, out, err = tally(capsys, "queue", "start", "-j", "2", "--json")
    res = json.loads(out)
    assert code == 0 and len(res["started"]) == 2 and res["pending"] == 3
    name = entries.items(cli_proj)[-1].name
    code, out, err = tally(capsys, "queue", "logs", "--follow", name)  # returns once it has finished
    assert code == 0 and "trained with" in out and f"recorded {name}" in out
    _wait_for(lambda: all(e["state"] == "done" for e in queue_status.status(cli_proj)["entries"]),
              what="all runs")
    _wait_for(lambda: not queue_workers.live_workers(cli_proj), what="the workers to exit")


def test_resume_from_the_command_line(tmp_path, monkeypatch, capsys):
    p = make_project(tmp_path / "proj", train=CKPT, persist=("model.txt",))
    monkeypatch.chdir(p.root)
    tally(capsys, "run", "--queue", "-n", "base", "-S", "epochs=1")
    assert tally(capsys, "run", "--run-all")[0] == 0
    code, out, err = tally(capsys, "run", "--resume", "base", "-n", "cont", "-S", "epochs=2", "-q")
    assert code == 0 and "Ran experiment cont (success)" in out
    assert (p.root / "out.txt").read_text() == "epoch 0 lr 0.1\nepoch 1 lr 0.1\n"
    code, out, err = tally(capsys, "run", "--queue", "--resume", "cont", "-n", "more", "-S", "epochs=3")
    assert code == 0 and "queued more" in out
    assert tally(capsys, "run", "--run-all")[0] == 0
    from cas.objects import record
    from cas.store import refs
    rec = record.load(p.store, refs.find(p, "more")[0][2])
    assert [s for s, _ in rec.checkpoints] == [2] and rec.parent == refs.find(p, "cont")[0][2]


def test_resume_of_a_command_line_stage(tmp_path, monkeypatch, capsys):
    """`--resume` of a `-o ... -- CMD` experiment takes the stage again; without it, it
    is refused (it would run the pipeline file), and such a resume cannot be queued."""
    p = make_project(tmp_path / "proj", train=CKPT, persist=("model.txt",))
    monkeypatch.chdir(p.root)
    quick = ("-o", "out.txt", "-d", "train.py", "--", "python", "train.py")
    monkeypatch.setenv("PATH", f"{PY_DIR}:{os.environ['PATH']}")
    assert tally(capsys, "run", "-n", "base", "-q", *quick)[0] == 0
    code, _, err = tally(capsys, "run", "--resume", "base", "-n", "c1")
    assert code == 2 and "ran a command-line stage" in err and "-- CMD" in err
    code, _, err = tally(capsys, "run", "--queue", "--resume", "base", "-n", "c2", *quick)
    assert code == 2 and "cannot be queued" in err
    (p.root / "params.yaml").write_text("lr: 0.1\nepochs: 3\n")
    code, out, err = tally(capsys, "run", "--resume", "base", "-n", "c3", "-q", *quick)
    assert code == 0 and "Ran experiment c3 (success)" in out, err
    assert (p.root / "out.txt").read_text().count("epoch") == 3


@pytest.mark.parametrize("spec, code, words", [
    ("nokey=1", 2, "key 'nokey' does not exist"),
    ("other.yaml:lr=1", 3, "other.yaml"),
    ("lr=0.1,0.2", None, ""),
    ("+lr=1", 2, "already exists"),
    ("lr==0.1", 2, "must be quoted"),
])
def test_queue_and_its_dry_run_check_keys_and_files(cli_proj, capsys, spec, code, words):
    """As DVC does at queue time: nothing is queued for a params key or file the run
    would not find, and a dry run says so too (every value of a sweep is checked)."""
    for dry in ("--dry-run", None):
        got, out, err = tally(capsys, "run", "--queue", *([dry] if dry else []), "-S", spec, "-S", "epochs=3,4")
        if code is None:
            assert got == 0, err
            continue
        assert got == code and words in err, (dry, err)
        assert queue_status.status(cli_proj)["entries"] == []
    assert (cli_proj.root / "params.yaml").read_text() == "lr: 0.1\nepochs: 2\n"


def test_status_shows_time_and_attempts(cli_proj, capsys):
    tally(capsys, "run", "--queue", "-n", "t")
    it = queue.claim(cli_proj, "1-gone")  # a worker that never existed: reaped on look
    assert it is not None
    code, out, err = tally(capsys, "queue", "status", "--json")
    (e,) = json.loads(out)["entries"]
    assert e["state"] == "failed" and e["reason"] == "worker died" and e["attempt"] == 1
    assert e["queued"] <= time.time()
