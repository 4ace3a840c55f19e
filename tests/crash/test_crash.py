"""SIGKILL `add` at many moments: the store never holds a damaged object, a pointer
never names a missing one, and a rerun completes.

The add runs in a child process (its own session, so the kill takes its forked hashing
workers too, as a terminal's kill would). Its full duration is measured first; the kill
points are then spread from 0 to that duration, counted from the moment the child has
imported tally and is about to call add.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest

from support import helpers
from cas.objects import pointer
from cas.workspace import tracking
from cas.objects import tree
from cas.workspace.project import init_project, open_project

CHILD = r"""
import json, sys, time
from pathlib import Path
import importlib
from cas.workspace import project, tracking
for module, name, value in json.loads(sys.argv[3]):
    setattr(importlib.import_module(f"cas.{module}"), name, value)
p = project.open_project(Path(sys.argv[1]))
print("ready", flush=True)
t0 = time.monotonic()
tracking.add(p, [sys.argv[2]])
print("done", time.monotonic() - t0, flush=True)
"""

# The child's thresholds: forked workers and streamed big files even for small data,
# and a dozen batches per add (each flush is a syncfs, which costs the whole
# filesystem's dirty data on a busy machine: a batch per 16 files would be all syncs).
BATCH_LIMIT = 200
CHILD_TINY = [t for t in helpers.TINY if t[1] != "BATCH_LIMIT"] + [("store.writer", "BATCH_LIMIT", BATCH_LIMIT)]


def make_repo(root: Path, n_small: int, big_mib: int) -> Path:
    root.mkdir(parents=True)
    helpers.git(root, "init", "-q", "-b", "main")
    helpers.git(root, "commit", "-q", "--allow-empty", "-m", "initial")
    data = root / "data"
    helpers.many_small_files(data / "small", n_small)
    rnd_mib = max(1, big_mib // 2)
    (data / "big.bin").write_bytes(os.urandom(rnd_mib << 20))
    (data / "big.csv").write_bytes(b"".join(b"%d,%d\n" % (i, i * 7) for i in range((big_mib - rnd_mib) << 16)))
    init_project(root)
    return root


def run_add(root: Path, *, kill_after: float | None) -> tuple[float | None, int]:
    """Run add in a child; SIGKILL its session `kill_after` s after it is ready.

    Returns (seconds the add took if it finished, exit status).
    """
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(root), str(root / "data"), json.dumps(CHILD_TINY)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True, cwd=root)
    try:
        line = proc.stdout.readline()
        assert line == b"ready\n", (line, proc.stderr.read()[-2000:] if proc.poll() is not None else "")
        if kill_after is not None:
            time.sleep(kill_after)
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    took = None
    for ln in out.decode().splitlines():
        if ln.startswith("done "):
            took = float(ln.split()[1])
    if kill_after is None:
        assert proc.returncode == 0, err.decode()[-3000:]
    return took, proc.returncode


def reset(root: Path, trash: Path) -> None:
    """Back to an initialized project that has never stored the data.

    The old objects are renamed away, not deleted: one rename instead of thousands of
    unlinks (pytest removes its old temp dirs in later sessions).
    """
    tally = root / ".tally"
    trash.mkdir(parents=True, exist_ok=True)
    for sub in ("objects", "tmp"):
        os.rename(tally / sub, trash / f"{sub}-{len(os.listdir(trash))}")
        (tally / sub).mkdir()
    for name in ("statcache.db", "statcache.db-wal", "statcache.db-shm"):
        (tally / name).unlink(missing_ok=True)
    for name in ("data.tally", ".gitignore", ".gitignore.lock"):
        (root / name).unlink(missing_ok=True)


def check_consistent(root: Path, *, verify: bool = True) -> str:
    """The invariants that must hold at every instant; returns what state add reached."""
    proj = open_project(root)
    s = proj.store
    objects = list(s.iter_oids())
    for oid in objects if verify else ():
        s.verify(oid)  # every published object hashes to its name
    for dirpath, _, names in os.walk(s.objects):
        for name in names:
            assert os.stat(os.path.join(dirpath, name)).st_mode & 0o777 == 0o444, name
    ptr_path = root / "data.tally"
    if not ptr_path.exists():
        return f"no pointer, {len(objects)} objects"
    ptr = pointer.read(root, "data")  # written atomically: whole or absent
    load = lambda oid: tree.decode(s.get(oid))  # noqa: E731
    named = 0
    for _, t in tree.walk_trees(ptr.oid, load):
        named += 1
    for rel, e in tree.walk(ptr.oid, load):
        assert s.has(e.oid), f"the pointer names {rel} -> {e.oid}, which is not in the store"
        named += 1
    return f"pointer naming {named} objects"


def rerun_completes(root: Path, expected_oid: str) -> None:
    # A `.gitignore.lock` left by a kill inside .gitignore's write window is only a
    # temp file now (the lock is an flock): the rerun must complete with it there.
    proj = open_project(root)
    [added] = tracking.add(proj, [str(root / "data")])
    assert added.pointer.oid == expected_oid
    [st] = tracking.status(proj)
    assert st.state == "unchanged", st.to_json()
    assert "pointer naming" in check_consistent(root, verify=False)


def kill_schedule(took: float, points: int) -> list[float]:
    """`points` delays from 0 to `took`: two thirds spread evenly, the rest packed into
    the last tenth, where trees, the pointer and .gitignore are written."""
    even = max(2, points * 2 // 3)
    late = points - even
    return [took * k / (even - 1) for k in range(even)] + \
        [took * (0.9 + 0.1 * (j + 1) / (late + 1)) for j in range(late)]


def crash_points(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *, n_small: int,
                 big_mib: int, points: int) -> list[str]:
    from cas.store import writer
    monkeypatch.setattr(writer, "BATCH_LIMIT", BATCH_LIMIT)  # the reruns, as the child
    root = make_repo(tmp_path / "repo", n_small, big_mib)
    took, _ = run_add(root, kill_after=None)
    assert took is not None
    expected = pointer.read(root, "data").oid
    check_consistent(root)
    seen = []
    for delay in kill_schedule(took, points):
        reset(root, tmp_path / "trash")
        finished, _ = run_add(root, kill_after=delay)
        state = check_consistent(root)
        seen.append(f"{delay:.3f}s: {'finished' if finished else 'killed'}, {state}")
        rerun_completes(root, expected)
    # Where the kills land depends on the machine's load: a run that never caught add
    # mid-publish proved less, but the code did nothing wrong, so it only warns.
    if not any("killed" in s and "no pointer" in s and not s.endswith(" 0 objects") for s in seen):
        warnings.warn("no kill landed while objects were being published:\n" + "\n".join(seen))
    return seen


def test_sigkill_during_add_leaves_a_consistent_store(tmp_path: Path, monkeypatch) -> None:
    crash_points(tmp_path, monkeypatch, n_small=2000, big_mib=4, points=12)


@helpers.slow
def test_sigkill_during_add_many_points(tmp_path: Path, monkeypatch) -> None:
    seen = crash_points(tmp_path, monkeypatch, n_small=5_000, big_mib=16, points=40)
    assert len(seen) == 40


def test_a_stale_gitignore_lock_does_not_block_add(project, monkeypatch) -> None:
    from cas.workspace import git
    monkeypatch.setattr(git, "_GITIGNORE_LOCK_TIMEOUT_S", 0.3, raising=False)
    data = project.root / "data.csv"
    data.write_text("a,b\n")
    (project.root / ".gitignore.lock").write_bytes(b"")  # as a killed writer leaves it
    tracking.add(project, [str(data)])
