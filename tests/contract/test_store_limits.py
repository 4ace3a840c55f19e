"""A full store and a read-only store, for real: a tiny tmpfs mounted as root.

ENOSPC must surface as StoreError (exit 6) naming the cause, publish nothing
half-written and leave no temp files; the store must still pass fsck and accept the
same add once space is freed. A read-only store must refuse writes with exit 6 and
still answer read-only commands (status, fsck). Skipped where mounting is impossible.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from cas.workspace import tracking
from cas.core.errors import StoreError
from cas.gc.fsck import fsck
from cas.workspace.project import init_project, open_project
from cli.main import run


def _mount_tmpfs(where: Path, size: str) -> bool:
    if os.geteuid() != 0:
        return False
    where.mkdir(parents=True, exist_ok=True)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
                       capture_output=True)
    return r.returncode == 0


@pytest.fixture
def small_fs(tmp_path: Path):
    mnt = tmp_path / "mnt"
    if not _mount_tmpfs(mnt, "3M"):
        pytest.skip("needs root and tmpfs mounts to simulate a full or read-only store")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def _git_project(root: Path):
    root.mkdir()
    subprocess.run(["git", "init", "-q", str(root)], check=True)
    project, _ = init_project(root)
    return project


def _tmp_files(project) -> list[str]:
    return [p.name for p in (project.store_dir / "tmp").iterdir()]


def test_full_store_is_a_clear_error_and_loses_nothing(small_fs: Path, monkeypatch, capsys):
    project = _git_project(small_fs / "proj")
    ok = small_fs / "proj" / "ok.bin"
    ok.write_bytes(os.urandom(200_000))
    tracking.add(project, [str(ok)])
    # Random bytes do not compress: the store needs the full 2 MiB, which it lacks
    # once the workspace copy is there too.
    big = small_fs / "proj" / "big.bin"
    big.write_bytes(os.urandom(1_800_000))
    with pytest.raises(StoreError) as info:
        tracking.add(project, [str(big)])
    assert "no space left" in info.value.message
    assert info.value.exit_code == 6
    assert not (small_fs / "proj" / "big.bin.tally").exists()  # no pointer to nothing
    assert _tmp_files(project) == []  # nothing half-written left behind
    assert fsck(project).ok

    monkeypatch.chdir(small_fs / "proj")
    assert run(["add", "big.bin"]) == 6
    assert "no space left" in capsys.readouterr().err

    ok.unlink()  # free space; the same add now completes
    big.write_bytes(big.read_bytes()[:600_000])
    tracking.add(open_project(small_fs / "proj"), [str(big)])
    assert fsck(project).ok


def test_read_only_store_refuses_writes_but_reads(small_fs: Path, monkeypatch, capsys):
    project = _git_project(small_fs / "proj")
    data = small_fs / "proj" / "data"
    data.mkdir()
    for i in range(20):
        (data / f"f{i}").write_bytes(os.urandom(1000))
    tracking.add(project, [str(data)])
    (small_fs / "proj" / "more.bin").write_bytes(os.urandom(5000))
    project.statcache.close()  # an open SQLite file would keep the mount busy
    subprocess.run(["mount", "-o", "remount,ro", str(small_fs)], check=True)

    monkeypatch.chdir(small_fs / "proj")
    assert run(["status", "--json"]) == 0
    assert '"unchanged"' in capsys.readouterr().out
    assert run(["fsck"]) == 0
    capsys.readouterr()
    code = run(["add", "more.bin"])
    err = capsys.readouterr().err
    assert code == 6, err
    assert "read-only" in err
