"""Shared fixtures: an isolated environment, tiny thresholds, a Git repo, a project.

Every test runs with HOME, Git's global and system config and Git's identity pointed
at throwaway values, and with no TALLY_* variable from the caller's shell except
TALLY_REFLINK_DIR (CI mounts an XFS image with reflink there). Thresholds that pick
the big-data code paths (mmap hashing, streamed copies, pool chunks, batch flushes)
are shrunk, so a few KiB of test data take the same paths as gigabytes would.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import settings

from support import helpers
from support.gclab import NS, Clock
from support.lab import Lab, sh

from cas.gc import collect as gc_mod
from cas.gc import inventory as gcinventory
from cas.workspace.project import init_project

# Read before any fixture scrubs the environment: these decide what is collected.
REFLINK_DIR = os.environ.get("TALLY_REFLINK_DIR") or None

# Hypothesis profiles, chosen by TALLY_HYPOTHESIS_PROFILE (.ci/run sets `ci`): `dev`
# draws new examples every run and remembers failures in .hypothesis/; `ci` draws the
# same examples on every run (derandomized, no example database), so a red CI run is
# reproducible and a green one is not luck. Neither has a deadline: the machine is
# shared, and no property here is about time. A test's own @settings (max_examples)
# still applies on top.
settings.register_profile("dev", deadline=None)
settings.register_profile("ci", deadline=None, derandomize=True, database=None, print_blob=True)
HYPOTHESIS_PROFILE = os.environ.get("TALLY_HYPOTHESIS_PROFILE", "dev")
settings.load_profile(HYPOTHESIS_PROFILE)


def pytest_report_header(config: pytest.Config) -> str:
    return (f"hypothesis profile: {HYPOTHESIS_PROFILE}"
            f"{' (derandomized)' if settings().derandomize else ''}; "
            f"slow tier: {'on' if helpers.SLOW else 'off (TALLY_SLOW=1 runs it)'}")


@pytest.fixture(autouse=True)
def clean_env(tmp_path: Path, tmp_path_factory: pytest.TempPathFactory,
              monkeypatch: pytest.MonkeyPatch) -> None:
    """Isolate the user's home, Git config and TALLY_* settings (borg's clean_env)."""
    home = tmp_path_factory.mktemp("home")  # outside tmp_path: tests own all of that
    helpers.isolate_env(monkeypatch, home=home, ceiling=tmp_path)
    # Per-process state that would carry one test's verdicts into the next: devices
    # that refused a clone, a failpoint armed from the caller's environment at import.
    from cas.core import failpoints, fsops
    fsops.forget_reflink_failures()
    failpoints.arm(None)


@pytest.fixture(autouse=True)
def tiny_thresholds(monkeypatch: pytest.MonkeyPatch) -> None:
    """Small data takes the big-data paths: mmap + threads, streaming, pools, batches.
    A knob renamed in cas/ makes every test error here (setattr raises), never pass
    silently with the real threshold."""
    import importlib
    for module, name, value in helpers.TINY:
        monkeypatch.setattr(importlib.import_module(f"cas.{module}"), name, value)


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A fresh Git work tree with one commit (a README), symlinks resolved."""
    root = tmp_path / "repo"
    root.mkdir()
    helpers.git(root, "init", "-q", "-b", "main")
    helpers.git(root, "config", "commit.gpgsign", "false")
    (root / "README.md").write_text("test repository\n")
    helpers.git(root, "add", "README.md")
    helpers.git(root, "commit", "-q", "-m", "initial")
    return root.resolve()


@pytest.fixture
def project(repo: Path):
    """`tally init` in `repo`: a Project with the default config."""
    from cas.workspace.project import init_project
    proj, created = init_project(repo)
    assert created
    return proj


@pytest.fixture
def reflink_dir() -> Path:
    """A fresh directory on a reflink-capable filesystem (TALLY_REFLINK_DIR), else skip."""
    if REFLINK_DIR is None:
        pytest.skip("reflink: set TALLY_REFLINK_DIR to a directory on XFS (reflink=1) or "
                    "Btrfs; .ci/run mounts one when it runs as root")
    from cas.core.fsops import can_reflink
    if not can_reflink(REFLINK_DIR):
        pytest.skip(f"reflink: TALLY_REFLINK_DIR={REFLINK_DIR} cannot clone files")
    d = Path(tempfile.mkdtemp(prefix="tally-test-", dir=REFLINK_DIR))
    try:
        yield d.resolve()
    finally:
        helpers.make_writable(d)
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def reflink_repo(reflink_dir: Path) -> Path:
    """Like `repo`, on the reflink-capable filesystem."""
    root = reflink_dir / "repo"
    root.mkdir()
    helpers.git(root, "init", "-q", "-b", "main")
    helpers.git(root, "commit", "-q", "--allow-empty", "-m", "initial")
    return root


@pytest.fixture
def failpoint():
    """Arm a failpoint in this process (cas/core/failpoints.py) for code run in-process
    whose forked children are to die there: `failpoint("forked:before-report")`.
    Disarmed again when the test ends."""
    from cas.core import failpoints
    yield failpoints.arm
    failpoints.arm(None)


# -- shared fixtures (a lab of experiments; gc's clock) ----------------------------------

@pytest.fixture
def lab(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Lab:
    for who in ("AUTHOR", "COMMITTER"):
        monkeypatch.setenv(f"GIT_{who}_NAME", "Tally Test")
        monkeypatch.setenv(f"GIT_{who}_EMAIL", "tally@example.com")
    root = tmp_path / "proj"
    root.mkdir()
    sh(root, "init", "-q", "-b", "main")
    sh(root, "config", "commit.gpgsign", "false")
    init_project(root)
    monkeypatch.chdir(root)
    lab = Lab(root)
    lab.write({"train.py": "print('v1')\n", "params.yaml": "train:\n  lr: 0.1\n  epochs: 10\n",
               "metrics.json": '{"acc": 0.5, "loss": 1.0}\n'})
    lab.commit("baseline")
    return lab


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    c = Clock()
    real_now, real_inv, real_restat = gc_mod.fs_now_ns, gcinventory.inventory, gcinventory.restat

    def shift(oid, o):
        if o is not None and oid in c.extra:
            o.newest_ns -= int(c.extra[oid] * NS)
        return o

    def inventory(store):
        inv = real_inv(store)
        for oid, o in inv.items():
            shift(oid, o)
        return inv

    monkeypatch.setattr(gc_mod, "fs_now_ns", lambda p: real_now(p) + int(c.offset_s * NS))
    monkeypatch.setattr(gcinventory, "inventory", inventory)
    monkeypatch.setattr(gcinventory, "restat", lambda store, oid, o: shift(oid, real_restat(store, oid, o)))
    return c
