"""spec/promote.md cannot drift: its worked example is rebuilt here and compared.

The page marks what to check with fenced blocks whose info string carries a
`spec:` word (the first word is only for display):

    ```text spec:files               path<TAB>content lines of the baseline / experiment
    ```text spec:ids                 `name = value` lines: the ids the example produces
    ```text spec:cat-file            `git cat-file -p <promote commit>`, exactly
    ```text spec:ls-tree             `git ls-tree -r <promote commit>`, exactly
    ```text spec:report              the promote report of the example, as JSON

The example is built by the library with every variable pinned (record times, host,
user, Git identity and dates), so each id on the page is reproducible; the Git ones
can be checked by hand with `git cat-file -p`.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from cas.objects import pointer
from cas.experiments import promote
from cas.objects import record
from cas.store import refs
from cas.workspace import tracking
from cas.workspace import snapshot as workspace
from cas.workspace.project import init_project

PAGE = Path(__file__).resolve().parents[2] / "spec" / "promote.md"
FENCE = re.compile(r"^```(\w+)([^\n]*)\n(.*?)^```\s*$", re.M | re.S)
IDENTITY = {"GIT_AUTHOR_NAME": "Ada Lovelace", "GIT_AUTHOR_EMAIL": "ada@example.com",
            "GIT_COMMITTER_NAME": "Ada Lovelace", "GIT_COMMITTER_EMAIL": "ada@example.com",
            "GIT_AUTHOR_DATE": "2024-01-02T03:04:05+00:00",
            "GIT_COMMITTER_DATE": "2024-01-02T03:04:05+00:00"}
CREATED = 1_704_164_645_000_000_000  # 2024-01-02T03:04:05Z in ns


def blocks() -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for m in FENCE.finditer(PAGE.read_text()):
        words = m.group(2).split()
        for w in words:
            if w.startswith("spec:"):
                out.setdefault(w[5:], []).append(m.group(3))
    return out


def parse_files(text: str) -> dict[str, str | None]:
    """`path<TAB>line` rows (repeated for each line; `path<TAB>(deleted)` deletes)."""
    files: dict[str, str | None] = {}
    for row in text.splitlines():
        path, _, line = row.partition("\t")
        if line == "(deleted)":
            files[path] = None
        else:
            files[path] = (files.get(path) or "") + line + "\n"
    return files


def git(root: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=root, check=True, capture_output=True).stdout.decode()


@pytest.fixture
def example(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, object]:
    for k, v in IDENTITY.items():
        monkeypatch.setenv(k, v)
    root = tmp_path / "demo"
    root.mkdir()
    git(root, "init", "-q", "-b", "main")
    git(root, "config", "commit.gpgsign", "false")
    project, _ = init_project(root)
    monkeypatch.chdir(root)
    base_files, exp_files = (parse_files(t) for t in blocks()["files"])
    for rel, text in base_files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text or "")
    tracking.add(project, ["data"])
    git(root, "add", "--", *[p for p in base_files if not p.startswith("data/")], "data.tally")
    git(root, "commit", "-q", "-m", "baseline")
    baseline = git(root, "rev-parse", "HEAD").strip()

    # The experiment's workspace, as the runner snapshots it: every file Git sees plus
    # the data, with the experiment's changes applied.
    ws = tmp_path / "ws"
    for rel in git(root, "ls-files").splitlines() + ["data/" + f for f in ("x.csv",)]:
        if not rel.startswith(".tally/"):
            (ws / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(root / rel, ws / rel)
    for rel, text in exp_files.items():
        if text is None:
            (ws / rel).unlink()
        else:
            (ws / rel).parent.mkdir(parents=True, exist_ok=True)
            (ws / rel).write_text(text)
    with project.store.writer() as w:
        data = workspace.snapshot(ws / "data", statcache=project.statcache, writer=w)
    ptr = pointer.Pointer("data", data.oid, True, data.size, data.files)
    (ws / "data.tally").write_bytes(ptr.encode())
    with project.store.writer() as w:
        tree_oid = workspace.snapshot(ws, statcache=project.statcache, writer=w).oid
        model = workspace.snapshot(ws / "model.bin", statcache=project.statcache, writer=w).oid
        rec = record.Record(name="lr-small", baseline=baseline, created=CREATED, status="success",
                            started=CREATED, finished=CREATED + 1_500_000_000, workspace=tree_oid,
                            params={"params.yaml": {"lr": 0.01}},
                            metrics={"metrics.json": {"acc": 0.93}},
                            outs={"model.bin": (model, False)}, exit_code=0)
        rid = record.put(w, rec)
    refs.update(project, baseline, "lr-small", rid, None)
    rep = promote.promote(project, names=["lr-small"])
    [r] = rep.results
    return {"root": root, "baseline": baseline, "record": rid, "workspace": tree_oid,
            "data": data.oid, "result": r}


def test_the_page_has_the_required_sections() -> None:
    text = PAGE.read_text()
    for section in ("Terminology", "Synopsis", "Layout", "Invalid values", "Worked example", "Changes"):
        assert f"\n## {section}" in text, section


def test_worked_example_ids(example: dict[str, object]) -> None:
    r = example["result"]
    ids = dict(line.split(" = ", 1) for line in blocks()["ids"][0].splitlines() if " = " in line)
    got = {"baseline commit": example["baseline"], "data tree": example["data"],
           "workspace tree": example["workspace"], "record": example["record"],
           "branch": r.branch, "promote commit": r.commit}
    assert got == ids


def test_worked_example_commit_object(example: dict[str, object]) -> None:
    root, r = example["root"], example["result"]
    assert git(root, "cat-file", "-p", r.commit) == blocks()["cat-file"][0]
    assert git(root, "ls-tree", "-r", r.commit) == blocks()["ls-tree"][0]
    # The Tally-* lines are real Git trailers, as the page says.
    got = git(root, "log", "-1", "--format=%(trailers:key=Tally-Record,valueonly)", r.commit)
    assert got.strip() == example["record"]


def test_worked_example_report(example: dict[str, object]) -> None:
    assert example["result"].to_json() == json.loads(blocks()["report"][0])
