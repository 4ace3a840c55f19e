"""`tally run` start-up: the run path must not import heavy modules it does not need.

Issue 4 asks for at most 0.1 s over the bare command, and on this path imports are
most of what tally adds (the Typer stack alone is ~60 ms; YAML, tomllib, tempfile,
concurrent.futures, ctypes a few ms each). Timing assertions would be flaky on a
shared machine, so this checks the cause instead: which modules a run loads. Each
name below was once imported by `tally run` and was made lazy; if a change brings one
back, make that import local to the code that needs it (with a comment saying why).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from support import helpers

# Runs the CLI in a fresh interpreter and writes what it imported (before json, which
# the probe itself needs) to the file named by argv[1].
PROBE = """
import sys
from cli import entry
code = entry.run(sys.argv[2:])
modules = sorted(sys.modules)
import json
with open(sys.argv[1], "w") as f:
    json.dump({"code": code, "modules": modules}, f)
"""

# Never on a run's path: the Typer stack, the pipeline loader with the YAML parser and
# cas.pipeline.params (a cached parse is reused; no params.yaml here), tomlkit (the
# config is read with tomllib), and what only errors, sweeps, gc, temp directories,
# thread pools, checkouts or `add` need; the Live writer (the runner reads cas.pipeline.livefiles),
# promote's Git plumbing (cas.workspace.gitobjects) and the -S sweep syntax.
NOT_FOR_A_RUN = ("typer", "click", "rich", "ruamel", "cas.pipeline.pipelinefile", "cas.pipeline.params",
                 "tomlkit", "socket", "tempfile", "concurrent", "decimal",
                 "difflib", "ctypes", "cas.workspace.checkout", "cas.workspace.tracking", "cas.gc.fsck", "cas.gc.collect",
                 "cas.gc.inventory", "cas.gc.deletion", "dataclasses", "inspect", "pickle",
                 "getpass", "shutil", "zstandard", "platform", "cas.live",
                 "cas.workspace.gitobjects", "cas.pipeline.sweepspec",
                 # The CLI's Typer app and its dependencies: a run is parsed by cli/parse.py
                 # from the same declaration (tests/cli/test_cli_agreement.py).
                 "cli.main", "argparse", "pydantic")
# A command-line stage without deps or outputs also skips the parsed-pipeline cache and
# the run-cache.
NOT_FOR_A_QUICK_RUN = NOT_FOR_A_RUN + ("cas.pipeline.runcache",)


def _modules_of_run(root: Path, *args: str) -> list[str]:
    out = root.parent / "imported.json"
    done = subprocess.run([sys.executable, "-c", PROBE, str(out), "run", *args], cwd=root,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    result = json.loads(out.read_text())
    assert result["code"] == 0, done.stderr
    return result["modules"]


def _loaded(modules: list[str], banned: tuple[str, ...]) -> list[str]:
    return sorted(m for m in modules for b in banned if m == b or m.startswith(b + "."))


def test_a_quick_run_imports_nothing_heavy(project) -> None:
    modules = _modules_of_run(project.root, "-q", "--", "true")
    assert "cas.experiments.runs" in modules  # the probe did run the experiment
    assert _loaded(modules, NOT_FOR_A_QUICK_RUN) == []


@pytest.mark.parametrize("pipeline", ["stages:\n  s:\n    cmd: \"true\"\n"])
def test_a_pipeline_run_imports_nothing_heavy(project, pipeline: str) -> None:
    (project.root / "dvc.yaml").write_text(pipeline)
    helpers.settle(project.statcache, [project.root / "dvc.yaml"])  # cacheable (racy rule)
    _modules_of_run(project.root, "-q")  # runs the stage, caches the parse
    modules = _modules_of_run(project.root, "-q")  # the stage is skipped
    assert "cas.pipeline.runner" in modules
    assert _loaded(modules, NOT_FOR_A_RUN) == []


def test_a_run_with_a_param_override_imports_no_yaml_library(project) -> None:
    """The bench's `tally run -S lr=...` on a flat params.yaml: the edit, the read, the
    cached parse and a `key: value` YAML metrics file need neither ruamel.yaml nor the
    pipeline loader."""
    (project.root / "dvc.yaml").write_text(
        "stages:\n  train:\n    cmd: \"echo $RANDOM > model.txt; echo 'acc: 0.5' > m.yaml\"\n"
        "    params: [lr, epochs]\n    outs: [model.txt]\n    metrics: [{m.yaml: {cache: false}}]\n")
    (project.root / "params.yaml").write_text("lr: 0.01\nepochs: 3\n")
    helpers.settle(project.statcache, [project.root / "dvc.yaml"])  # cacheable (racy rule)
    _modules_of_run(project.root, "-q", "-S", "lr=0.1")  # caches the parse
    modules = _modules_of_run(project.root, "-q", "-S", "lr=0.2")
    assert (project.root / "params.yaml").read_text() == "lr: 0.2\nepochs: 3\n"
    assert _loaded(modules, tuple(m for m in NOT_FOR_A_RUN if m != "cas.pipeline.params")) == []
