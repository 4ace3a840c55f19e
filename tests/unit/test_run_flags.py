"""`tally run --dry`, `-s/--single-item`, `--downstream`, `-k/--keep-going` (DVC's
`dvc exp run` / `dvc repro` flags): the selection, the plan, keep-going's `not-run`
stages, and every refused combination, through cas.experiments.runs and the CLI.

The pipeline is a diamond plus an independent stage, in this run order:

    a -> b -> d,  a -> c -> d,  e (reads in.txt only)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from support import helpers
from cas.experiments import runs as experiments
from cas.pipeline import tallylock as lockfile
from cas.store import refs
from cas.core.errors import NotFound, UsageError
from cas.pipeline.stages import Pipeline, Stage
from cas.experiments.request import RunRequest

READS = {"a": ["in.txt"], "b": ["a.txt"], "c": ["a.txt"], "d": ["b.txt", "c.txt"], "e": ["in.txt"]}


def _cmd(name: str) -> str:
    # Logs the call outside the project; fails when $FAIL names the stage.
    return (f'echo {name} >> "$CALLS" && test "$FAIL" != {name} && '
            f'cat {" ".join(READS[name])} > {name}.txt')


PIPELINE = "stages:\n" + "".join(
    f"  {n}:\n    cmd: {json.dumps(_cmd(n))}\n    deps: [{', '.join(d)}]\n    outs: [{n}.txt]\n"
    for n, d in READS.items())


@pytest.fixture
def diamond(project, tmp_path, monkeypatch):
    calls = tmp_path / "calls.log"
    calls.write_text("")
    monkeypatch.setenv("CALLS", str(calls))
    monkeypatch.setenv("FAIL", "")
    monkeypatch.chdir(project.root)
    (project.root / "dvc.yaml").write_text(PIPELINE)
    (project.root / "in.txt").write_text("one\n")
    helpers.git(project.root, "add", "dvc.yaml", "in.txt")
    helpers.git(project.root, "commit", "-q", "-m", "diamond")
    return project


def calls() -> list[str]:
    log = Path(os.environ["CALLS"])
    text = log.read_text().split()
    log.write_text("")
    return text


def states(exp) -> dict[str, str]:
    return {s.name: s.state for s in exp.record.stages}


def untouched(root: Path) -> dict[str, object]:
    """What a dry run must not change: files (but the stat cache), refs, objects."""
    out = {}
    for rel in sorted(helpers.listing(root)):
        p = root / rel
        if rel.startswith(".git/") or rel == ".git" or "statcache" in rel or p.is_dir():
            continue
        out[rel] = (p.read_bytes(), os.stat(p).st_mtime_ns)
    return out


# ---------------------------------------------------------------- selection (pure)

def _pipeline() -> Pipeline:
    up = {"a": (), "b": ("a",), "c": ("a",), "d": ("b", "c"), "e": (),
          "t@1": ("a",), "t@2": ("a",), "u": ("t@1",)}
    return Pipeline(path="dvc.yaml", stages=tuple(Stage(n, ("true",)) for n in up), upstream=up)


@pytest.mark.parametrize("names, kw, want", [
    ([], {}, "a b c d e t@1 t@2 u"),
    (["d"], {}, "a b c d"),
    (["d"], {"single": True}, "d"),
    (["c", "b"], {"single": True}, "b c"),  # run order, not the order named
    (["b"], {"downstream": True}, "b d"),
    (["a"], {"downstream": True}, "a b c d t@1 t@2 u"),
    (["e"], {"downstream": True}, "e"),
    (["t"], {"single": True}, "t@1 t@2"),  # a foreach group
    (["t@1"], {"downstream": True}, "t@1 u"),
    (["c", "b"], {"downstream": True}, "b c d"),
])
def test_select(names, kw, want) -> None:
    assert " ".join(s.name for s in _pipeline().select(names, **kw)) == want


@pytest.mark.parametrize("names, kw, error, match", [
    (["nope"], {"single": True}, NotFound, "no stage named 'nope'"),
    (["nope"], {"downstream": True}, NotFound, "no stage named 'nope'"),
    (["a"], {"single": True, "downstream": True}, UsageError, "cannot be used together"),
    ([], {"single": True}, UsageError, "needs the stages"),
    ([], {"downstream": True}, UsageError, "needs the stages"),
])
def test_select_refuses(names, kw, error, match) -> None:
    with pytest.raises(error, match=match):
        _pipeline().select(names, **kw)


# ---------------------------------------------------------------- -s, --downstream

def test_single_item_runs_only_the_named_stage(diamond) -> None:
    experiments.run(diamond)
    assert calls() == ["a", "b", "c", "d", "e"]
    (diamond.root / "c.txt").write_text("by hand\n")  # d's dep changed; c's output too
    exp = experiments.run(diamond, RunRequest(stages=("d",), single=True))
    assert states(exp) == {"d": "ran"}
    assert calls() == ["d"]  # c is not restored or re-run
    assert (diamond.root / "d.txt").read_text() == "one\nby hand\n"


def test_single_item_needs_the_upstream_outputs(diamond) -> None:
    with pytest.raises(NotFound, match="dependency b.txt does not exist"):
        experiments.run(diamond, RunRequest(stages=("d",), single=True))
    assert calls() == []
    assert refs.list_refs(diamond, refs_baseline(diamond)) == []


def refs_baseline(project) -> str:
    from cas.workspace import fullsnapshot as worktree
    return worktree.baseline_commit(project.root)


def test_downstream_runs_the_stage_and_what_follows(diamond) -> None:
    experiments.run(diamond)
    calls()
    exp = experiments.run(diamond, RunRequest(stages=("b",), downstream=True, force=True))
    assert [s.name for s in exp.record.stages] == ["b", "d"]
    assert calls() == ["b", "d"]
    exp = experiments.run(diamond, RunRequest(stages=("c",), downstream=True))  # unchanged: skipped
    assert states(exp) == {"c": "skipped", "d": "skipped"} and calls() == []


@pytest.mark.parametrize("kw, error", [
    ({"stages": ["nope"], "downstream": True}, NotFound),
    ({"stages": ["nope"], "single": True}, NotFound),
    ({"stages": ["b"], "single": True, "downstream": True}, UsageError),
    ({"single": True}, UsageError),
    ({"downstream": True}, UsageError),
    ({"single": True, "quick_stage": experiments.QuickStage(cmd=("true",))}, UsageError),
])
def test_bad_selection_runs_nothing(diamond, kw, error) -> None:
    with pytest.raises(error):
        experiments.run(diamond, RunRequest(**kw))
    assert calls() == []
    assert not (diamond.root / "tally.lock").exists()


# ---------------------------------------------------------------- -k

def test_a_failure_stops_the_run_without_keep_going(diamond, monkeypatch) -> None:
    monkeypatch.setenv("FAIL", "b")
    exp = experiments.run(diamond)
    assert states(exp) == {"a": "ran", "b": "failed", "c": "not-run", "d": "not-run", "e": "not-run"}
    assert calls() == ["a", "b"]


def test_keep_going_runs_what_does_not_depend_on_the_failure(diamond, monkeypatch) -> None:
    monkeypatch.setenv("FAIL", "b")
    exp = experiments.run(diamond, RunRequest(keep_going=True))
    rec = exp.record
    assert states(exp) == {"a": "ran", "b": "failed", "c": "ran", "d": "not-run", "e": "ran"}
    assert calls() == ["a", "b", "c", "e"]
    assert rec.status == "failed" and rec.exit_code == 1
    assert exp.reason == "stage 'b' failed with exit code 1"
    assert set(rec.outs) == {"a.txt", "c.txt", "e.txt"}
    # The stages that ran are locked; the failed one and the one not run are not.
    assert set(lockfile.read(diamond.root)) == {"a", "c", "e"}
    # The record as stored reads back the same.
    from cas.objects import record
    stored = record.decode(diamond.store.get(exp.oid))
    assert [(s.name, s.state) for s in stored.stages] == [(s.name, s.state) for s in rec.stages]

    monkeypatch.setenv("FAIL", "")
    exp = experiments.run(diamond, RunRequest(keep_going=True))  # the fix: the rest catches up
    assert states(exp) == {"a": "skipped", "b": "ran", "c": "skipped", "d": "ran", "e": "skipped"}
    assert exp.record.status == "success"


def test_keep_going_with_two_failures(diamond, monkeypatch) -> None:
    experiments.run(diamond)
    calls()
    (diamond.root / "in.txt").write_text("two\n")
    monkeypatch.setenv("FAIL", "c")
    exp = experiments.run(diamond, RunRequest(keep_going=True))
    assert states(exp) == {"a": "ran", "b": "ran", "c": "failed", "d": "not-run", "e": "ran"}
    # A first failure upstream makes everything after it not-run, the independent e aside.
    (diamond.root / "in.txt").write_text("three\n")
    monkeypatch.setenv("FAIL", "a")
    exp = experiments.run(diamond, RunRequest(keep_going=True))
    assert states(exp) == {"a": "failed", "b": "not-run", "c": "not-run", "d": "not-run", "e": "ran"}
    assert exp.record.exit_code == 1 and exp.record.status == "failed"


# ---------------------------------------------------------------- --dry

def plan(project, **kw) -> dict[str, tuple[str, str]]:
    return {p["name"]: (p["action"], p["reason"]) for p in experiments.plan(project, RunRequest(**kw))}


def test_dry_on_a_fresh_workspace_changes_nothing(diamond) -> None:
    before = untouched(diamond.root)
    got = experiments.plan(diamond)
    assert [p["name"] for p in got] == ["a", "b", "c", "d", "e"]
    assert got[0] == {"name": "a", "cmd": [_cmd("a")], "action": "run", "reason": "not in tally.lock"}
    assert got[1]["reason"] == "after upstream a, which would change its inputs"
    assert got[3]["reason"] == "after upstream b, c, which would change its inputs"
    assert {p["action"] for p in got} == {"run"}
    assert calls() == []
    assert untouched(diamond.root) == before


def test_dry_after_a_run_skips_restores_and_runs(diamond) -> None:
    experiments.run(diamond)
    calls()
    assert set(plan(diamond).values()) == {("skip", "unchanged since tally.lock")}
    assert plan(diamond, stages=["d"], single=True) == {"d": ("skip", "unchanged since tally.lock")}
    assert list(plan(diamond, stages=["c"], downstream=True)) == ["c", "d"]

    (diamond.root / "in.txt").write_text("two\n")
    got = plan(diamond)
    assert got["a"] == ("run", "deps changed since tally.lock")
    assert got["b"][0] == "run" and got["b"][1].startswith("after upstream a")
    assert got["e"] == ("run", "deps changed since tally.lock")
    experiments.run(diamond)
    assert calls() == ["a", "b", "c", "d", "e"]
    (diamond.root / "in.txt").write_text("one\n")  # back: the run-cache has it
    (diamond.root / "e.txt").unlink()
    before = untouched(diamond.root)
    got = plan(diamond)
    assert got["a"][0] == "restore" and got["a"][1].startswith("run-cache entry ")
    assert got["e"][0] == "restore"
    assert plan(diamond, no_run_cache=True)["a"] == ("run", "deps changed since tally.lock")
    assert set(plan(diamond, force=True).values()) == {("run", "--force")}
    assert calls() == []
    assert untouched(diamond.root) == before
    assert not (diamond.root / "e.txt").exists()


def test_dry_reports_a_missing_output(diamond) -> None:
    experiments.run(diamond)
    (diamond.root / "d.txt").write_text("edited\n")
    assert plan(diamond, no_run_cache=True)["d"] == ("run", "output(s) missing or modified: d.txt")
    assert plan(diamond)["d"][0] == "restore"


def test_dry_refuses_what_a_run_refuses(diamond) -> None:
    with pytest.raises(NotFound, match="dependency b.txt does not exist"):
        experiments.plan(diamond, RunRequest(stages=("d",), single=True))
    with pytest.raises(NotFound, match="no stage named"):
        experiments.plan(diamond, RunRequest(stages=("nope",), downstream=True))
    with pytest.raises(UsageError, match="--dry cannot be combined with -S"):
        experiments.plan(diamond, RunRequest(set_params=("lr=1",)))
    (diamond.root / "in.txt").unlink()
    with pytest.raises(NotFound, match="dependency in.txt does not exist"):
        experiments.plan(diamond)


def test_dry_of_a_command_line_stage(diamond) -> None:
    got = experiments.plan(diamond, RunRequest(quick_stage=experiments.QuickStage(cmd=("echo", "hi"))))
    assert got == [{"name": "run", "cmd": ["echo hi"], "action": "run", "reason": "a command-line stage"}]


# ---------------------------------------------------------------- the CLI

def tally(root: Path, *args: str, code: int = 0, env: dict | None = None) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "cli", "run", *args], cwd=root, capture_output=True,
                          text=True, timeout=120, env={**os.environ, **(env or {})})
    assert proc.returncode == code, (proc.returncode, proc.stdout, proc.stderr)
    return proc


def test_cli_dry(diamond) -> None:
    before = untouched(diamond.root)
    proc = tally(diamond.root, "--dry", "--json")
    doc = json.loads(proc.stdout)
    assert doc["dry"] is True
    assert [(s["name"], s["action"]) for s in doc["stages"]] == [(n, "run") for n in "abcde"]
    assert set(doc["stages"][0]) == {"name", "cmd", "action", "reason"}
    assert untouched(diamond.root) == before and calls() == []
    tally(diamond.root, "--dry", "c", "--downstream", code=3)  # c's dep a.txt: not there
    tally(diamond.root, "-q", "b")  # a and b
    calls()
    before = untouched(diamond.root)
    proc = tally(diamond.root, "--dry", "c", "--downstream")
    assert proc.stdout.splitlines()[:2] == ["would run stage 'c' (not in tally.lock)", f"  > {_cmd('c')}"]
    assert "would run stage 'd' (after upstream c" in proc.stdout
    assert untouched(diamond.root) == before and calls() == []
    tally(diamond.root, "-q")
    proc = tally(diamond.root, "--dry", "-s", "d")
    assert proc.stdout == "would skip stage 'd' (unchanged since tally.lock)\n"


def test_cli_keep_going(diamond) -> None:
    proc = tally(diamond.root, "-k", "--json", code=8, env={"FAIL": "b"})
    doc = json.loads(proc.stdout)
    assert doc["status"] == "failed"
    assert [(s["name"], s["state"]) for s in doc["stages"]] == [
        ("a", "ran"), ("b", "failed"), ("c", "ran"), ("d", "not-run"), ("e", "ran")]
    proc = tally(diamond.root, "--keep-going", "-q", code=8, env={"FAIL": "b"})
    assert "stage 'b' failed with exit code 1" in proc.stderr


def test_cli_single_item_and_downstream(diamond) -> None:
    proc = tally(diamond.root, "-s", "d", code=3)
    assert "dependency b.txt does not exist" in proc.stderr
    tally(diamond.root, "-q", "a")
    calls()
    proc = tally(diamond.root, "--downstream", "b", code=3)  # d also needs c.txt
    assert "dependency c.txt does not exist" in proc.stderr and calls() == []
    tally(diamond.root, "-q")
    calls()
    proc = tally(diamond.root, "--json", "--downstream", "b", "-f")
    assert [(s["name"], s["state"]) for s in json.loads(proc.stdout)["stages"]] == [("b", "ran"), ("d", "ran")]
    assert calls() == ["b", "d"]
    proc = tally(diamond.root, "--json", "--single-item", "c", "-f")
    assert [s["name"] for s in json.loads(proc.stdout)["stages"]] == ["c"]
    assert calls() == ["c"]


@pytest.mark.parametrize("args, code, message", [
    (["--dry", "--queue"], 2, "--dry cannot be used with --queue"),
    (["--dry", "--run-all"], 2, "--dry cannot be used with --run-all"),
    (["--dry", "--dry-run"], 2, "--dry cannot be used with --dry-run"),
    (["-k", "--resume", "x"], 2, "-k/--keep-going cannot be used with --resume"),
    (["-s", "--queue", "a"], 2, "-s/--single-item cannot be used with --queue"),
    (["-s", "--downstream", "b"], 2, "cannot be used together"),
    (["--dry", "-S", "lr=1"], 2, "--dry cannot be used with -S"),
    (["-s"], 2, "-s/--single-item needs the stages"),
    (["--downstream"], 2, "--downstream needs the stages"),
    (["-s", "-o", "x", "--", "true"], 2, "not a command-line stage"),
    (["--downstream", "nope"], 3, "no stage named 'nope'"),
    (["-s", "nope"], 3, "no stage named 'nope'"),
    (["--dry", "-s", "nope"], 3, "no stage named 'nope'"),
    (["--dry=1"], 2, "Option '--dry' does not take a value"),
])
def test_cli_refuses(diamond, args, code, message) -> None:
    proc = tally(diamond.root, *args, code=code)
    assert message in proc.stderr
    assert calls() == [] and not (diamond.root / "tally.lock").exists()


def test_a_signal_while_a_stage_starts_is_forwarded_once_it_exists() -> None:
    """A Ctrl-C between the runner's last look and the stage's process group used to
    reach nobody: the stage then ran to its end (a flaky test under load showed it)."""
    import signal
    import subprocess

    from cas.pipeline import stageproc

    sigs = stageproc.Signals()
    sigs.count, sigs.received = 1, signal.SIGINT  # as if _handle ran with no group yet
    proc = subprocess.Popen(["sleep", "30"], process_group=0)
    try:
        sigs.attach(proc.pid)
        assert proc.wait(10) == -signal.SIGINT
    finally:
        if sigs._timer is not None:
            sigs._timer.cancel()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
