"""`tally run` and `tally save` as a user runs them: real processes, exit codes,
Ctrl-C, two runs in one workspace."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cas.objects import record
from cas.store import refs
from cas.gc.fsck import fsck
from cas.workspace.project import open_project

PIPELINE = """\
stages:
  train:
    cmd: sh train.sh && cp in.txt model.bin
    deps: [in.txt, train.sh]
    params: [lr]
    outs: [model.bin]
metrics:
- m.json
"""


def tally(root: Path, *args: str, check: int | None = 0, **kw) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "cli", *args], cwd=root, capture_output=True,
                          text=True, timeout=120, **kw)
    if check is not None:
        assert proc.returncode == check, (proc.returncode, proc.stdout, proc.stderr)
    return proc


def start(root: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "cli", *args], cwd=root, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def wait_for(path: Path, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.02)


@pytest.fixture
def repo(tmp_path, monkeypatch):
    for who in ("AUTHOR", "COMMITTER"):
        monkeypatch.setenv(f"GIT_{who}_NAME", "Tally Test")
        monkeypatch.setenv(f"GIT_{who}_EMAIL", "tally@example.com")
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    root = tmp_path / "repo"
    root.mkdir()
    (root / "tally.yaml").write_text(PIPELINE)
    (root / "params.yaml").write_text("lr: 0.1  # learning rate\n")
    (root / "in.txt").write_text("data\n")
    (root / "train.sh").write_text("echo '{\"acc\": 0.5}' > m.json\n")
    (root / ".gitignore").write_text("m.json\n")
    for args in (["init", "-q", "-b", "main"], ["add", "-A"], ["commit", "-q", "-m", "init"]):
        subprocess.run(["git", *args], cwd=root, check=True)
    tally(root, "init")
    return root


def only_record(root: Path) -> record.Record:
    project = open_project(root)
    (ref,) = refs.list_refs(project)
    return record.load(project.store, ref[2])


def test_run_then_skip_then_json(repo):
    p = tally(repo, "run", "-n", "first")
    assert p.stdout.strip() == "Ran experiment first (success)"
    assert "Running stage 'train'" in p.stderr and "m.json:acc: 0.5" in p.stderr
    p = tally(repo, "run", "--json", "-S", "lr=0.2")
    data = json.loads(p.stdout)
    assert data["status"] == "success" and data["params"]["params.yaml"] == {"lr": 0.2}
    assert data["metrics"] == {"m.json": {"acc": 0.5}} and data["stages"][0]["state"] == "ran"
    assert refs.name_problem(data["name"]) is None
    p = tally(repo, "run", "-q")
    assert "skipping" not in p.stderr and p.stdout.startswith("Ran experiment")
    assert (repo / "params.yaml").read_text() == "lr: 0.2  # learning rate\n"


def test_a_run_ends_without_teardown_and_loses_nothing(repo):
    """`tally run` leaves by os._exit (cli.entry._exit_now): its output is complete, and
    the stat cache's WAL, left unchecked-pointed, is what the next commands read."""
    for i in range(3):
        p = tally(repo, "run", "--json", "-S", f"lr=0.{i + 3}")
        assert json.loads(p.stdout)["status"] == "success"  # stdout flushed in full
    assert (repo / ".tally" / "statcache.db-wal").exists()  # no checkpoint on close
    project = open_project(repo)
    assert len(project.statcache) > 0  # the rows committed by the runs are there
    project.statcache.close()
    big = tally(repo, "run", "--", "sh", "-c", "seq 1 20000")  # echoed to stderr
    assert big.stdout.startswith("Ran experiment") and "\n20000\n" in big.stderr
    assert tally(repo, "status").returncode == 0
    assert fsck(open_project(repo)).ok


def test_failing_stage_exits_8_and_keeps_the_record(repo):
    (repo / "tally.yaml").write_text(PIPELINE.replace("cp in.txt model.bin",
                                                      "echo partial > model.bin && echo boom >&2 && exit 5"))
    p = tally(repo, "run", "-n", "broken", check=8)
    assert "Ran experiment broken (failed)" in p.stdout
    assert "stage 'train' failed with exit code 5" in p.stderr and "boom" in p.stderr
    rec = only_record(repo)
    assert rec.status == "failed" and rec.exit_code == 5
    project = open_project(repo)
    assert b"boom" in project.store.get(rec.logs)
    assert project.store.get(rec.outs["model.bin"][0]) == b"partial\n"


@pytest.mark.parametrize("setup, args, code, message", [
    (lambda r: (r / "tally.yaml").write_text("stages:\n  a:\n    cmd: x\n    depz: []\n"), [], 2,
     "tally.yaml:4"),
    (lambda r: (r / "in.txt").unlink(), [], 3, "dependency in.txt does not exist"),
    (lambda r: None, ["-S", "missing=1"], 2, "missing"),
    (lambda r: None, ["nosuchstage"], 3, "no stage named"),
    (lambda r: None, ["-n", "bad name"], 2, "invalid experiment name"),
    (lambda r: None, ["--bogus"], 2, "No such option: --bogus"),
    (lambda r: None, ["-o", "x.txt"], 2, "need a command"),
])
def test_bad_input_exit_codes(repo, setup, args, code, message):
    setup(repo)
    p = tally(repo, "run", *args, check=code)
    assert message in p.stderr
    assert refs.list_refs(open_project(repo)) == []


def test_name_taken_is_exit_4(repo):
    tally(repo, "run", "-n", "x", "-q")
    p = tally(repo, "run", "-n", "x", check=4)
    assert "already exists" in p.stderr


def test_no_commit_is_exit_6(tmp_path):
    root = tmp_path / "r"
    root.mkdir()
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    (root / "tally.yaml").write_text("stages:\n  a:\n    cmd: echo\n")
    tally(root, "init")
    p = tally(root, "run", check=6)
    assert "no commit" in p.stderr and "git commit" in p.stderr


def test_quick_stage_from_the_command_line(repo):
    p = tally(repo, "run", "-n", "q", "-d", "in.txt", "-o", "copy.txt", "-M", "qm.json", "--",
              "sh", "-c", "cp in.txt copy.txt; echo '{\"x\": 2}' > qm.json")
    assert "Ran experiment q (success)" in p.stdout
    rec = only_record(repo)
    assert rec.stages[0].cmd == ("sh -c 'cp in.txt copy.txt; echo '\"'\"'{\"x\": 2}'\"'\"' > qm.json'",)
    assert rec.metrics == {"qm.json": {"x": 2}} and "copy.txt" in rec.outs
    p = tally(repo, "run", "-q", "--", "echo", "hello")
    assert p.returncode == 0


def test_save(repo):
    tally(repo, "run", "-q")
    data = json.loads(tally(repo, "save", "-n", "snap", "-m", "note", "--json").stdout)
    assert data["name"] == "snap" and data["message"] == "note" and data["stages"] == []
    assert "model.bin" in data["outs"]


SLOW_STAGE = """\
stages:
  slow:
    cmd: echo started > started.txt && sleep 30 && echo done > out.txt
    outs: [out.txt]
"""


def test_ctrl_c_records_interrupted_and_the_store_stays_sound(repo):
    (repo / "tally.yaml").write_text(SLOW_STAGE)
    proc = start(repo, "run", "-n", "stopped")
    wait_for(repo / "started.txt")
    t0 = time.monotonic()
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, (out, err)
    assert time.monotonic() - t0 < 20  # the sleep was killed, not waited for
    assert "Ran experiment stopped (interrupted)" in out
    rec = only_record(repo)
    assert rec.status == "interrupted" and rec.stages[0].state == "interrupted"
    assert not (repo / "out.txt").exists()
    project = open_project(repo)
    assert fsck(project).ok
    assert not list(project.store.tmp.glob("run-*.log"))  # the log went into the store
    # the workspace lock was released: the next run proceeds
    (repo / "tally.yaml").write_text(SLOW_STAGE.replace("sleep 30", "true"))
    tally(repo, "run", "-q")


def test_sigterm_is_handled_like_ctrl_c(repo):
    (repo / "tally.yaml").write_text(SLOW_STAGE)
    proc = start(repo, "run", "-q")
    wait_for(repo / "started.txt")
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=60)
    assert proc.returncode == 130
    assert only_record(repo).status == "interrupted"


def test_two_runs_in_one_workspace(repo):
    gate = repo.parent / "gate"
    (repo / "tally.yaml").write_text(f"""\
stages:
  slow:
    cmd: echo started > started.txt && while [ ! -e {gate} ]; do sleep 0.05; done && echo x > out.txt
    outs: [out.txt]
""")
    first = start(repo, "run", "-n", "first", "-q")
    wait_for(repo / "started.txt")
    busy = tally(repo, "run", "-n", "second", check=7)
    assert f"pid {first.pid}" in busy.stderr and "--wait" in busy.stderr
    waiting = start(repo, "run", "-n", "third", "--wait", "60", "-q")
    time.sleep(0.5)
    assert waiting.poll() is None  # queued behind the first run
    gate.write_text("go")
    assert first.wait(timeout=60) == 0
    out, err = waiting.communicate(timeout=60)
    assert waiting.returncode == 0, err
    names = sorted(n for _, n, _ in refs.list_refs(open_project(repo)))
    assert names == ["first", "third"]
    assert fsck(open_project(repo)).ok


