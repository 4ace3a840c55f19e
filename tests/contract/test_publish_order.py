"""A run's publish: objects, then tally.lock and the ref, sharing their barriers.

spec/experiments.md "Write ordering": the new tally.lock and the ref are fsynced as
temp files in the objects' barrier, renamed only after every object is linked and its
shard directory fsynced, tally.lock first, and their directories fsynced together
after the renames; a failed compare-and-swap renames nothing and leaves no temp file.
"""

from __future__ import annotations

import os
import subprocess
import threading
from pathlib import Path

import pytest

from cas.experiments import runs as experiments
from cas.core import fsops
from cas.pipeline import tallylock as lockfile
from cas.store import refs
from cas.core.errors import Conflict
from cas.workspace.project import init_project
from cas.experiments.request import RunRequest

PIPELINE = """\
stages:
  train:
    cmd: cp params.yaml model.txt
    params: [lr]
    outs: [model.txt]
"""


@pytest.fixture
def proj(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    for who in ("AUTHOR", "COMMITTER"):
        monkeypatch.setenv(f"GIT_{who}_NAME", "Tally Test")
        monkeypatch.setenv(f"GIT_{who}_EMAIL", "tally@example.com")
    root = tmp_path / "repo"
    root.mkdir()
    (root / "dvc.yaml").write_text(PIPELINE)
    (root / "params.yaml").write_text("lr: 0.1\n")
    for args in (["init", "-q", "-b", "main"], ["add", "-A"], ["commit", "-q", "-m", "init"]):
        subprocess.run(["git", *args], cwd=root, check=True, capture_output=True)
    project = init_project(root)[0]
    experiments.run(project, RunRequest(name="base"))  # the baseline's tally.lock
    return project


def _temps(project) -> list[str]:
    """Temp files a publish could leave: beside tally.lock and in the refs directories."""
    found = [p.name for p in project.root.iterdir() if ".tmp-" in p.name]
    for d, _, names in os.walk(project.store_dir / "refs"):
        found += [n for n in names if ".tmp-" in n]
    return found


def test_the_ref_and_tally_lock_are_renamed_after_every_object_is_durable(
        proj, monkeypatch: pytest.MonkeyPatch) -> None:
    events: list[tuple[str, str]] = []
    lock = threading.Lock()

    def log(kind: str, path) -> None:
        with lock:
            events.append((kind, os.fspath(path)))

    real_link, real_replace = os.link, os.replace
    real_fsync_file, real_fsync_dir = fsops.fsync_file, fsops.fsync_dir
    monkeypatch.setattr(os, "link", lambda a, b, **kw: (real_link(a, b, **kw), log("link", b))[0])
    monkeypatch.setattr(os, "replace", lambda a, b, **kw: (real_replace(a, b, **kw), log("rename", b))[0])
    monkeypatch.setattr(fsops, "fsync_file", lambda p: (real_fsync_file(p), log("fsync", p))[0])
    monkeypatch.setattr(fsops, "fsync_dir", lambda p: (real_fsync_dir(p), log("fsyncdir", p))[0])

    before = (proj.root / lockfile.LOCK_FILE).read_text()
    exp = experiments.run(proj, RunRequest(set_params=("lr=0.2",), name="second"))
    assert (proj.root / lockfile.LOCK_FILE).read_text() != before
    lock_path = os.fspath(proj.root / lockfile.LOCK_FILE)
    ref_path = os.fspath(refs.ref_path(proj, exp.record.baseline, "second"))
    objects = os.fspath(proj.store.objects)

    i_lock = events.index(("rename", lock_path))
    i_ref = events.index(("rename", ref_path))
    assert i_lock < i_ref  # tally.lock first, then the ref
    links = [i for i, (k, p) in enumerate(events) if k == "link" and p.startswith(objects)]
    shard_syncs = [i for i, (k, p) in enumerate(events) if k == "fsyncdir" and p.startswith(objects)]
    assert links and shard_syncs
    assert max(links + shard_syncs) < i_lock  # every object linked and its name durable
    # The two temp files were fsynced before any rename, in the objects' barrier (the
    # last one before the first object link).
    temp_syncs = [i for i, (k, p) in enumerate(events) if k == "fsync"
                  and os.path.basename(p).startswith((".tally.lock.tmp-", ".second.tmp-"))]
    assert len(temp_syncs) == 2 and max(temp_syncs) < min(links)
    # Both directories fsynced after both renames.
    dir_syncs = {p for k, p in events[i_ref:] if k == "fsyncdir"}
    assert {os.path.dirname(lock_path), os.path.dirname(ref_path)} <= dir_syncs
    assert _temps(proj) == []


def test_a_taken_generated_name_is_retried_and_tally_lock_written_once(
        proj, monkeypatch: pytest.MonkeyPatch) -> None:
    real_commit = refs.commit
    taken: list[str] = []

    def racing_commit(project, baseline, name, staged, old, **kw):
        if not taken:  # another run takes the first candidate just before us
            taken.append(name)
            refs.update(project, baseline, name, "0" * 64, None)
        return real_commit(project, baseline, name, staged, old, **kw)

    monkeypatch.setattr(refs, "commit", racing_commit)
    renames: list[str] = []
    real_replace = os.replace
    monkeypatch.setattr(os, "replace", lambda a, b, **kw: (real_replace(a, b, **kw), renames.append(os.fspath(b)))[0])
    exp = experiments.run(proj, RunRequest(set_params=("lr=0.3",)))
    assert exp.name != taken[0] and refs.read(proj, exp.record.baseline, exp.name) == exp.oid
    assert renames.count(os.fspath(proj.root / lockfile.LOCK_FILE)) == 1
    assert "lr: 0.3" in (proj.root / "model.txt").read_text()
    assert _temps(proj) == []


def test_a_name_taken_at_publish_renames_nothing(proj, monkeypatch: pytest.MonkeyPatch) -> None:
    real_commit = refs.commit

    def racing_commit(project, baseline, name, staged, old, **kw):
        refs.update(project, baseline, name, "0" * 64, None)  # taken just before us
        return real_commit(project, baseline, name, staged, old, **kw)

    monkeypatch.setattr(refs, "commit", racing_commit)
    before = (proj.root / lockfile.LOCK_FILE).read_text()
    with pytest.raises(Conflict):
        experiments.run(proj, RunRequest(set_params=("lr=0.4",), name="late"))
    assert (proj.root / lockfile.LOCK_FILE).read_text() == before  # no record, no lock change
    assert refs.read(proj, refs.list_refs(proj)[0][0], "late") == "0" * 64
    assert _temps(proj) == []
