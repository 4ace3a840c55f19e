"""The store config (format version, validation, comment-keeping edits), project init
and discovery, locks, and the error classes' exit codes."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from pathlib import Path

import pytest

from support import helpers
from cas.store import config
from cas.core import errors
from cas.core.errors import LockBusy, NotFound, StoreError, UsageError
from cas.core.locks import Lock
from cas.workspace.project import find_root, init_project, open_project


def cfg(project) -> Path:
    return project.store_dir / "config"


# -- init and the format version ------------------------------------------------------------

def test_init_creates_the_store(project) -> None:
    d = project.store_dir
    for sub in ("objects", "tmp", "locks", "refs"):
        assert (d / sub).is_dir()
    c = config.load(cfg(project))
    assert c.format == config.FORMAT_VERSION == 1
    assert c.link_order == ("reflink", "copy")
    assert c.get("cache.compression") == "auto"
    assert "format = 1" in cfg(project).read_text()
    # Only the config (and the store's own .gitignore) would be committed.
    status = helpers.git(project.root, "status", "--porcelain", "--untracked-files=all")
    assert sorted(status.splitlines()) == ["?? .tally/.gitignore", "?? .tally/config"]


def test_init_twice_keeps_the_store(project) -> None:
    oid = project.store.put_bytes(b"kept")
    again, created = init_project(project.root)
    assert not created
    assert again.store.get(oid) == b"kept"


def test_init_from_a_subdirectory_uses_the_work_tree_top(repo: Path) -> None:
    sub = repo / "a" / "b"
    sub.mkdir(parents=True)
    proj, created = init_project(sub)
    assert created and proj.root == repo
    assert (repo / ".tally" / "config").is_file()
    assert open_project(sub).root == repo
    assert find_root(sub) == repo


def test_init_outside_git_says_git_init(tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    with pytest.raises(StoreError) as ei:
        init_project(plain)
    assert "git init" in ei.value.hint
    assert ei.value.exit_code == 6
    assert not (plain / ".tally").exists()


def test_open_outside_a_project_says_tally_init(repo: Path) -> None:
    with pytest.raises(StoreError) as ei:
        open_project(repo)
    assert "tally init" in ei.value.hint


@pytest.mark.parametrize("fmt", [2, 99])
def test_a_newer_store_is_refused(project, fmt: int) -> None:
    text = cfg(project).read_text().replace("format = 1", f"format = {fmt}")
    cfg(project).write_text(text)
    for call in (lambda: config.load(cfg(project)), lambda: open_project(project.root),
                 lambda: init_project(project.root)):
        with pytest.raises(StoreError) as ei:
            call()
        assert f"format {fmt}" in str(ei.value) and "upgrade tally" in ei.value.hint
    assert f"format = {fmt}" in cfg(project).read_text()  # and not rewritten


@pytest.mark.parametrize("text,message", [
    ("[cache]\ntype = 'copy'\n", "no valid core.format"),
    ("[core]\nformat = 'one'\n", "no valid core.format"),
    ("[core]\nformat = 0\n", "no valid core.format"),
    ("[core\nformat = 1\n", "not valid TOML"),
    ("\xff\xfe", "not valid TOML"),
])
def test_a_broken_config_is_a_store_error(project, text: str, message: str) -> None:
    cfg(project).write_bytes(text.encode("latin-1"))
    with pytest.raises(StoreError, match=message):
        config.load(cfg(project))


def test_a_missing_config(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="not a tally project"):
        config.load(tmp_path / ".tally" / "config")


# -- values -----------------------------------------------------------------------------------

@pytest.mark.parametrize("key,value,message", [
    ("cache.type", "teleport", "cache.type"),
    ("cache.type", "", "cache.type"),
    ("cache.compression", "gzip", "cache.compression"),
    ("cache.zstd_level", "20", "cache.zstd_level"),
    ("cache.zstd_level", "three", "cache.zstd_level"),
    ("cache.fsync", "sometimes", "cache.fsync"),
])
def test_a_bad_value_names_its_key(project, key: str, value: str, message: str) -> None:
    before = cfg(project).read_text()
    with pytest.raises(UsageError, match=message):
        config.set_value(cfg(project), key, value)
    assert cfg(project).read_text() == before
    section, name = key.split(".")
    cfg(project).write_text(f"[core]\nformat = 1\n[{section}]\n{name} = {value!r}\n")
    with pytest.raises(UsageError, match=message):
        config.load(cfg(project))


def test_set_keeps_comments_and_unknown_keys(project) -> None:
    text = cfg(project).read_text()
    text += "\n# my note about gc\n[gc]\ngrace = \"48h\"  # two days\n[future]\nknob = 3\n"
    cfg(project).write_text(text)
    config.set_value(cfg(project), "cache.type", "hardlink, copy")
    config.set_value(cfg(project), "cache.zstd_level", "7")
    config.set_value(cfg(project), "queue.workers", "4")
    out = cfg(project).read_text()
    assert "# my note about gc" in out and "# two days" in out and "[future]\nknob = 3" in out
    assert "# checkout link order" in out  # the comments init wrote
    c = config.load(cfg(project))
    assert c.link_order == ("hardlink", "copy")
    assert c.get("cache.zstd_level") == 7 and c.get("queue.workers") == 4
    assert c.get("gc.grace") == "48h"
    assert open_project(project.root).store.options.zstd_level == 7


def test_unset(project) -> None:
    config.set_value(cfg(project), "cache.compression", "zstd")
    assert config.load(cfg(project)).get("cache.compression") == "zstd"
    config.set_value(cfg(project), "cache.compression", None)
    assert config.load(cfg(project)).get("cache.compression") == "auto"  # the default
    with pytest.raises(NotFound):
        config.set_value(cfg(project), "cache.compression", None)


def test_unknown_keys(project) -> None:
    with pytest.raises(UsageError, match="unknown config key") as ei:
        config.set_value(cfg(project), "cache.colour", "blue")
    assert "cache.type" in ei.value.hint
    with pytest.raises(UsageError, match="unknown config key"):
        config.load(cfg(project)).get("nope.nothing")


def test_the_project_store_follows_the_config(project) -> None:
    config.set_value(cfg(project), "cache.compression", "none")
    config.set_value(cfg(project), "cache.fsync", "off")
    opts = open_project(project.root).store.options
    assert (opts.compression, opts.fsync) == ("none", "off")


# -- paths ------------------------------------------------------------------------------------

def test_relpath(project, tmp_path: Path) -> None:
    assert project.relpath(project.root / "a" / ".." / "b") == "b"
    assert project.relpath("x/y", cwd=project.root) == "x/y"
    assert project.relpath(project.root) == "."
    with pytest.raises(UsageError, match="outside the project"):
        project.relpath(tmp_path)
    with pytest.raises(UsageError, match="outside the project"):
        project.relpath("../x", cwd=project.root)
    for inside in (".tally/objects", ".git/config"):
        with pytest.raises(UsageError, match="does not track"):
            project.relpath(project.root / inside)


# -- locks ------------------------------------------------------------------------------------

def test_an_exclusive_lock_names_its_holder(project) -> None:
    with project.lock("store", purpose="tally gc"):
        with pytest.raises(LockBusy) as ei:
            project.lock("store", shared=True).acquire()
        assert f"pid {os.getpid()}" in str(ei.value) and "tally gc" in str(ei.value)
        assert ei.value.exit_code == 7


def test_shared_locks_coexist(project) -> None:
    with project.lock("store", shared=True), project.lock("store", shared=True):
        with pytest.raises(LockBusy):
            project.lock("store").acquire()
    with project.lock("store"):
        pass  # free again once both are released


def test_a_killed_holder_leaves_no_stale_lock(project) -> None:
    code = ("import sys, time; from pathlib import Path; from cas.core.locks import Lock; "
            "Lock(Path(sys.argv[1]), 'store', purpose='doomed').acquire(); "
            "print('held', flush=True); time.sleep(60)")
    proc = subprocess.Popen([sys.executable, "-c", code, str(project.store_dir / "locks")],
                            stdout=subprocess.PIPE)
    try:
        assert proc.stdout.readline() == b"held\n"
        with pytest.raises(LockBusy, match="doomed"):
            project.lock("store").acquire()
        proc.kill()
        proc.wait()
        with project.lock("store", timeout=5):
            pass
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_a_lock_waits_up_to_its_timeout(project) -> None:
    held = Lock(project.store_dir / "locks", "x").acquire()
    try:
        with pytest.raises(LockBusy):
            Lock(project.store_dir / "locks", "x", timeout=0.2).acquire()
    finally:
        held.release()
    Lock(project.store_dir / "locks", "x", timeout=0.2).acquire().release()


# -- errors -----------------------------------------------------------------------------------

@pytest.mark.parametrize("cls,code", [
    (errors.TallyError, 1), (errors.UsageError, 2), (errors.PipelineError, 2),
    (errors.ParamError, 2), (errors.NotFound, 3), (errors.Conflict, 4), (errors.Corruption, 5),
    (errors.FormatError, 5), (errors.StoreError, 6), (errors.LockBusy, 7),
    (errors.RunFailed, 8), (errors.Interrupted, 130),
])
def test_exit_codes(cls: type, code: int) -> None:
    assert cls.exit_code == code
    e = cls("boom", path="some/where", hint="do this")
    assert e.to_json() == {"error": cls.__name__, "message": "boom", "path": "some/where",
                           "hint": "do this", "exit_code": code}


def test_typed_errors_carry_their_subject() -> None:
    assert errors.ObjectMissing("a" * 64).exit_code == 3
    assert errors.CorruptObject("b" * 64, "bad").exit_code == 5
    w = errors.WouldOverwrite([f"f{i}" for i in range(25)])
    assert w.exit_code == 4 and len(w.paths) == 25 and "... and 5 more" in str(w)


@pytest.mark.parametrize("code,cls,text", [
    (errno.ENOSPC, StoreError, "no space left"), (errno.EDQUOT, StoreError, "no space left"),
    (errno.EROFS, StoreError, "read-only"), (errno.EACCES, StoreError, "permission denied"),
    (errno.EPERM, StoreError, "permission denied"), (errno.ENOENT, NotFound, "no such file"),
    (errno.EIO, errors.TallyError, "while writing"),
])
def test_os_errors_become_actionable(code: int, cls: type, text: str) -> None:
    e = errors.from_os_error(OSError(code, os.strerror(code), "/x/y"))
    assert type(e) is cls and text in e.message and e.path == "/x/y"
