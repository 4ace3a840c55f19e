"""A project whose experiments have plots: for the plots and UI tests.

`make(root)` writes a Git repository with a dvc.yaml stage (`python train.py`) that
logs a loss and an accuracy per step with cas.live (dvclive's files), writes
a confusion-matrix JSON and an ROC CSV declared as stage plots, and a top-level
plot; then `run(root, name, lr)` records a real experiment with `tally run`.
The commands get their environment explicitly, so module-scoped fixtures (outside
the per-test clean_env) are isolated too.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

PY = sys.executable
TALLY = [PY, "-m", "cli"]

TRAIN = """\
import json, os, sys, time
from cas.live import Live

params = dict(line.split(": ") for line in open("params.yaml").read().splitlines())
lr, epochs = float(params["lr"]), int(params["epochs"])
pause = float(os.environ.get("TRAIN_PAUSE", "0"))
with Live() as live:
    for step in range(epochs):
        live.log_metric("loss", round(1.0 / (step + 1) + lr, 6))
        live.log_metric("acc", round(min(1.0, 0.5 + step * lr), 6))
        live.next_step()
        time.sleep(pause)
pairs = [("cat", "cat"), ("cat", "dog"), ("dog", "dog"), ("bird", "bird"), ("bird", "cat" if lr > 0.15 else "bird")]
json.dump([{"actual": a, "predicted": p} for a, p in pairs], open("classes.json", "w"))
open("roc.csv", "w").write(f"fpr,tpr\\n0,0\\n0.1,{0.5 + lr}\\n1,1\\n")
json.dump({"acc": round(0.5 + lr, 6), "loss": round(1 - lr, 6)}, open("metrics.json", "w"))
print("trained with lr", lr)
"""

DVC_YAML = """\
stages:
  train:
    cmd: {py} train.py
    deps: [train.py]
    params: [lr, epochs]
    outs: [tally-live]
    metrics: [metrics.json]
    plots:
      - classes.json:
          template: confusion
          x: actual
          y: predicted
      - roc.csv:
          template: simple
          x: fpr
          y: tpr
plots:
  - ROC:
      template: scatter
      x: fpr
      y:
        roc.csv: tpr
"""


def env(home: Path) -> dict[str, str]:
    e = {k: v for k, v in os.environ.items() if not k.startswith(("TALLY_", "GIT_"))}
    empty = home / ".gitconfig-empty"
    home.mkdir(parents=True, exist_ok=True)
    empty.touch()
    e.update(HOME=str(home), GIT_CONFIG_GLOBAL=str(empty), GIT_CONFIG_NOSYSTEM="1",
             GIT_AUTHOR_NAME="Tally Test", GIT_AUTHOR_EMAIL="tally@example.com",
             GIT_COMMITTER_NAME="Tally Test", GIT_COMMITTER_EMAIL="tally@example.com")
    return e


def sh(root: Path, e: dict[str, str], *args: str, timeout: float = 120) -> str:
    res = subprocess.run(list(args), cwd=root, env=e, capture_output=True, text=True, timeout=timeout)
    if res.returncode != 0:
        raise AssertionError(f"{args} failed ({res.returncode}):\n{res.stdout}\n{res.stderr}")
    return res.stdout


def make(root: Path, e: dict[str, str], *, epochs: int = 5) -> Path:
    """The committed project at `root` (tally initialised), no experiment yet."""
    root.mkdir(parents=True)
    (root / "train.py").write_text(TRAIN)
    (root / "params.yaml").write_text(f"lr: 0.1\nepochs: {epochs}\n")
    (root / "dvc.yaml").write_text(DVC_YAML.format(py=PY))
    (root / ".gitignore").write_text("/tally-live\n/metrics.json\n/classes.json\n/roc.csv\n")
    sh(root, e, "git", "init", "-q", "-b", "main")
    sh(root, e, "git", "add", "-A")
    sh(root, e, "git", "commit", "-qm", "project with plots")
    sh(root, e, *TALLY, "init")
    return root


def run(root: Path, e: dict[str, str], name: str, lr: float) -> None:
    """Record experiment `name` with `-S lr=<lr>` (a real `tally run`)."""
    sh(root, e, *TALLY, "run", "-q", "-n", name, "-S", f"lr={lr}")


def dedent(text: str) -> str:
    return textwrap.dedent(text)
