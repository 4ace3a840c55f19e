"""Nothing in a repository can make tally touch `.git`, `.tally` or a file outside the
work tree (issue 13, items 1 and 4; spec/checkout.md, "Path safety" and "Symlinks").

Each test plants what anyone can commit (a pointer file, a pipeline output, a symlink,
an experiment record) and checks that tally refuses it with UnsafePath (exit 2),
names the file that asked, and leaves `.git`, the store and everything outside alone.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from cas.core import paths
from cas.core.errors import FormatError, UnsafePath, UsageError
from cas.objects import pointer, record, tree
from cas.store import refs
from cas.workspace import tracking
from support import helpers


def _listing(root: Path) -> dict[str, bytes | str]:
    """Every file under root with its content (symlinks: their target); the stat
    cache's SQLite files, which any read may touch, left out."""
    out: dict[str, bytes | str] = {}
    for d, dirs, files in os.walk(root):
        files = [f for f in files if not f.startswith("statcache.db")]
        for n in files + [x for x in dirs if os.path.islink(os.path.join(d, x))]:
            p = os.path.join(d, n)
            out[os.path.relpath(p, root)] = os.readlink(p) if os.path.islink(p) else open(p, "rb").read()
    return out


@pytest.mark.parametrize("rel", ["", "/etc/passwd", "C:/x", "a/../b", "..", "a//b", "./a", "a/.",
                                 ".git", ".tally", "sub/.git", "sub/.GIT/config", ".Tally/objects",
                                 "a\0b", "x" * 256, "a/" * 2100])
def test_unsafe_paths_have_a_problem(rel: str) -> None:
    assert paths.path_problem(rel) is not None
    with pytest.raises(UnsafePath, match="names"):
        paths.check_path(rel, source="test")


@pytest.mark.parametrize("rel", ["a", "data/train.csv", ".gitignore", ".github/x", "sub/.gitx",
                                 "a.git", "tally.lock", ".tallyrc", "é/ü"])
def test_safe_paths(rel: str) -> None:
    assert paths.path_problem(rel) is None


@pytest.mark.parametrize("name", [".git", ".tally", "sub/.git", ".GIT"])
def test_a_pointer_naming_a_reserved_directory_is_refused(project, name: str) -> None:
    """A committed `.git.tally` made status report .git modified and checkout --force
    replace .git with a 3-byte file; `.tally.tally` made it delete the store."""
    root = project.root
    helpers.write_tree(root / "data", {"a.txt": "a\n"})
    (good,) = tracking.add(project, [str(root / "data")])
    (root / "sub").mkdir(exist_ok=True)
    (root / "sub" / ".git").mkdir(exist_ok=True)
    bad = root / f"{name}{pointer.SUFFIX}"
    bad.write_bytes(good.pointer.encode())  # a well-formed pointer: only its name is hostile
    before_git, before_store = _listing(root / ".git"), _listing(root / ".tally")
    for op in (lambda: tracking.status(project), lambda: tracking.checkout(project, force=True)):
        with pytest.raises(UnsafePath) as exc:
            op()
        assert f"{name}{pointer.SUFFIX}" in exc.value.message and exc.value.exit_code == 2
    assert _listing(root / ".git") == before_git
    assert _listing(root / ".tally") == before_store
    with pytest.raises(UsageError):  # named explicitly: refused as outside the project
        tracking.checkout(project, [name], force=True)


def test_add_refuses_reserved_and_linked_paths(project, tmp_path: Path) -> None:
    root = project.root
    outside = tmp_path / "outside"
    helpers.write_tree(outside, {"secret.txt": "mine\n"})
    os.symlink(outside, root / "linked")  # a symlinked data directory
    (root / "real").mkdir()
    os.symlink(outside / "secret.txt", root / "real" / "f")
    with pytest.raises(UnsafePath, match="symlink"):
        tracking.add(project, [str(root / "linked")])
    with pytest.raises(UsageError, match="outside the project|symlink"):
        tracking.add(project, [str(root / "linked" / "secret.txt")])  # through a linked parent
    with pytest.raises(UsageError, match=r"\.git"):
        tracking.add(project, [str(root / ".git")])
    # Outside files were never made read-only or linked into the store.
    assert os.stat(outside / "secret.txt").st_mode & 0o200
    assert os.stat(outside / "secret.txt").st_nlink == 1
    assert not (root / "linked.tally").exists()


@pytest.mark.parametrize("target", ["/etc/passwd", "../../outside", "sub/../../x", "loop/..", ".git/config"])
def test_add_refuses_a_symlink_that_checkout_would_refuse(project, target: str) -> None:
    """Refused at add time, so a tree is never stored that cannot be checked out."""
    root = project.root
    helpers.write_tree(root / "data", {"a.txt": "a\n", "sub/b.txt": "b\n",
                                       "loop": helpers.Link("."), "evil": helpers.Link(target)})
    objects_before = set(project.store.iter_oids())
    with pytest.raises(UnsafePath, match="refusing symlink"):
        tracking.add(project, [str(root / "data")])
    assert not (root / "data.tally").exists()
    assert set(project.store.iter_oids()) == objects_before  # nothing stored


def test_add_keeps_links_inside_the_tree(project) -> None:
    root = project.root
    helpers.write_tree(root / "data", {"a.txt": "a\n", "sub/l": helpers.Link("../a.txt")})
    tracking.add(project, [str(root / "data")])
    helpers.make_writable(root / "data")
    import shutil
    shutil.rmtree(root / "data")
    tracking.checkout(project)
    assert os.readlink(root / "data" / "sub" / "l") == "../a.txt"


def test_checkout_never_writes_through_a_symlinked_parent(project, tmp_path: Path) -> None:
    root = project.root
    helpers.write_tree(root / "d" / "data", {"a.txt": "a\n"})
    (added,) = tracking.add(project, [str(root / "d" / "data")])
    helpers.make_writable(root / "d")
    import shutil
    shutil.rmtree(root / "d")
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    os.symlink(outside, root / "d")  # someone commits `d` as a link to elsewhere
    (root / "d.tally").unlink(missing_ok=True)
    (outside / "data.tally").write_bytes(added.pointer.encode())
    for op in (lambda: tracking.checkout(project, ["d/data"]), lambda: tracking.status(project, ["d/data"])):
        with pytest.raises(UsageError, match="outside the project|is a symlink"):
            op()
    assert tracking.checkout(project) == {}  # pointers are never looked for through links
    assert sorted(os.listdir(outside)) == ["data.tally"]


def test_a_pipeline_output_naming_git_is_refused(project) -> None:
    from cas.pipeline.pipelinefile import load_pipeline

    (project.root / "tally.yaml").write_text(
        "stages:\n  s:\n    cmd: echo hi > .git/HEAD\n    outs: [sub/.git/HEAD]\n")
    with pytest.raises(UsageError, match="never touches"):
        load_pipeline(project.root)


def test_an_output_under_a_symlinked_directory_is_never_deleted(project, tmp_path: Path) -> None:
    from cas.experiments import runs
    from cas.experiments.request import RunRequest

    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "model.bin").write_text("precious\n")
    os.symlink(outside, project.root / "models")
    (project.root / "tally.yaml").write_text(
        "stages:\n  s:\n    cmd: echo new > models/model.bin\n    outs: [models/model.bin]\n")
    helpers.git(project.root, "add", "tally.yaml")
    helpers.git(project.root, "commit", "-qm", "pipeline")
    with pytest.raises(UnsafePath, match="is a symlink"):
        runs.run(project, RunRequest())
    assert (outside / "model.bin").read_text() == "precious\n"


def _experiment_with(project, entries: list[tree.Entry], outs: dict | None = None) -> str:
    baseline = helpers.git(project.root, "rev-parse", "HEAD").strip()
    with project.store.writer() as w:
        t = tree.make(entries, subtree_files={})
        ws = w.put_bytes(tree.encode(t))
        rec = record.Record(name="hostile", baseline=baseline, created=1, status="success",
                            workspace=ws, outs=outs or {})
        oid = record.put(w, rec)
    refs.update(project, baseline, "hostile", oid, None)
    return oid


@pytest.mark.parametrize("target", ["/etc/passwd", "../outside", ".git/config"])
def test_restore_never_recreates_a_link_out_of_the_work_tree(project, target: str) -> None:
    from cas.experiments import restore

    with project.store.writer() as w:
        link = w.put_bytes(target.encode())
        readme = w.put_bytes(b"test repository\n")
        code = w.put_bytes(b"print(1)\n")
    done = restore.restore(project, _experiment_with(project, [
        tree.Entry("README.md", tree.FILE, readme, 16, 0o644),
        tree.Entry("evil", tree.SYMLINK, link, len(target), 0),
        tree.Entry("train.py", tree.FILE, code, 9, 0o644)]) and "hostile", force=True)
    assert done.skipped == ["evil"] and "train.py" in done.written
    assert not os.path.lexists(project.root / "evil")


def test_restore_refuses_a_record_whose_outputs_name_git(project) -> None:
    from cas.experiments import restore

    with project.store.writer() as w:
        readme = w.put_bytes(b"test repository\n")
    _experiment_with(project, [tree.Entry("README.md", tree.FILE, readme, 16, 0o644)],
                     outs={".git": (readme, False)})
    before = _listing(project.root / ".git")
    with pytest.raises((UnsafePath, FormatError), match=r"\.git"):
        restore.restore(project, "hostile", force=True)
    assert _listing(project.root / ".git") == before
