"""Use cases on tracked data (cas/workspace/tracking.py): add, status, checkout, unprotect, and
the bad inputs each must refuse with the right error."""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path

import pytest

from support import helpers
from cas.store import config
from cas.core import hashing
from cas.objects import pointer
from cas.workspace import tracking
from cas.objects import tree
from cas.workspace import snapshot as workspace
from cas.core.errors import NotFound, ObjectMissing, UsageError
from cas.workspace.project import open_project


def add(project, *paths: Path) -> list[tracking.Added]:
    return tracking.add(project, [str(p) for p in paths])


def states(project) -> dict[str, tracking.Status]:
    return {s.path: s for s in tracking.status(project)}


def with_links(project, order: str):
    config.set_value(project.store_dir / "config", "cache.type", order)
    return open_project(project.root)


def is_ignored(repo: Path, rel: str) -> bool:
    import subprocess
    return subprocess.run(["git", "check-ignore", "-q", rel], cwd=repo).returncode == 0


# -- add --------------------------------------------------------------------------------------

def test_add_a_file(project) -> None:
    f = project.root / "model.bin"
    f.write_bytes(b"weights" * 1000)
    [added] = add(project, f)
    assert added.path == "model.bin" and added.changed and added.hashed == 1
    ptr = pointer.read(project.root, "model.bin")
    assert ptr == added.pointer
    assert (ptr.oid, ptr.is_dir, ptr.size, ptr.files, ptr.mode) == \
        (hashing.hash_bytes(b"weights" * 1000), False, 7000, 1, 0o644)
    text = (project.root / "model.bin.tally").read_text()
    assert text.startswith("# tally: model.bin")
    assert f"oid: {ptr.oid}\n" in text and "kind: file\n" in text and "mode: 644\n" in text
    assert "/model.bin" in (project.root / ".gitignore").read_text().splitlines()
    assert is_ignored(project.root, "model.bin")
    assert not is_ignored(project.root, "model.bin.tally")
    assert project.store.get(ptr.oid) == b"weights" * 1000


def test_add_an_executable_keeps_its_mode(project) -> None:
    f = project.root / "tool.sh"
    f.write_bytes(b"#!/bin/sh\n")
    f.chmod(0o755)
    [added] = add(project, f)
    assert added.pointer.mode == 0o755
    assert "mode: 755\n" in (project.root / "tool.sh.tally").read_text()


def test_add_a_directory(project) -> None:
    d = helpers.write_tree(project.root / "data" / "images", helpers.rich_spec())
    [added] = add(project, d)
    ptr = added.pointer
    files = [p for p in d.rglob("*") if p.is_file() and not p.is_symlink()]
    assert ptr.is_dir and ptr.files == len(files) and ptr.mode == 0
    assert ptr.size == sum(p.stat().st_size for p in files)
    # The .gitignore is the one next to the data, anchored to it.
    assert (project.root / "data" / ".gitignore").read_text().splitlines() == ["/images"]
    assert is_ignored(project.root, "data/images/a.txt")
    assert (project.root / "data" / "images.tally").exists()
    load = lambda o: tree.decode(project.store.get(o))  # noqa: E731
    for rel, e in tree.walk(ptr.oid, load):
        project.store.verify(e.oid)
        if e.kind == tree.FILE:
            assert (d / rel).read_bytes() == project.store.get(e.oid)
    for _, t in tree.walk_trees(ptr.oid, load):
        project.store.verify(t)


def test_re_adding_unchanged_data_reads_nothing(project) -> None:
    d = helpers.write_tree(project.root / "data", helpers.rich_spec())
    first = add(project, d)[0]
    second = add(project, d)[0]
    assert second.pointer == first.pointer and not second.changed
    assert second.hashed == 0
    (d / "a.txt").write_text("changed\n")
    third = add(project, d)[0]
    assert third.changed and third.hashed == 1
    assert (project.root / ".gitignore").read_text().splitlines().count("/data") == 1


@pytest.mark.parametrize("order", ["copy", "hardlink,copy", "symlink,copy", "reflink,copy"])
def test_add_then_status_reads_nothing_in_every_link_mode(request, tmp_path: Path, order: str,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from cas.workspace.project import init_project
    if order.startswith("reflink"):
        repo = request.getfixturevalue("reflink_repo")
    else:
        repo = request.getfixturevalue("repo")
    project = with_links(init_project(repo)[0], order)
    d = helpers.write_tree(repo / "data", helpers.rich_spec())
    add(project, d)
    hashed = helpers.CallCounter(monkeypatch, hashing, "hash_file")
    mtimes = {p: os.lstat(p).st_mtime_ns for p in d.rglob("*")}
    add(project, d)
    [st] = tracking.status(project)
    assert st.state == "unchanged", st.to_json()
    assert len(hashed) == 0, f"{len(hashed)} file(s) re-hashed after add"
    assert {p: os.lstat(p).st_mtime_ns for p in d.rglob("*")} == mtimes, \
        "re-adding touched the user's files"
    assert helpers.read_tree(d) == helpers.read_tree(
        helpers.write_tree(tmp_path / "expected", helpers.rich_spec()))


# -- status -----------------------------------------------------------------------------------

def test_status_states(project) -> None:
    d = helpers.write_tree(project.root / "data", {"a": "a\n", "b": "b\n", "sub/c": "c\n"})
    f = project.root / "single.csv"
    f.write_text("x,y\n")
    gone = project.root / "gone"
    gone.write_text("will be deleted\n")
    lost = project.root / "lost"
    lost.write_text("its object will be deleted\n")
    add(project, d, f, gone, lost)
    assert {p: s.state for p, s in states(project).items()} == {
        "data": "unchanged", "single.csv": "unchanged", "gone": "unchanged", "lost": "unchanged"}

    (d / "a").write_text("A\n")
    (d / "sub" / "c").unlink()
    (d / "new").write_text("new\n")
    f.write_text("x,y\n1,2\n")
    gone.unlink()
    project.store.delete(pointer.read(project.root, "lost").oid)
    s = states(project)
    assert (s["data"].state, s["data"].added, s["data"].modified, s["data"].deleted) == \
        ("modified", ["new"], ["a"], ["sub/c"])
    assert (s["single.csv"].state, s["single.csv"].modified) == ("modified", [])
    assert s["gone"].state == "missing"
    assert s["lost"].state == "not-in-store"
    assert s["data"].to_json() == {"path": "data", "state": "modified", "added": ["new"],
                                   "modified": ["a"], "deleted": ["sub/c"], "leftovers": []}


def test_status_of_selected_paths(project) -> None:
    a = project.root / "a"
    a.write_text("a")
    b = project.root / "b"
    b.write_text("b")
    add(project, a, b)
    assert [s.path for s in tracking.status(project, [str(a)])] == ["a"]
    assert [s.path for s in tracking.status(project, [str(project.root / "b.tally")])] == ["b"]
    with pytest.raises(NotFound, match="not tracked"):
        tracking.status(project, [str(project.root / "README.md")])


def test_status_writes_nothing_to_the_store(project) -> None:
    d = helpers.write_tree(project.root / "data", {"a": "a\n"})
    add(project, d)
    before = set(project.store.iter_oids())
    (d / "a").write_text("changed\n")
    (d / "b").write_text("new\n")
    assert states(project)["data"].state == "modified"
    assert set(project.store.iter_oids()) == before


# -- checkout ---------------------------------------------------------------------------------

@pytest.mark.parametrize("order", ["reflink,copy", "copy", "hardlink,copy", "symlink,copy"])
def test_checkout_after_delete_restores_identical_bytes(project, order: str) -> None:
    project = with_links(project, order)
    spec = helpers.rich_spec()
    d = helpers.write_tree(project.root / "data", spec)
    f = project.root / "model.bin"
    f.write_bytes(os.urandom(10_000))
    expected = helpers.read_tree(d)
    expected_f = f.read_bytes()
    add(project, d, f)
    shutil.rmtree(d)
    f.unlink()
    assert {s.state for s in tracking.status(project)} == {"missing"}
    reports = tracking.checkout(project)
    assert sorted(reports) == ["data", "model.bin"]
    assert helpers.read_tree(d) == expected
    assert f.read_bytes() == expected_f
    assert {s.state for s in tracking.status(project)} == {"unchanged"}
    assert tracking.checkout(project)["data"].written == []


def test_checkout_of_one_path(project) -> None:
    a, b = project.root / "a", project.root / "b"
    a.write_text("a")
    b.write_text("b")
    add(project, a, b)
    a.unlink()
    b.unlink()
    assert list(tracking.checkout(project, [str(a)])) == ["a"]
    assert a.exists() and not b.exists()


def test_checkout_refuses_to_overwrite_user_changes(project) -> None:
    d = helpers.write_tree(project.root / "data", {"a": "a\n", "b": "b\n"})
    add(project, d)
    (d / "a").write_text("precious edits\n")
    from cas.core.errors import WouldOverwrite
    with pytest.raises(WouldOverwrite) as ei:
        tracking.checkout(project)
    assert ei.value.paths == ["data/a"]
    assert (d / "a").read_text() == "precious edits\n"
    tracking.checkout(project, force=True)
    assert (d / "a").read_text() == "a\n"


def test_unprotect(project) -> None:
    project = with_links(project, "hardlink,copy")
    d = helpers.write_tree(project.root / "data", {"a": "a\n", "sub/b": "b\n"})
    add(project, d)
    shutil.rmtree(d)
    tracking.checkout(project)
    assert stat.S_IMODE(os.stat(d / "a").st_mode) == 0o444
    assert sorted(tracking.unprotect(project, [str(d)])) == ["data/a", "data/sub/b"]
    assert os.stat(d / "a").st_mode & 0o200 and os.stat(d / "a").st_nlink == 1
    assert tracking.unprotect(project, [str(d / "a")]) == []
    with pytest.raises(NotFound):
        tracking.unprotect(project, [str(project.root / "nope")])


# -- bad inputs -------------------------------------------------------------------------------

def test_add_a_path_outside_the_repository(project, tmp_path: Path) -> None:
    outside = tmp_path / "elsewhere.txt"
    outside.write_text("x")
    with pytest.raises(UsageError, match="outside the project") as ei:
        add(project, outside)
    assert ei.value.exit_code == 2 and ei.value.hint
    with pytest.raises(UsageError, match="outside the project"):
        tracking.add(project, ["../elsewhere.txt"], cwd=project.root)


def test_add_a_missing_path(project) -> None:
    with pytest.raises(NotFound, match="does not exist") as ei:
        add(project, project.root / "nope")
    assert ei.value.exit_code == 3
    assert not (project.root / "nope.tally").exists()


def test_add_inside_an_already_tracked_directory(project) -> None:
    d = helpers.write_tree(project.root / "data", {"sub/a": "a"})
    add(project, d)
    with pytest.raises(UsageError, match="inside data, which is already tracked") as ei:
        add(project, d / "sub" / "a")
    assert "tally add data" in ei.value.hint
    assert not (d / "sub" / "a.tally").exists()


def test_add_a_path_tracked_by_git(project) -> None:
    f = project.root / "README.md"  # committed by the repo fixture
    with pytest.raises(UsageError, match="tracked by Git") as ei:
        add(project, f)
    assert "git rm -r --cached" in ei.value.hint
    assert not (project.root / "README.md.tally").exists()


@pytest.mark.parametrize("what", [".", ".tally/config", ".git/HEAD", "x.tally"])
def test_add_what_is_not_data(project, what: str) -> None:
    (project.root / "x.tally").write_text("format: 1\n")
    with pytest.raises(UsageError):
        add(project, project.root / what)


@pytest.mark.parametrize("text,where", [
    ("format: 1\noid: {oid}\nkind: file\nsize 12\nfiles: 1\nmode: 644\n", "f.tally:4"),
    ("format: 1\noid: nothex\nkind: file\nsize: 1\nfiles: 1\nmode: 644\n", "is not a 64-digit"),
    ("format: 1\noid: {oid}\nkind: blob\nsize: 1\nfiles: 1\nmode: 644\n", "must be file or dir"),
    ("format: 1\noid: {oid}\nkind: file\nfiles: 1\nmode: 644\n", "missing `size:`"),
    ("format: 9\noid: {oid}\nkind: file\nsize: 1\nfiles: 1\nmode: 644\n", "newer than this tally"),
    ("format: 1\noid: {oid}\nkind: file\nsize: -1\nfiles: 1\nmode: 644\n", "`size: -1`"),
    ("format: 1\noid: {oid}\nkind: file\nsize: 1\nfiles: 1\nmode: 777\n", "must be 644 or 755"),
])
def test_a_malformed_pointer_names_the_file_and_line(project, text: str, where: str) -> None:
    (project.root / "f.tally").write_text(text.format(oid="a" * 64))
    for call in (lambda: tracking.status(project), lambda: tracking.checkout(project)):
        with pytest.raises(UsageError) as ei:
            call()
        assert "f.tally" in str(ei.value) and where in str(ei.value)
        assert ei.value.path == "f.tally"
    assert not (project.root / "f").exists()


def test_a_pointer_to_a_missing_object_touches_nothing(project) -> None:
    good = helpers.write_tree(project.root / "good", {"a": "a\n"})
    bad = helpers.write_tree(project.root / "bad", {"b": "b\n"})
    add(project, good, bad)
    ptr = pointer.read(project.root, "bad")
    project.store.delete(ptr.oid)
    shutil.rmtree(good)
    (bad / "b").write_text("user edits\n")
    with pytest.raises(ObjectMissing) as ei:
        tracking.checkout(project)
    assert ei.value.oid == ptr.oid and ei.value.exit_code == 3
    assert "bad.tally" in str(ei.value.path)
    assert not good.exists(), "checkout restored some paths before failing"
    assert (bad / "b").read_text() == "user edits\n"


def test_add_a_special_file_is_refused(project) -> None:
    d = project.root / "data"
    d.mkdir()
    os.mkfifo(d / "pipe")
    with pytest.raises(UsageError, match="special file"):
        add(project, d)
    assert not (project.root / "data.tally").exists()


def test_snapshot_skips_nested_repositories_and_stores(project) -> None:
    d = helpers.write_tree(project.root / "data", {"a": "a\n", ".git/HEAD": "x", ".tally/config": "y"})
    [added] = add(project, d)
    assert added.pointer.files == 1
    assert [p for p, _ in tree.walk(added.pointer.oid,
                                    lambda o: tree.decode(project.store.get(o)))] == ["a"]
    assert workspace.SKIP_NAMES == {".git", ".tally"}


# -- the round trip of issue 2's "Done when" ------------------------------------------------

ROUND_TRIP_ORDERS = ["reflink,copy", "hardlink,copy", "symlink,copy", "copy"]


def round_trip(repo: Path, order: str, *, big_each: int, n_small: int) -> None:
    from cas.workspace.project import init_project
    project = with_links(init_project(repo)[0], order)
    data = repo / "data"
    helpers.big_files(data / "large", each=big_each)
    helpers.many_small_files(data / "small", n_small)
    helpers.write_tree(data / "odd", helpers.rich_spec())
    expected = helpers.manifest(data)
    [added] = add(project, data)
    assert added.pointer.files == sum(1 for v in expected.values() if v[0] == "file")
    assert tracking.status(project)[0].state == "unchanged"
    shutil.rmtree(data)
    assert tracking.status(project)[0].state == "missing"
    report = tracking.checkout(project)["data"]
    assert helpers.manifest(data) == expected
    if order != "copy":
        preferred = order.split(",")[0]
        assert report.modes.get(preferred, 0) > 0, report.modes
    assert tracking.status(project)[0].state == "unchanged"
    for oid in project.store.iter_oids():  # what fsck does: every object re-hashed
        project.store.verify(oid)


@pytest.mark.parametrize("order", ROUND_TRIP_ORDERS)
def test_round_trip_add_delete_checkout(request, order: str) -> None:
    repo = request.getfixturevalue("reflink_repo" if order.startswith("reflink") else "repo")
    round_trip(repo, order, big_each=4 << 20, n_small=2000)


@helpers.slow
@pytest.mark.parametrize("order", ROUND_TRIP_ORDERS)
def test_round_trip_full_size(request, order: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 2 as written: a 1 GiB mix of large files and 50,000 small files."""
    from cas.store import writer
    monkeypatch.setattr(writer, "BATCH_LIMIT", 20_000)  # real-size batches for real-size data
    repo = request.getfixturevalue("reflink_repo" if order.startswith("reflink") else "repo")
    need = 3 * (1 << 30)
    if shutil.disk_usage(repo).free < need:
        pytest.skip(f"needs {need >> 30} GiB free next to {repo}")
    round_trip(repo, order, big_each=(1 << 30) // 3, n_small=50_000)
