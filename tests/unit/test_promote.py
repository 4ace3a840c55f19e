"""cas/experiments/promote.py: experiments become Git branches without touching the user's Git state."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from cas.experiments import lookup
from cas.experiments import promote
from cas.workspace import tracking
from cas.core.errors import NotFound, UsageError
from support.lab import Exe, Lab, M, P, sh


@pytest.fixture
def data_lab(lab: Lab) -> Lab:
    """Tracked data (data/ by pointer), an ignored output, and a user mid-edit: one file
    staged, one modified, one untracked, so the Git state we must not touch is rich."""
    lab.write({"data/a.csv": "x\n1\n", ".gitignore": "/model.bin\n", "README.md": "readme\n",
               "old.txt": "to be deleted\n"})
    tracking.add(lab.project, ["data"])
    lab.commit("data")
    return lab


def git_state(root: Path) -> dict[str, object]:
    """Everything promote must leave alone: HEAD, index bytes, status, work tree bytes."""
    files = {}
    for d, dirs, names in os.walk(root):
        dirs[:] = [x for x in dirs if x not in (".git", ".tally")]
        for n in names:
            p = Path(d, n)
            files[p.relative_to(root).as_posix()] = hashlib.sha256(p.read_bytes()).hexdigest()
    return {"head": sh(root, "rev-parse", "HEAD"), "symref": sh(root, "symbolic-ref", "HEAD"),
            "index": hashlib.sha256((root / ".git" / "index").read_bytes()).hexdigest(),
            "status": sh(root, "status", "--porcelain", "--untracked-files=all"),
            "files": files}


def tree_of(root: Path, rev: str) -> dict[str, str]:
    """path -> content at `rev`."""
    out = {}
    for line in sh(root, "ls-tree", "-r", "--name-only", rev).splitlines():
        out[line] = sh(root, "show", f"{rev}:{line}")
    return out


def user_mid_edit(lab: Lab) -> None:
    lab.write({"README.md": "staged edit\n"})
    sh(lab.root, "add", "README.md")
    lab.write({"train.py": "print('unsaved')\n", "notes.txt": "untracked\n"})


def test_promote_one_branch_with_the_changed_files_only(data_lab: Lab) -> None:
    lab = data_lab
    base = lab.head()
    lab.exp("e1", params=P(0.02), metrics=M(0.9),
            changes={"params.yaml": "train:\n  lr: 0.02\n", "train.py": Exe(b"print('v2')\n"),
                     "old.txt": None, "src/new.py": "new\n", "data/a.csv": "x\n9\n",
                     "data.tally": "# changed pointer text stands in for a re-added dir\n"},
            outs={"model.bin": b"\x00" * 1000})
    user_mid_edit(lab)
    before = git_state(lab.root)
    rep = promote.promote(lab.project, names=["e1"])
    assert git_state(lab.root) == before  # HEAD, index, status and files untouched
    [r] = rep.results
    assert r.status == "created" and r.branch == "exp/e1" and rep.exit_code == 0
    assert sh(lab.root, "rev-parse", "refs/heads/exp/e1").strip() == r.commit
    assert sh(lab.root, "rev-parse", f"{r.commit}^").strip() == base  # on top of its baseline
    files = tree_of(lab.root, r.commit)
    assert files["params.yaml"] == "train:\n  lr: 0.02\n"
    assert files["train.py"] == "print('v2')\n"
    assert files["src/new.py"] == "new\n"
    assert files["data.tally"].startswith("# changed pointer")
    assert "old.txt" not in files
    assert not any(p.startswith("data/") for p in files) and "model.bin" not in files  # data stays out
    assert files["README.md"] == "readme\n"  # the user's staged edit is not the experiment's
    assert sorted(r.changed) == ["data.tally", "params.yaml", "src/new.py", "train.py"]
    assert r.deleted == ["old.txt"]
    mode = sh(lab.root, "ls-tree", r.commit, "train.py").split()[0]
    assert mode == "100755"
    msg = sh(lab.root, "log", "-1", "--format=%B", r.commit)
    assert msg.startswith("tally: experiment e1\n")
    assert f"Tally-Record: {r.record}" in msg and "  params.yaml:train.lr: 0.02" in msg


def test_an_existing_branch_is_a_conflict_for_that_experiment_only(data_lab: Lab) -> None:
    lab = data_lab
    lab.exp("e1", changes={"params.yaml": "a\n"})
    lab.exp("e2", changes={"params.yaml": "b\n"})
    sh(lab.root, "branch", "exp/e1")
    taken = sh(lab.root, "rev-parse", "exp/e1")
    before = git_state(lab.root)
    rep = promote.promote(lab.project, names=["e1", "e2"])
    by = {r.name: r for r in rep.results}
    assert by["e1"].status == "exists" and "already exists" in by["e1"].error
    assert by["e2"].status == "created"
    assert rep.exit_code == 4
    assert sh(lab.root, "rev-parse", "exp/e1") == taken  # not moved
    assert git_state(lab.root) == before


def test_bulk_by_filter_and_top_n(data_lab: Lab) -> None:
    lab = data_lab
    for i, acc in enumerate((0.5, 0.9, 0.7, 0.8)):
        lab.exp(f"r{i}", metrics=M(acc), params=P(0.1 * (i + 1)), changes={"params.yaml": f"lr: {i}\n"})
    lab.exp("nometric", changes={"params.yaml": "x\n"})
    rep = promote.promote(lab.project, filter="metrics.acc >= 0.8", branch_prefix="good-")
    assert sorted(r.branch for r in rep.results) == ["good-r1", "good-r3"]
    rep = promote.promote(lab.project, top=2, sort_by="acc:desc", branch_prefix="top/")
    assert [r.branch for r in rep.results] == ["top/r1", "top/r3"]
    rep = promote.promote(lab.project, top=10, sort_by="acc:asc", filter="params.train.lr < 0.35",
                          branch_prefix="low/")
    assert [r.name for r in rep.results] == ["r0", "r2", "r1"]  # no metric: never "top"
    branches = sh(lab.root, "branch", "--format=%(refname:short)").split()
    assert {"good-r1", "good-r3", "top/r1", "top/r3", "low/r0", "low/r1", "low/r2"} <= set(branches)
    assert tree_of(lab.root, "top/r1")["params.yaml"] == "lr: 1\n"


def test_dry_run_creates_nothing(data_lab: Lab) -> None:
    lab = data_lab
    lab.exp("e1", changes={"params.yaml": "a\n"})
    rep = promote.promote(lab.project, names=["e1"], dry_run=True)
    assert rep.results[0].status == "would-create" and rep.results[0].changed == ["params.yaml"]
    assert "exp/e1" not in sh(lab.root, "branch")


def test_promote_refusals(data_lab: Lab) -> None:
    lab = data_lab
    lab.exp("e1", changes={"params.yaml": "a\n"})
    lab.exp("nows", workspace_tree=False)
    with pytest.raises(UsageError, match="nothing selected"):
        promote.promote(lab.project)
    with pytest.raises(UsageError, match="not both"):
        promote.promote(lab.project, names=["e1"], filter="acc > 1")
    with pytest.raises(UsageError, match="which end is best"):
        promote.promote(lab.project, top=1, sort_by="acc")
    with pytest.raises(UsageError, match="invalid branch prefix"):
        promote.promote(lab.project, names=["e1"], branch_prefix="bad prefix/")
    with pytest.raises(NotFound):
        promote.promote(lab.project, names=["e1", "nosuch"])
    assert "exp/e1" not in sh(lab.root, "branch")  # an unknown name stops everything first
    rep = promote.promote(lab.project, names=["nows"])
    assert rep.results[0].status == "failed" and "no workspace snapshot" in rep.results[0].error
    assert rep.exit_code == 3


def test_promote_an_experiment_of_another_baseline(data_lab: Lab) -> None:
    lab = data_lab
    first = lab.head()
    lab.exp("old", changes={"params.yaml": "old\n"})
    lab.write({"train.py": "print('v3')\n"})
    lab.commit("v3")
    rep = promote.promote(lab.project, names=["old"])
    c = rep.results[0].commit
    assert sh(lab.root, "rev-parse", f"{c}^").strip() == first
    assert tree_of(lab.root, c)["train.py"] == "print('v1')\n"
    assert lookup.find(lab.project, "old")[0] == first


def test_promote_never_commits_what_git_ignores_in_a_dvc_project(lab: Lab) -> None:
    """`dvc add`-ed data is ignored by Git (data/.gitignore) and named by its .dvc file.
    The run snapshots it as a dep; the promoted commit must hold what Git would commit
    from the experiment's workspace (tracked and not-ignored files, pointers, the lock),
    so checking the branch out and back leaves the user's data where it was."""
    from cas.experiments import runs
    from cas.experiments.request import RunRequest

    lab.write({"data/data.xml": "<rows>1 2 3</rows>\n", "data/.gitignore": "/data.xml\n",
               "data/data.xml.dvc": "outs:\n- md5: 0123\n  path: data.xml\n",
               ".gitignore": "/scratch/\n", "scratch/junk.txt": "ignored by a directory rule\n",
               "train.sh": "cat data/data.xml > model.txt && echo '{\"acc\": 1}' > m.json\n",
               "dvc.yaml": "stages:\n  train:\n    cmd: sh train.sh\n"
                           "    deps: [data/data.xml]\n    params: [train.lr]\n    outs: [model.txt]\n"
                           "    metrics: [{m.json: {cache: false}}]\n"})
    base = lab.commit("dvc project")
    assert "data/data.xml" not in sh(lab.root, "ls-files").splitlines()
    lab.write({"scratch/more.txt": "new and ignored\n", "notes.md": "new, not ignored\n"})
    exp = runs.run(lab.project, RunRequest(name="e1", set_params=("train.lr=0.2",)))
    assert exp.record.status == "success" and "data/data.xml" in exp.record.deps

    [r] = promote.promote(lab.project, names=["e1"]).results
    assert r.status == "created", r.error
    files = tree_of(lab.root, r.commit)
    assert sorted(set(files) - set(tree_of(lab.root, base))) == ["m.json", "notes.md", "tally.lock"]
    assert files["params.yaml"] == "train:\n  lr: 0.2\n  epochs: 10\n"
    assert "model.txt" in files[".gitignore"]  # the run ignores its output, as DVC does
    assert r.changed == [".gitignore", "m.json", "notes.md", "params.yaml", "tally.lock"]

    data = (lab.root / "data" / "data.xml").read_bytes()
    sh(lab.root, "stash", "-u")
    sh(lab.root, "checkout", "-q", "exp/e1")
    sh(lab.root, "checkout", "-q", "main")
    assert (lab.root / "data" / "data.xml").read_bytes() == data  # the user's data is still there
