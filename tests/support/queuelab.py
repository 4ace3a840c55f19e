"""Builders shared by tests (from the former tests/test_worker.py)."""

from __future__ import annotations

from __future__ import annotations
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from cas.queue import directory as queue
from cas.experiments.request import RunRequest
from cas.objects import record
from cas.store import refs
from cas.experiments import enqueue as sweep


PY = sys.executable


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout


def make_project(root: Path, *, train: str, outs=("out.txt",), persist=(),
                 extra: dict[str, str] | None = None):
    """A committed repo with one stage `python train.py` and params.yaml; tally init.

    `persist` outputs are kept across runs (as DVC's `persist: true`); a resume keeps
    the outputs it restored without it (spec/live.md, "Resuming").
    """
    from cas.workspace.project import init_project

    root.mkdir(parents=True)
    git(root, "init", "-q", "-b", "main")
    git(root, "config", "user.email", "t@example.com")
    git(root, "config", "user.name", "t")
    (root / "params.yaml").write_text("lr: 0.1\nepochs: 2\n")
    outs_yaml = "".join(f"      - {o}\n" for o in outs) + \
        "".join(f"      - {o}:\n          persist: true\n" for o in persist)
    (root / "dvc.yaml").write_text(f"stages:\n  train:\n    cmd: {PY} train.py\n"
                                   f"    deps: [train.py]\n    params: [lr, epochs]\n"
                                   f"    outs:\n{outs_yaml}")
    (root / "train.py").write_text(textwrap.dedent(train))
    for name, text in (extra or {}).items():
        (root / name).write_text(text)
    (root / ".gitignore").write_text("".join(f"/{o}\n" for o in (*outs, *persist)))
    git(root, "add", ".")
    git(root, "commit", "-qm", "init")
    proj, _ = init_project(root.resolve())
    return proj


TRAIN = """\
    import json, sys
    params = dict(line.split(": ") for line in open("params.yaml").read().splitlines())
    open("out.txt", "w").write(f"lr={params['lr']} epochs={params['epochs']}\\n")
    print("trained with", params)
    if params["lr"] == "0.666":
        print("diverged", file=sys.stderr)
        sys.exit(3)
    """


CKPT = """\
    import os
    from cas.live import Live
    params = dict(line.split(": ") for line in open("params.yaml").read().splitlines())
    live = Live()
    state = open("model.txt").read() if live.resumed else ""
    for step in range(live.step, int(params["epochs"])):
        state += f"epoch {step} lr {params['lr']}\\n"
        open("model.txt", "w").write(state)
        live.log_metric("loss", 1.0 / (step + 1))
        live.checkpoint("model.txt")
        live.next_step()
    open("out.txt", "w").write(state)
    """


def queue_runs(p, *specs: str, **kw):
    return queue.enqueue(p, sweep.plan(p, RunRequest(set_params=specs, **kw)))


def records(p) -> dict[str, record.Record]:
    return {n: record.load(p.store, o) for _, n, o in refs.list_refs(p)}


def wait_for(cond, timeout: float = 30.0, what: str = "condition"):
    deadline = time.time() + timeout
    while time.time() < deadline:
        got = cond()
        if got:
            return got
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def spawn_worker(p, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([PY, "-m", "cli.worker", "--root", str(p.root), *extra],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)

