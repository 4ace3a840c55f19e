"""SIGKILL `checkout` and `restore` at every step of how they write files (issue 13).

A checkout (and a restore) builds each file under a temp name beside it and renames it
over the final name (spec/checkout.md, "Rules for a checkout" 5). Killed at either
step, deterministically (cas/core/failpoints.py: `checkout:temp-written`,
`checkout:renamed`, `restore:temp-written`, `restore:renamed`, at the first and at a
later file): the store passes fsck; every file is whole, the old version or the new;
`status` never calls a torn or old file up to date; and after the next command no temp
file is left in the workspace and the data is exactly the new version.

The command runs in a child in its own session, so the kill takes it whole.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from cas.gc import fsck
from cas.objects import pointer
from cas.store import config
from cas.workspace import tracking
from cas.workspace.project import init_project, open_project
from support import helpers

N = 30  # files: enough for "a later file" to be a real middle of the checkout

CHECKOUT = r"""
import sys
from pathlib import Path
from cas.workspace import project, tracking
tracking.checkout(project.open_project(Path(sys.argv[1])), force=True)
"""

RESTORE = r"""
import sys
from pathlib import Path
from cas.experiments import restore
from cas.workspace import project
restore.restore(project.open_project(Path(sys.argv[1])), "v2", force=True)
"""


def _v1(i: int) -> bytes:
    return f"version one of file {i}\n".encode() * 3


def _v2(i: int) -> bytes:
    return f"the second version, file {i}\n".encode() * 5


def _kill_run(script: str, root: Path, point: str) -> None:
    proc = subprocess.run([sys.executable, "-c", script, str(root)], cwd=root,
                          env={**os.environ, "TALLY_FAILPOINT": point}, capture_output=True,
                          start_new_session=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, (point, proc.returncode, proc.stderr[-2000:])


def _leftovers(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob(".tally-tmp-*"))


def _whole(path: Path, i: int) -> str:
    data = path.read_bytes()
    assert data in (_v1(i), _v2(i)), f"torn file {path}: {data[:60]!r}"
    return "v2" if data == _v2(i) else "v1"


@pytest.fixture(params=["copy", "hardlink,copy"])
def data_project(request, tmp_path: Path):
    """Data whose pointer names v2 while the workspace holds v1 (a checkout to do)."""
    root = tmp_path / "repo"
    root.mkdir()
    helpers.git(root, "init", "-q", "-b", "main")
    helpers.git(root, "commit", "-q", "--allow-empty", "-m", "initial")
    p, _ = init_project(root)
    config.set_value(p.store_dir / "config", "cache.type", request.param)
    p = open_project(root)
    helpers.write_tree(root / "data", {f"f{i:02d}.txt": _v2(i) for i in range(N)})
    (v2,) = tracking.add(p, [str(root / "data")])
    for f in (root / "data").iterdir():  # new files, never written through a hardlinked object
        f.unlink()
    helpers.write_tree(root / "data", {f"f{i:02d}.txt": _v1(i) for i in range(N)})
    tracking.add(p, [str(root / "data")])  # v1 stored too: the files in the way are recoverable
    pointer.write(root, v2.pointer)  # the pointer names v2 again, as after `git checkout`
    p.statcache.close()
    return root


@pytest.mark.parametrize("point", ["checkout:temp-written:1", "checkout:renamed:1",
                                   "checkout:temp-written:17", "checkout:renamed:17"])
def test_a_killed_checkout_leaves_whole_files_and_the_next_one_finishes(data_project: Path,
                                                                        point: str) -> None:
    root = data_project
    _kill_run(CHECKOUT, root, point)
    p = open_project(root)
    assert fsck.fsck(p).ok
    versions = {_whole(root / "data" / f"f{i:02d}.txt", i) for i in range(N)}
    assert "v1" in versions  # killed mid-way: not everything was replaced
    (st,) = tracking.status(p)
    assert st.state == "modified"  # an old file is never called up to date
    tracking.checkout(p)  # the next command
    assert _leftovers(root) == []
    assert {_whole(root / "data" / f"f{i:02d}.txt", i) for i in range(N)} == {"v2"}
    (st,) = tracking.status(p)
    assert st.state == "unchanged" and st.leftovers == []


@pytest.fixture
def experiment_project(tmp_path: Path):
    """An experiment `v2` recorded with v2 of the code files; the workspace back at v1."""
    from cas.experiments import runs

    root = tmp_path / "repo"
    root.mkdir()
    helpers.git(root, "init", "-q", "-b", "main")
    helpers.write_tree(root, {f"src/f{i:02d}.py": _v1(i) for i in range(N)})
    helpers.git(root, "add", ".")
    helpers.git(root, "commit", "-q", "-m", "v1")
    p, _ = init_project(root)
    helpers.write_tree(root, {f"src/f{i:02d}.py": _v2(i) for i in range(N)})
    runs.save(p, name="v2")
    helpers.git(root, "checkout", "-q", "--", "src")  # the workspace at v1 again
    p.statcache.close()
    return root


@pytest.mark.parametrize("point", ["restore:temp-written:1", "restore:renamed:1",
                                   "restore:temp-written:17", "restore:renamed:17"])
def test_a_killed_restore_leaves_whole_files_and_the_next_one_finishes(experiment_project: Path,
                                                                       point: str) -> None:
    from cas.experiments import restore

    root = experiment_project
    _kill_run(RESTORE, root, point)
    p = open_project(root)
    assert fsck.fsck(p).ok
    versions = {_whole(root / "src" / f"f{i:02d}.py", i) for i in range(N)}
    assert "v1" in versions
    done = restore.restore(p, "v2", force=True)  # the next command
    assert _leftovers(root) == []
    assert {_whole(root / "src" / f"f{i:02d}.py", i) for i in range(N)} == {"v2"}
    assert done.written  # what the killed one had not done
