"""SIGKILL `add` at every step of its write protocol: the store never holds a damaged
object, the pointer is the old one or the new one (whole), nothing torn is reported
up to date, and a rerun completes.

Each crash is deterministic. The add runs in a child process, in its own session (so
the kill takes its forked hashing children too, as a terminal's kill would), with
TALLY_FAILPOINT naming one step (cas/core/failpoints.py): a Writer's temp file
written, its batch made durable, an object linked, the batch's directories made
durable (in the add process and in each hashing child), then each step of the
pointer's atomic replace. The child must die there: a failpoint that is never reached
fails the test.

The add is a re-add: the pointer names v1 and the data is v2, so "the old pointer"
is a real pointer to check, not just an absent file.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from support import helpers
from cas.gc import fsck
from cas.objects import pointer, tree
from cas.workspace import snapshot as workspace
from cas.workspace import tracking
from cas.workspace.project import init_project, open_project

# The child takes the thresholds the tests run with (helpers.TINY): forked hashing
# children and streamed big files even for this small data, and a Writer batch every
# BATCH_LIMIT (16) objects, so each process publishes several batches.
CHILD = r"""
import importlib, json, sys
from pathlib import Path
from cas.workspace import project, tracking
for module, name, value in json.loads(sys.argv[3]):
    setattr(importlib.import_module(f"cas.{module}"), name, value)
tracking.add(project.open_project(Path(sys.argv[1])), [sys.argv[2]])
"""

N_SMALL = 120  # v1's small files; v2 changes half of them and adds 40: ~100 new blobs
STORE_STEPS = ("store:temp-written", "store:temp-synced", "store:linked", "store:dirs-synced")
POINTER_STEPS = ("pointer:temp-written", "pointer:temp-synced", "pointer:renamed", "pointer:dir-synced")
# Where the default run kills: each step's first hit, and objects linked and written
# in a later batch; the slow tier kills at every hit of every store step.
DEFAULT_POINTS = [f"{s}:1" for s in STORE_STEPS] + ["store:temp-written:20", "store:linked:20"] + \
    list(POINTER_STEPS)


def write_v1(data: Path) -> None:
    helpers.many_small_files(data / "small", N_SMALL, per_dir=40)
    (data / "big.bin").write_bytes(os.urandom(3 * helpers.MMAP_THRESHOLD + 5))
    (data / "gone.txt").write_text("deleted in v2\n")


def write_v2(data: Path) -> None:
    for i, f in enumerate(sorted((data / "small").rglob("*.dat"))):
        if i % 2:
            f.write_bytes(f.read_bytes()[::-1] + b"v2")
    helpers.write_tree(data / "small" / "new", {f"n{i:03d}.txt": f"new {i}\n" * 40 for i in range(40)})
    (data / "big.bin").write_bytes(os.urandom(3 * helpers.MMAP_THRESHOLD + 9))
    (data / "gone.txt").unlink()


class Template:
    """A project whose pointer names v1 while its data is v2, and v2's id."""

    def __init__(self, root: Path) -> None:
        root.mkdir(parents=True)
        helpers.git(root, "init", "-q", "-b", "main")
        helpers.git(root, "commit", "-q", "--allow-empty", "-m", "initial")
        p, _ = init_project(root)
        write_v1(root / "data")
        self.v1 = tracking.add(p, [str(root / "data")])[0].pointer.oid
        write_v2(root / "data")
        p.statcache.close()
        self.root = root
        ref = self.copy(root.parent / "reference")
        r = run_add(ref, None)
        assert r.returncode == 0, r.stderr
        self.v2 = pointer.read(ref, "data").oid
        assert self.v2 != self.v1
        shutil.rmtree(ref)

    def copy(self, dest: Path) -> Path:
        """A fresh copy of the template: same data (mtimes kept), same store."""
        shutil.copytree(self.root, dest, symlinks=True)
        return dest


def run_add(root: Path, point: str | None) -> subprocess.CompletedProcess:
    env = {**os.environ, "TALLY_FAILPOINT": point or ""}
    return subprocess.run([sys.executable, "-c", CHILD, str(root), str(root / "data"),
                           json.dumps(helpers.TINY)],
                          cwd=root, env=env, capture_output=True, text=True, timeout=120,
                          start_new_session=True)


def check_after_crash(root: Path, t: Template, point: str) -> str:
    """The invariants that must hold at every instant; returns which pointer survived."""
    proj = open_project(root)
    try:
        report = fsck.fsck(proj)  # every object hashes to its name; every root is whole
        assert report.ok, (point, [p.to_json() for p in report.problems])
        for dirpath, _, names in os.walk(proj.store.objects):
            for name in names:
                assert os.stat(os.path.join(dirpath, name)).st_mode & 0o777 == 0o444, name
        ptr = pointer.read(root, "data")  # whole: it parses
        assert ptr.oid in (t.v1, t.v2), point
        load = lambda oid: tree.decode(proj.store.get(oid))  # noqa: E731
        for rel, e in tree.walk(ptr.oid, load):
            assert proj.store.has(e.oid), f"{point}: the pointer names {rel}, which is not stored"
        # Nothing torn is reported up to date: whatever the killed add recorded in the
        # stat cache, the data still hashes to v2, and status says "unchanged" only for
        # a pointer that names v2.
        snap = workspace.snapshot(root / "data", statcache=proj.statcache)
        assert snap.oid == t.v2, point
        [st] = tracking.status(proj)
        assert st.state == ("unchanged" if ptr.oid == t.v2 else "modified"), (point, st.to_json())
        return "new" if ptr.oid == t.v2 else "old"
    finally:
        proj.statcache.close()


def rerun_completes(root: Path, t: Template) -> None:
    proj = open_project(root)
    try:
        [added] = tracking.add(proj, [str(root / "data")])
        assert added.pointer.oid == t.v2
        [st] = tracking.status(proj)
        assert st.state == "unchanged", st.to_json()
        assert fsck.fsck(proj).ok
    finally:
        proj.statcache.close()


def crash_at(tmp_path: Path, t: Template, point: str) -> tuple[str, str]:
    """Kill a copy's add at `point`; check it; rerun. Returns (pointer left, leftovers)."""
    root = t.copy(tmp_path / point.replace(":", "-"))
    r = run_add(root, point)
    assert r.returncode == -signal.SIGKILL, f"{point} was never reached: {r.returncode}\n{r.stderr[-2000:]}"
    left = check_after_crash(root, t, point)
    strays = sorted(n for n in os.listdir(root) if n.startswith(".data.tally.tmp-"))
    rerun_completes(root, t)
    shutil.rmtree(root)
    return left, ",".join(strays)


@pytest.fixture(scope="module")
def template(tmp_path_factory) -> Template:
    """Built once per module, before the per-test clean_env: isolated the same way."""
    base = tmp_path_factory.mktemp("crash")
    with pytest.MonkeyPatch.context() as mp:
        helpers.isolate_env(mp, home=tmp_path_factory.mktemp("home"), ceiling=base)
        return Template(base / "template")


@pytest.mark.parametrize("point", DEFAULT_POINTS)
def test_sigkill_at_each_step_of_add(template: Template, tmp_path: Path, point: str) -> None:
    left, strays = crash_at(tmp_path, template, point)
    # Until the rename the old pointer stands; from the rename on, the new one.
    assert left == ("new" if point in ("pointer:renamed", "pointer:dir-synced") else "old")
    # A pointer write killed before its rename leaves its temp file beside the pointer
    # (same directory, for the atomic rename); the rerun's write is not bothered by it.
    assert bool(strays) == (point in ("pointer:temp-written", "pointer:temp-synced"))


@helpers.slow
@pytest.mark.parametrize("step", STORE_STEPS)
def test_sigkill_at_every_hit_of_each_store_step(template: Template, tmp_path: Path, step: str) -> None:
    """Every hit of the step in turn (the N-th, per process), until an add gets
    through without reaching an N-th one."""
    n = 1
    while True:
        root = template.copy(tmp_path / f"{n}")
        r = run_add(root, f"{step}:{n}")
        if r.returncode == 0:
            break
        assert r.returncode == -signal.SIGKILL, r.stderr[-2000:]
        assert check_after_crash(root, template, f"{step}:{n}") == "old"
        rerun_completes(root, template)
        shutil.rmtree(root)
        n += 1
    assert n > (2 if "synced" in step else 20)  # later batches, and the default points, are real


def test_a_stale_gitignore_lock_does_not_block_add(project, monkeypatch) -> None:
    from cas.workspace import git
    monkeypatch.setattr(git, "GITIGNORE_LOCK_TIMEOUT_S", 0.3)
    data = project.root / "data.csv"
    data.write_text("a,b\n")
    (project.root / ".gitignore.lock").write_bytes(b"")  # as a killed writer leaves it
    tracking.add(project, [str(data)])
    assert "/data.csv" in (project.root / ".gitignore").read_text().splitlines()
