"""CLI end to end for the data commands: exit codes, stdout/stderr split, --json.

Runs `cli.main.run` in-process (the same funnel the `tally` script uses), with the
working directory inside a fresh Git repository.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from support import helpers
from cli.main import run


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True,
                          text=True).stdout


@pytest.fixture
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "proj"
    root.mkdir()
    git(root, "init", "-q", "-b", "main")
    git(root, "config", "user.email", "t@example.com")
    git(root, "config", "user.name", "t")
    (root / "README").write_text("hi\n")
    git(root, "add", "README")
    git(root, "commit", "-qm", "init")
    monkeypatch.chdir(root)
    return root


def tally(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = run(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def make_data(root: Path) -> None:
    (root / "data" / "sub").mkdir(parents=True)
    (root / "data" / "a.csv").write_text("x,y\n" + "1,2\n" * 5000)
    (root / "data" / "sub" / "b.bin").write_bytes(os.urandom(10_000))
    (root / "data" / "run.sh").write_text("#!/bin/sh\necho hi\n")
    (root / "data" / "run.sh").chmod(0o755)


def test_init_twice_and_outside_git(repo, capsys, tmp_path, monkeypatch):
    code, out, err = tally(capsys, "init")
    assert code == 0 and "Initialized" in out
    code, out, err = tally(capsys, "init")
    assert code == 0 and "already exists" in err
    outside = tmp_path / "nogit"
    outside.mkdir()
    monkeypatch.chdir(outside)
    code, out, err = tally(capsys, "init")
    assert code == 6
    assert "git init" in err
    assert out == ""


def test_commands_outside_a_project_say_init(repo, capsys):
    code, out, err = tally(capsys, "status")
    assert code == 6 and "tally init" in err


def test_add_status_checkout_roundtrip(repo, capsys):
    tally(capsys, "init")
    make_data(repo)
    code, out, err = tally(capsys, "add", "data", "--json")
    assert code == 0, err
    [rec] = json.loads(out)
    assert rec["path"] == "data" and rec["files"] == 3 and rec["kind"] == "dir"
    assert (repo / "data.tally").read_text().count(rec["oid"]) == 1
    assert "/data" in (repo / ".gitignore").read_text().splitlines()
    before = {p: p.read_bytes() for p in (repo / "data").rglob("*") if p.is_file()}

    code, out, _ = tally(capsys, "status", "--json")
    assert code == 0 and json.loads(out)[0]["state"] == "unchanged"

    import shutil
    shutil.rmtree(repo / "data")
    code, out, _ = tally(capsys, "status", "--json")
    assert json.loads(out)[0]["state"] == "missing"
    code, out, err = tally(capsys, "checkout")
    assert code == 0, err
    after = {p: p.read_bytes() for p in (repo / "data").rglob("*") if p.is_file()}
    assert after == before
    assert os.access(repo / "data" / "run.sh", os.X_OK)


def test_checkout_refuses_to_destroy_changes(repo, capsys):
    tally(capsys, "init")
    make_data(repo)
    tally(capsys, "add", "data")
    target = repo / "data" / "a.csv"
    target.write_text("my precious edit\n")
    code, out, err = tally(capsys, "checkout")
    assert code == 4
    assert "data/a.csv" in err and "--force" in err
    assert target.read_text() == "my precious edit\n"  # nothing touched
    code, out, err = tally(capsys, "checkout", "--force")
    assert code == 0
    assert target.read_text().startswith("x,y")


def test_status_lists_new_modified_deleted(repo, capsys):
    tally(capsys, "init")
    make_data(repo)
    tally(capsys, "add", "data")
    (repo / "data" / "new.txt").write_text("n")
    (repo / "data" / "a.csv").write_text("changed")
    (repo / "data" / "sub" / "b.bin").unlink()
    code, out, _ = tally(capsys, "status", "--json")
    [s] = json.loads(out)
    assert s["state"] == "modified"
    assert s["added"] == ["new.txt"] and s["modified"] == ["a.csv"] and s["deleted"] == ["sub/b.bin"]
    code, out, _ = tally(capsys, "status")
    assert "new: data/new.txt" in out and "deleted: data/sub/b.bin" in out


@pytest.mark.parametrize("args, code, needle", [
    (["add", "nope"], 3, "does not exist"),
    (["add", "../outside"], 2, "outside the project"),
    (["add", "README"], 2, "tracked by Git"),
    (["add", "data.tally"], 2, "pointer file"),
    (["status", "nothing"], 3, "not tracked"),
    (["checkout", "nothing"], 3, "not tracked"),
    (["config", "cache.type", "teleport"], 2, "cache.type"),
    (["config", "no.such.key", "1"], 2, "unknown config key"),
])
def test_bad_input_exit_codes(repo, capsys, args, code, needle):
    tally(capsys, "init")
    (repo / "data.tally").write_text("format: 1\n")
    got, out, err = tally(capsys, *args)
    assert got == code, err
    assert needle in err
    assert out == ""


def test_malformed_pointer_names_file_and_line(repo, capsys):
    tally(capsys, "init")
    (repo / "data.tally").write_text("format: 1\nthis line is junk\n")
    code, out, err = tally(capsys, "status")
    assert code == 2
    assert "data.tally:2" in err


def test_pointer_to_missing_object(repo, capsys):
    tally(capsys, "init")
    make_data(repo)
    tally(capsys, "add", "data")
    text = (repo / "data.tally").read_text()
    oid = next(l.split(": ")[1] for l in text.splitlines() if l.startswith("oid:"))
    (repo / "data.tally").write_text(text.replace(oid, "0" * 64))
    code, out, err = tally(capsys, "checkout")
    assert code == 3 and "0" * 64 in err


def test_fsck_finds_a_flipped_byte(repo, capsys):
    tally(capsys, "init")
    make_data(repo)
    tally(capsys, "add", "data")
    code, out, err = tally(capsys, "fsck", "--json")
    assert code == 0 and json.loads(out)["ok"]
    victim = next(p for p in (repo / ".tally" / "objects").rglob("*") if p.is_file())
    victim.chmod(0o644)
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0x01
    victim.write_bytes(bytes(data))
    code, out, err = tally(capsys, "fsck", "--json")
    assert code == 5
    report = json.loads(out)
    assert not report["ok"]
    name = victim.parent.name + victim.name.removesuffix(".zst")
    assert any(p["where"] == name for p in report["problems"])


def test_config_roundtrip_keeps_comments(repo, capsys):
    tally(capsys, "init")
    code, out, _ = tally(capsys, "config", "cache.type", "hardlink,copy")
    assert code == 0
    code, out, _ = tally(capsys, "config", "cache.type")
    assert out.strip() == "hardlink,copy"
    assert "# tally store config" in (repo / ".tally" / "config").read_text()
    code, out, _ = tally(capsys, "config", "--unset", "cache.type")
    code, out, _ = tally(capsys, "config", "cache.type")
    assert out.strip() == "reflink,copy"


def test_hardlink_mode_protects_and_unprotect(repo, capsys):
    tally(capsys, "init")
    tally(capsys, "config", "cache.type", "hardlink,copy")
    make_data(repo)
    tally(capsys, "add", "data")
    f = repo / "data" / "a.csv"
    assert f.stat().st_nlink >= 2 and not os.access(f, os.W_OK) or os.geteuid() == 0
    assert not f.stat().st_mode & 0o222
    code, out, _ = tally(capsys, "unprotect", "data/a.csv")
    assert code == 0 and "data/a.csv" in out
    assert f.stat().st_nlink == 1 and f.stat().st_mode & 0o200
    f.write_text("edited")
    code, out, _ = tally(capsys, "fsck")
    assert code == 0  # the store was not touched by the edit


def flip_raw_object(repo: Path, oid: str) -> None:
    """Damage a stored object in place, keeping its size (so no size check catches it)."""
    from cas.workspace.project import open_project
    path = Path(open_project(repo).store.raw_path(oid))
    path.chmod(0o644)
    data = bytearray(path.read_bytes())
    data[0] ^= 0x20
    path.write_bytes(bytes(data))
    path.chmod(0o444)


def test_checkout_verify_checks_linked_files(repo, capsys):
    """Copies are always checked; a hardlink is the object itself, checked with --verify."""
    tally(capsys, "init")
    tally(capsys, "config", "cache.type", "hardlink,copy")
    (repo / "data").mkdir()
    (repo / "data" / "a.bin").write_bytes(os.urandom(300))  # incompressible: stored raw
    code, out, _ = tally(capsys, "add", "data", "--json")
    from cas.objects import tree
    from cas.workspace.project import open_project
    project = open_project(repo)
    oid = tree.decode(project.store.get(json.loads(out)[0]["oid"])).get("a.bin").oid
    flip_raw_object(repo, oid)
    helpers.make_writable(repo / "data")
    shutil.rmtree(repo / "data")
    code, out, err = tally(capsys, "checkout", "--verify")
    assert code == 5 and out == "" and oid in err
    assert not (repo / "data" / "a.bin").exists()  # nothing damaged took the name
    code, out, err = tally(capsys, "checkout")  # unverified by default: the link is made
    assert code == 0 and "1 written (1 hardlink)" in out
    code, _, err = tally(capsys, "checkout", "--verify=1")
    assert code == 2 and "Option '--verify' does not take a value." in err


def test_status_reports_a_killed_checkouts_leftovers(repo, capsys):
    tally(capsys, "init")
    make_data(repo)
    tally(capsys, "add", "data")
    dead = subprocess.Popen(["true"])
    dead.wait()
    (repo / "data" / "sub" / f".tally-tmp-{dead.pid}-deadbeef-3").write_text("half a file")
    code, out, err = tally(capsys, "status")
    assert code == 0 and err == ""
    assert out.splitlines() == [
        "Data and pointers are up to date.",
        "data: leftover temp files of a killed checkout: 1 (the next `tally checkout` removes them)"]
    code, out, _ = tally(capsys, "status", "--json")
    assert json.loads(out)[0]["leftovers"] == [f"data/sub/.tally-tmp-{dead.pid}-deadbeef-3"]
    (repo / "data" / "a.csv").chmod(0o644)
    (repo / "data" / "a.csv").write_text("changed\n")
    code, out, _ = tally(capsys, "status")
    assert out.splitlines()[0] == "modified: data" and out.splitlines()[-1].startswith("data: leftover")
    tally(capsys, "checkout", "--force")
    code, out, _ = tally(capsys, "status")
    assert out == "Data and pointers are up to date.\n"


def test_version_and_help_list_exit_codes(capsys):
    code, out, _ = tally(capsys, "--version")
    assert code == 0 and out.startswith("tally ")
    code, out, _ = tally(capsys, "add", "--help")
    assert code == 0 and "Exit codes" in out


def test_unknown_command_is_usage_error(capsys):
    code, out, err = tally(capsys, "frobnicate")
    assert code == 2 and "frobnicate" in err


@pytest.mark.parametrize("tries", [1, helpers.slow_param(10)])
def test_a_closed_pipe_is_not_a_failure(repo, capsys, tries):
    """`tally ... | head -1` exits 0 however early the reader goes away (the reader's
    timing varies: the slow tier tries each command 10 times)."""
    import shutil
    import sys

    tally(capsys, "init")
    exe = shutil.which("tally", path=os.path.dirname(sys.executable))
    if exe is None:
        pytest.skip("the tally script is not installed next to this interpreter")
    for args in (["config"], ["status", "--json"], ["--help"]):
        for _ in range(tries):
            r = subprocess.run(["bash", "-o", "pipefail", "-c",
                                f"{exe} {' '.join(args)} | head -c 1 >/dev/null"],
                               cwd=repo, capture_output=True, text=True)
            assert r.returncode == 0, (args, r.stderr)
            assert "Traceback" not in r.stderr and "BrokenPipe" not in r.stderr
