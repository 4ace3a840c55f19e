"""The real dvclive inside a tally run: told it runs inside an experiment, the way
`dvc exp run` tells it (DVC_ROOT, DVC_STAGE, DVC_EXP_BASELINE_REV, DVC_EXP_NAME), it
logs and saves no DVC experiment of its own, and what it stages in Git's index is set
back (spec/live.md, "dvclive")."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import dvclive  # noqa: F401 - the test extras install it (with dvc); never skipped

from cas.experiments import runs
from cas.experiments.request import RunRequest
from cas.workspace.project import init_project

TRAIN = """\
import json, os
from dvclive import Live
json.dump({k: v for k, v in os.environ.items() if k.startswith("DVC_")}, open(os.environ["ENV_OUT"], "w"))
with Live() as live:
    live.log_param("lr", 0.1)
    for i in range(3):
        live.log_metric("loss", 1 / (i + 1))
        live.next_step()
"""


def _git(root: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=root, check=True, capture_output=True, text=True).stdout


def _tree(root: Path, sub: str) -> set[str]:
    return {p.relative_to(root).as_posix() for p in (root / sub).rglob("*")}


def test_dvclive_logs_and_saves_no_dvc_experiment(tmp_path, monkeypatch) -> None:
    root = tmp_path / "proj"
    root.mkdir()
    monkeypatch.setenv("DVC_NO_ANALYTICS", "1")
    monkeypatch.setenv("ENV_OUT", str(tmp_path / "env.json"))
    _git(root, "init", "-q", "-b", "main")
    subprocess.run([sys.executable, "-m", "dvc", "init", "-q"], cwd=root, check=True)
    (root / "train.py").write_text(TRAIN)
    (root / "dvc.yaml").write_text(
        f"stages:\n  train:\n    cmd: {sys.executable} train.py\n    deps: [train.py]\n"
        "    metrics: [{dvclive/metrics.json: {cache: false}}]\n"
        "    plots: [{dvclive/plots/metrics: {cache: false}}]\n")
    _git(root, "add", "-A")
    _git(root, "commit", "-q", "-m", "a DVC project whose stage logs with dvclive")
    project = init_project(root)[0]
    dvc_before = _tree(root, ".dvc") - _tree(root, ".dvc/tmp")
    (root / "notes.md").write_text("the user's own staged work\n")
    _git(root, "add", "notes.md")
    index_before = _git(root, "ls-files", "-s")

    exp = runs.run(project, RunRequest(name="e1"))
    log = project.store.get(exp.record.logs).decode()
    assert exp.record.status == "success", log
    assert exp.record.metrics["dvclive/metrics.json"] == {"loss": 1 / 3, "step": 2}
    assert (root / "dvclive/plots/metrics/loss.tsv").read_text().count("\n") == 4
    # No DVC experiment of its own: no exp ref, no dvc.lock, nothing new in .dvc/ but
    # DVC's own scratch space.
    assert _git(root, "for-each-ref", "refs/exps") == ""
    assert not (root / "dvc.lock").exists()
    assert _tree(root, ".dvc") - _tree(root, ".dvc/tmp") == dvc_before
    told = json.loads((tmp_path / "env.json").read_text())
    assert told == {"DVC_NO_ANALYTICS": "1", "DVC_ROOT": str(root), "DVC_STAGE": "train",
                    "DVC_EXP_BASELINE_REV": exp.record.baseline, "DVC_EXP_NAME": "e1"}
    # dvclive `git add`s its dvc.yaml and untracked files for DVC to commit (DVC then
    # resets the index); tally leaves Git's index as it was, the user's staging included.
    assert _git(root, "ls-files", "-s") == index_before
    assert "set back: dvc.yaml, dvclive/params.yaml" in log
