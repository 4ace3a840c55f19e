"""Contract tests for cas/workspace/git.py against a real git, each in a fresh repository."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cas.workspace import git
from cas.workspace import gitobjects
from cas.core.errors import Conflict, LockBusy, NotFound, StoreError, TallyError, UsageError

ODD_NAMES = ["with space.txt", "ünïcødé-データ.csv", "new\nline.txt", "tab\there", "-dash", "#hash"]


@pytest.fixture(autouse=True)
def clean_git_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Isolate git from the user's config, identity and repository variables."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(home / ".gitconfig"))
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))
    for var in list(os.environ):
        if var.startswith(("GIT_AUTHOR_", "GIT_COMMITTER_")) or var in ("GIT_DIR", "GIT_WORK_TREE",
                                                                          "GIT_INDEX_FILE"):
            monkeypatch.delenv(var)


def sh(root: Path, *args: str, input: bytes | None = None) -> str:
    return subprocess.run(["git", *args], cwd=root, input=input, capture_output=True,
                          check=True).stdout.decode()


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    root.mkdir()
    sh(root, "init", "-q", "-b", "main")
    sh(root, "config", "user.name", "Tally Test")
    sh(root, "config", "user.email", "tally@example.com")
    sh(root, "config", "commit.gpgsign", "false")
    return root


def commit_all(root: Path, message: str = "c") -> str:
    sh(root, "add", "-A")
    sh(root, "commit", "-q", "--allow-empty", "-m", message)
    return sh(root, "rev-parse", "HEAD").strip()


@pytest.fixture
def committed(repo: Path) -> Path:
    (repo / "a.txt").write_text("a\n")
    (repo / "src").mkdir()
    (repo / "src" / "train.py").write_text("print(1)\n")
    commit_all(repo, "init")
    return repo


# -- discovery -----------------------------------------------------------------------

def test_find_root_from_subdir_and_file(committed: Path) -> None:
    assert git.find_root(committed / "src").resolve() == committed.resolve()
    assert git.find_root(committed / "src" / "train.py").resolve() == committed.resolve()


def test_find_root_outside_repo_is_store_error_with_hint(tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    with pytest.raises(StoreError) as info:
        git.find_root(plain)
    assert info.value.message == "not a Git repository"
    assert info.value.hint == "run `git init` first"
    assert info.value.exit_code == 6


def test_find_root_inside_dot_git_and_missing_path(repo: Path) -> None:
    with pytest.raises(StoreError):
        git.find_root(repo / ".git")
    with pytest.raises(NotFound):
        git.find_root(repo / "nope")


def test_no_commit_yet(repo: Path) -> None:
    assert git.head_commit(repo) is None
    assert git.current_branch(repo) == "main"
    assert git.rev_list(repo, all_commits=True) == []
    assert git.list_workspace_files(repo) == []


def test_head_and_branch(committed: Path) -> None:
    head = sh(committed, "rev-parse", "HEAD").strip()
    assert git.head_commit(committed) == head
    assert git.current_branch(committed) == "main"
    sh(committed, "checkout", "-q", "--detach")
    assert git.current_branch(committed) is None
    assert git.head_commit(committed) == head
    sh(committed, "checkout", "-q", "-b", "feature/x")
    assert git.current_branch(committed) == "feature/x"


def test_git_env_of_the_caller_is_ignored(committed: Path, tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    other = tmp_path / "other"
    other.mkdir()
    sh(other, "init", "-q")
    monkeypatch.setenv("GIT_DIR", str(other / ".git"))
    monkeypatch.setenv("GIT_INDEX_FILE", str(tmp_path / "bogus-index"))
    assert git.head_commit(committed) == sh(committed, "--git-dir", str(committed / ".git"),
                                            "rev-parse", "HEAD").strip()
    assert "a.txt" in git.list_workspace_files(committed)


# -- workspace listing and ignores ----------------------------------------------------

def test_list_workspace_files(committed: Path) -> None:
    (committed / ".gitignore").write_text("*.log\n/data\n")
    (committed / "run.log").write_text("x")
    (committed / "data").mkdir()
    (committed / "data" / "big.bin").write_bytes(b"\0" * 10)
    (committed / "src" / "new.py").write_text("new")
    (committed / "a.txt").unlink()  # tracked, deleted from disk
    (committed / "link").symlink_to("src/train.py")
    for name in ODD_NAMES:
        (committed / name).write_text(name)
    nested = committed / "vendor"
    nested.mkdir()
    sh(nested, "init", "-q")
    (nested / "inner.txt").write_text("inner")
    files = git.list_workspace_files(committed)
    assert files == sorted([".gitignore", "link", "src/new.py", "src/train.py", *ODD_NAMES])


def test_list_workspace_files_dedups_unmerged(committed: Path) -> None:
    sh(committed, "checkout", "-q", "-b", "other")
    (committed / "a.txt").write_text("other\n")
    commit_all(committed)
    sh(committed, "checkout", "-q", "main")
    (committed / "a.txt").write_text("main\n")
    commit_all(committed)
    subprocess.run(["git", "merge", "-q", "other"], cwd=committed, capture_output=True)
    assert "UU a.txt" in sh(committed, "status", "--porcelain")
    assert git.list_workspace_files(committed) == ["a.txt", "src/train.py"]


def test_list_workspace_files_many(committed: Path) -> None:
    for i in range(2000):
        (committed / "src" / f"f{i:05}.py").write_text(str(i))
    files = git.list_workspace_files(committed)
    assert len(files) == 2002 and files[0] == "a.txt"


def test_is_ignored(committed: Path) -> None:
    (committed / ".gitignore").write_text("*.log\n/data\nnew*\n")
    sh(committed, "add", ".gitignore")
    (committed / "x.log").write_text("x")
    asked = ["x.log", "data", "data/deep/file.bin", "src/train.py", "a.txt", "kept.txt",
             "new\nline.txt", "./x.log"]
    assert git.is_ignored(committed, asked) == {"x.log", "data", "data/deep/file.bin",
                                                "new\nline.txt", "./x.log"}
    assert git.is_ignored(committed, []) == set()
    sh(committed, "add", "-f", "x.log")  # tracked files are never ignored
    assert git.is_ignored(committed, ["x.log"]) == set()


def test_ensure_ignored_writes_anchored_rule_and_is_idempotent(committed: Path) -> None:
    (committed / "data").mkdir()
    (committed / "data" / "raw").mkdir()
    (committed / "data" / "raw" / "f.csv").write_text("1,2")
    (committed / "model.pkl").write_bytes(b"m")
    assert git.ensure_ignored(committed, "data/raw") is True
    assert (committed / "data" / ".gitignore").read_bytes() == b"/raw\n"
    assert git.ensure_ignored(committed, committed / "model.pkl") is True
    assert (committed / ".gitignore").read_bytes() == b"/model.pkl\n"
    before = (committed / "data" / ".gitignore").read_bytes()
    assert git.ensure_ignored(committed, "data/raw") is False
    assert git.ensure_ignored(committed, "data/raw/f.csv") is False  # parent is ignored
    assert (committed / "data" / ".gitignore").read_bytes() == before
    assert not (committed / "data" / "raw" / ".gitignore").exists()
    assert "model.pkl" not in git.list_workspace_files(committed)
    assert not list(committed.rglob("*.lock"))


def test_ensure_ignored_keeps_content_mode_and_line_endings(committed: Path) -> None:
    gi = committed / ".gitignore"
    gi.write_bytes(b"# mine\r\n*.tmp")  # CRLF, no final newline
    gi.chmod(0o640)
    (committed / "out").write_text("o")
    assert git.ensure_ignored(committed, "out") is True
    assert gi.read_bytes() == b"# mine\r\n*.tmp\r\n/out\r\n"
    assert stat.S_IMODE(gi.stat().st_mode) == 0o640


def test_ensure_ignored_already_ignored_is_noop(committed: Path) -> None:
    (committed / ".gitignore").write_text("*.bin\n")
    (committed / "w.bin").write_text("w")
    assert git.ensure_ignored(committed, "w.bin") is False
    assert (committed / ".gitignore").read_text() == "*.bin\n"


def test_ensure_ignored_beats_a_negation(committed: Path) -> None:
    (committed / ".gitignore").write_text("/keep.bin\n!keep.bin\n")
    (committed / "keep.bin").write_text("k")
    assert git.ensure_ignored(committed, "keep.bin") is True
    assert git.is_ignored(committed, ["keep.bin"]) == {"keep.bin"}


@pytest.mark.parametrize("name", ["star*name", "q?[x]", "back\\slash", "!bang", "#hash",
                                  "trail ", "with space", "ünï"])
def test_ensure_ignored_escapes_glob_characters(committed: Path, name: str) -> None:
    (committed / name).write_text("x")
    decoy = committed / "star-other-name"
    decoy.write_text("decoy")  # a wrong (glob) rule for "star*name" would match this
    assert git.ensure_ignored(committed, name) is True
    assert git.is_ignored(committed, [name, decoy.name]) == {name}


def test_ensure_ignored_refusals(committed: Path, tmp_path: Path) -> None:
    with pytest.raises(Conflict):
        git.ensure_ignored(committed, "src/train.py")  # tracked
    with pytest.raises(Conflict):
        git.ensure_ignored(committed, "src")  # holds tracked files
    # Matched by an ignore rule and still tracked (or holding tracked files): refused
    # all the same, whatever check-ignore answers for them.
    (committed / ".gitignore").write_text("src/\n*.py\n")
    with pytest.raises(Conflict):
        git.ensure_ignored(committed, "src/train.py")
    with pytest.raises(Conflict):
        git.ensure_ignored(committed, "src")
    (committed / "new\nline").write_text("x")
    with pytest.raises(UsageError):
        git.ensure_ignored(committed, "new\nline")
    with pytest.raises(UsageError):
        git.ensure_ignored(committed, tmp_path / "elsewhere")
    with pytest.raises(UsageError):
        git.ensure_ignored(committed, committed)
    with pytest.raises(UsageError):
        git.ensure_ignored(committed, ".git/config")


def test_ensure_ignored_lock_busy(committed: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A live writer (holding the directory's flock) makes another wait, then LockBusy."""
    import fcntl

    monkeypatch.setattr(git, "GITIGNORE_LOCK_TIMEOUT_S", 0.1)
    (committed / "d.bin").write_text("d")
    held = os.open(committed, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(held, fcntl.LOCK_EX)
        # flock is per open file description: a second open in this process conflicts
        # exactly as another process would.
        with pytest.raises(LockBusy):
            git.ensure_ignored(committed, "d.bin")
    finally:
        os.close(held)
    assert not (committed / ".gitignore").exists()


def test_a_stale_gitignore_lock_file_does_not_block(committed: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """A `.gitignore.lock` left by a SIGKILLed writer is only a temp file: overwritten."""
    monkeypatch.setattr(git, "GITIGNORE_LOCK_TIMEOUT_S", 0.1)
    (committed / ".gitignore.lock").write_text("half a rule fr")
    (committed / "d.bin").write_text("d")
    assert git.ensure_ignored(committed, "d.bin")
    assert (committed / ".gitignore").read_text() == "/d.bin\n"
    assert not (committed / ".gitignore.lock").exists()


# -- writing objects, commits and refs -----------------------------------------------

def test_hash_objects_matches_git(committed: Path) -> None:
    contents = [b"", b"hello\n", bytes(range(256)) * 10, b"hello\n", b"a\r\nb\r\n"]
    oids = gitobjects.hash_objects(committed, contents)
    for data, oid in zip(contents, oids):
        assert oid == sh(committed, "hash-object", "--no-filters", "--stdin", input=data).strip()
        assert subprocess.run(["git", "cat-file", "blob", oid], cwd=committed, capture_output=True,
                              check=True).stdout == data
    assert oids[1] == oids[3]
    assert gitobjects.hash_objects(committed, []) == []


def test_hash_objects_reports_a_dying_fast_import(tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    with pytest.raises(TallyError, match="not a git repository"):
        gitobjects.hash_objects(plain, [b"x" * 4_000_000])  # far beyond a pipe buffer


def test_hash_objects_many_go_into_a_pack(committed: Path) -> None:
    contents = [f"blob {i}\n".encode() for i in range(300)]
    oids = gitobjects.hash_objects(committed, contents)
    assert len(set(oids)) == 300
    assert list((committed / ".git" / "objects" / "pack").glob("*.pack"))
    listing = "".join(f"{o}\n" for o in oids).encode()
    out = sh(committed, "cat-file", "--batch-check", input=listing)
    assert "missing" not in out and out.count(" blob ") == 300


def snapshot(root: Path) -> dict[str, object]:
    """Everything the user can see: status, staged diff, HEAD, index and every file byte."""
    files = {p.relative_to(root).as_posix(): p.read_bytes()
             for p in sorted(root.rglob("*")) if p.is_file() and ".git" not in p.parts}
    return {"status": sh(root, "status", "--porcelain", "--untracked-files=all"),
            "cached": sh(root, "diff", "--cached"), "diff": sh(root, "diff"),
            "head": sh(root, "rev-parse", "HEAD"), "symref": sh(root, "symbolic-ref", "HEAD"),
            "index": (root / ".git" / "index").read_bytes(), "files": files,
            "branches": sh(root, "for-each-ref")}


def test_commit_tree_touches_nothing_the_user_sees(committed: Path) -> None:
    base = git.head_commit(committed)
    assert base is not None
    (committed / "a.txt").write_text("staged\n")
    sh(committed, "add", "a.txt")
    (committed / "a.txt").write_text("staged then edited\n")
    (committed / "untracked.txt").write_text("u")
    before = snapshot(committed)
    changes: dict[str, bytes | None] = {
        "a.txt": None,
        "src/train.py": b"print(2)\n",
        "run.sh": b"#!/bin/sh\necho hi\n",
        "models/m.tally": b"oid: abc\n",
        "ünï code/new\nline.txt": b"odd\n",
        "tab\there/x y": b"tab\n",
        "missing-anyway.txt": None,
    }
    new = gitobjects.commit_tree(committed, base="main", changes=changes, message="promote exp-1",
                          executable={"run.sh"})
    gitobjects.update_ref(committed, "refs/heads/exp-1", new, old=None)
    after = snapshot(committed)
    assert after.pop("branches") != before.pop("branches")
    assert after == before

    assert sh(committed, "rev-parse", f"{new}^").strip() == base
    assert sh(committed, "log", "-1", "--format=%s|%an|%ae|%cn", new).strip() == \
        "promote exp-1|Tally Test|tally@example.com|Tally Test"
    tree = sh(committed, "ls-tree", "-r", "-z", "exp-1").split("\0")
    modes = {line.split("\t", 1)[1]: line.split()[0] for line in tree if line}
    assert modes == {"src/train.py": "100644", "run.sh": "100755", "models/m.tally": "100644",
                     "ünï code/new\nline.txt": "100644", "tab\there/x y": "100644"}
    for path, content in changes.items():
        assert gitobjects.show_file(committed, "exp-1", path) == content


def test_commit_tree_replaces_file_with_directory_and_back(committed: Path) -> None:
    one = gitobjects.commit_tree(committed, base="HEAD", changes={"a.txt/inner": b"i"}, message="m")
    assert gitobjects.show_file(committed, one, "a.txt") is None
    assert gitobjects.show_file(committed, one, "a.txt/inner") == b"i"
    two = gitobjects.commit_tree(committed, base=one, changes={"src": b"now a file"}, message="m\n")
    assert gitobjects.show_file(committed, two, "src") == b"now a file"
    assert gitobjects.show_file(committed, two, "src/train.py") is None
    assert sh(committed, "log", "-1", "--format=%B", two) == "m\n\n"


def test_commit_tree_refusals(committed: Path) -> None:
    for bad in ["../up", "/abs", "a//b", "./a", ".git/config", "x/.GIT/y", ""]:
        with pytest.raises(UsageError):
            gitobjects.commit_tree(committed, base="HEAD", changes={bad: b"x"}, message="m")
    with pytest.raises(UsageError):
        gitobjects.commit_tree(committed, base="HEAD", changes={"a": None}, message="m", executable=["a"])
    with pytest.raises(NotFound):
        gitobjects.commit_tree(committed, base="no-such-branch", changes={}, message="m")
    with pytest.raises(UsageError):
        gitobjects.commit_tree(committed, base="--all", changes={}, message="m")


def test_hooks_never_run(committed: Path) -> None:
    hooks = committed / "hooks"
    hooks.mkdir()
    marker = committed / "hook-ran"
    for name in ("reference-transaction", "post-commit", "pre-commit", "fsmonitor-watchman"):
        hook = hooks / name
        hook.write_text(f"#!/bin/sh\necho {name} >> '{marker}'\n")
        hook.chmod(0o755)
    sh(committed, "config", "core.hooksPath", str(hooks))
    sh(committed, "update-ref", "refs/heads/probe", "HEAD")  # the hook works for plain git
    assert marker.exists()
    marker.unlink()
    new = gitobjects.commit_tree(committed, base="HEAD", changes={"x": b"x"}, message="m")
    gitobjects.update_ref(committed, "refs/heads/h", new, old=None)
    gitobjects.delete_ref(committed, "refs/heads/h", old=new)
    git.list_workspace_files(committed)
    assert not marker.exists()


def test_update_ref_compare_and_swap(committed: Path) -> None:
    first = git.head_commit(committed)
    assert first is not None
    second = gitobjects.commit_tree(committed, base=first, changes={"b": b"b"}, message="m")
    ref = "refs/heads/exp"
    assert not gitobjects.ref_exists(committed, ref)
    gitobjects.update_ref(committed, ref, first, old=None, message="tally: promote")
    assert gitobjects.resolve_ref(committed, ref) == first
    with pytest.raises(Conflict):
        gitobjects.update_ref(committed, ref, second, old=None)  # exists: never overwritten
    assert gitobjects.resolve_ref(committed, ref) == first
    with pytest.raises(Conflict):
        gitobjects.update_ref(committed, ref, second, old=second)  # stale old
    gitobjects.update_ref(committed, ref, second, old=first)
    assert gitobjects.resolve_ref(committed, ref) == second
    with pytest.raises(NotFound):
        gitobjects.update_ref(committed, "refs/heads/absent", second, old=first)
    with pytest.raises(Conflict):
        gitobjects.update_ref(committed, "refs/heads/main", second, old=None)
    assert git.head_commit(committed) == first


def test_update_ref_other_failures(committed: Path) -> None:
    head = git.head_commit(committed)
    assert head is not None
    with pytest.raises(Conflict):
        gitobjects.update_ref(committed, "refs/heads/main/sub", head, old=None)  # name vs directory
    (committed / ".git" / "refs" / "heads" / "locked.lock").write_text("")
    with pytest.raises(LockBusy):
        gitobjects.update_ref(committed, "refs/heads/locked", head, old=None)
    blob = gitobjects.hash_objects(committed, [b"not a commit"])[0]
    with pytest.raises(TallyError, match="non-commit"):
        gitobjects.update_ref(committed, "refs/heads/blob", blob, old=None)
    for ref, oid in [("main", head), ("refs/heads/x", "HEAD"), ("refs/heads/x", head[:10])]:
        with pytest.raises(UsageError):
            gitobjects.update_ref(committed, ref, oid, old=None)


def test_resolve_ref_is_exact(committed: Path) -> None:
    head = git.head_commit(committed)
    sh(committed, "branch", "exp/one")
    assert gitobjects.resolve_ref(committed, "refs/heads/exp") is None
    assert gitobjects.resolve_ref(committed, "refs/heads/exp/one") == head
    assert not gitobjects.ref_exists(committed, "refs/heads/ex")


def test_delete_ref(committed: Path) -> None:
    head = git.head_commit(committed)
    assert head is not None
    other = gitobjects.commit_tree(committed, base=head, changes={}, message="m")
    sh(committed, "branch", "gone")
    with pytest.raises(Conflict):
        gitobjects.delete_ref(committed, "refs/heads/gone", old=other)
    assert gitobjects.ref_exists(committed, "refs/heads/gone")
    gitobjects.delete_ref(committed, "refs/heads/gone", old=head)
    assert not gitobjects.ref_exists(committed, "refs/heads/gone")
    with pytest.raises(NotFound):
        gitobjects.delete_ref(committed, "refs/heads/gone", old=head)
    with pytest.raises(UsageError):
        gitobjects.delete_ref(committed, "refs/heads/main", old="0" * 40)  # would delete blindly


# -- reading history ------------------------------------------------------------------

def test_rev_list(committed: Path) -> None:
    c1 = git.head_commit(committed)
    (committed / "b").write_text("b")
    c2 = commit_all(committed)
    sh(committed, "checkout", "-q", "-b", "side", c1)
    (committed / "s").write_text("s")
    c3 = commit_all(committed)
    sh(committed, "checkout", "-q", "main")
    sh(committed, "tag", "light", c1)
    sh(committed, "tag", "-a", "-m", "annotated", "ann", c1)
    blob = gitobjects.hash_objects(committed, [b"tagged blob"])[0]
    sh(committed, "tag", "blobtag", blob)
    assert sorted(git.rev_list(committed, all_branches=True)) == sorted([c2, c3])
    assert git.rev_list(committed, all_tags=True) == [c1]
    assert sorted(git.rev_list(committed, all_branches=True, all_tags=True)) == sorted([c1, c2, c3])
    assert sorted(git.rev_list(committed, all_commits=True)) == sorted([c1, c2, c3])
    assert git.rev_list(committed) == []


def tally_files(path: str) -> bool:
    return path.endswith(".tally") or path == "tally.lock"


def test_read_files_at(committed: Path) -> None:
    (committed / "tally.lock").write_text("lock v1\n")
    (committed / "data").mkdir()
    (committed / "data" / "raw.tally").write_text("raw v1\n")
    (committed / "deep" / "er" / "est").mkdir(parents=True)
    (committed / "deep" / "er" / "est" / "m.tally").write_text("m\n")
    (committed / "deep" / "tally.lock").write_text("not at the root\n")
    for name in ODD_NAMES:
        (committed / "data" / f"{name}.tally").write_text(name)
    (committed / "link.tally").symlink_to("tally.lock")  # symlinks are not pointer files
    c1 = commit_all(committed)
    (committed / "data" / "raw.tally").write_text("raw v2\n")
    (committed / "tally.lock").unlink()
    c2 = commit_all(committed)

    want1 = {"tally.lock": b"lock v1\n", "data/raw.tally": b"raw v1\n",
             "deep/er/est/m.tally": b"m\n",
             **{f"data/{n}.tally": n.encode() for n in ODD_NAMES}}
    assert gitobjects.read_files_at(committed, c1, tally_files) == want1
    want2 = {**want1, "data/raw.tally": b"raw v2\n"}
    del want2["tally.lock"]
    with gitobjects.TreeReader(committed) as reader:  # shared cache across commits stays correct
        assert reader.read_files(c1, tally_files) == want1
        assert reader.read_files(c2, tally_files) == want2
        assert reader.read_files(c1, tally_files) == want1
        assert reader.read_files(c2, lambda p: p == "a.txt") == {"a.txt": b"a\n"}
        with pytest.raises(NotFound):
            reader.read_files("f" * 40, tally_files)
        assert reader.read_files("main~1", tally_files) == want1


def test_read_files_at_missing_commit(committed: Path) -> None:
    with pytest.raises(NotFound):
        gitobjects.read_files_at(committed, "nope", tally_files)
    blob = gitobjects.hash_objects(committed, [b"x"])[0]
    with pytest.raises(NotFound):
        gitobjects.read_files_at(committed, blob, tally_files)


def test_show_file(committed: Path) -> None:
    (committed / "new\nline.txt").write_bytes(b"\0binary\xff")
    commit_all(committed)
    assert gitobjects.show_file(committed, "HEAD", "a.txt") == b"a\n"
    assert gitobjects.show_file(committed, "HEAD", "new\nline.txt") == b"\0binary\xff"
    assert gitobjects.show_file(committed, "HEAD", "nope.txt") is None
    assert gitobjects.show_file(committed, "HEAD", "src") is None  # a directory is not a file
    assert gitobjects.show_file(committed, "HEAD~1", "new\nline.txt") is None
    with pytest.raises(NotFound):
        gitobjects.show_file(committed, "no-such-rev", "a.txt")


def test_sha256_repository(tmp_path: Path) -> None:
    root = tmp_path / "repo256"
    root.mkdir()
    if subprocess.run(["git", "init", "-q", "--object-format=sha256"], cwd=root).returncode:
        pytest.skip("this git cannot make SHA-256 repositories")
    sh(root, "config", "user.name", "T")
    sh(root, "config", "user.email", "t@example.com")
    (root / "p.tally").write_text("p")
    base = commit_all(root)
    assert len(base) == 64 and git.head_commit(root) == base
    new = gitobjects.commit_tree(root, base=base, changes={"p.tally": None, "q/r.tally": b"r"},
                          message="m", executable={"q/r.tally"})
    gitobjects.update_ref(root, "refs/heads/b", new, old=None)
    with pytest.raises(Conflict):
        gitobjects.update_ref(root, "refs/heads/b", new, old=None)
    assert gitobjects.read_files_at(root, "b", tally_files) == {"q/r.tally": b"r"}
    assert gitobjects.read_files_at(root, base, tally_files) == {"p.tally": b"p"}


def test_git_failure_carries_stderr(tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    with pytest.raises(TallyError, match="not a git repository"):
        git.head_commit(plain)


_names = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="/\0"),
                 min_size=1, max_size=20).filter(
    lambda s: s not in (".", "..") and s.lower() != ".git" and len(s.encode()) < 200)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(files=st.dictionaries(st.lists(_names, min_size=1, max_size=3).map("/".join),
                             st.binary(max_size=64), min_size=1, max_size=5))
def test_commit_tree_round_trips_any_names(committed: Path, files: dict[str, bytes]) -> None:
    # A path that is a prefix directory of another is a file/dir clash; keep the longest.
    files = {p: c for p, c in files.items() if not any(q.startswith(p + "/") for q in files)}
    new = gitobjects.commit_tree(committed, base="HEAD", changes=files, message="m")
    for path, content in files.items():
        assert gitobjects.show_file(committed, new, path) == content
    got = gitobjects.read_files_at(committed, new, lambda p: p in files)
    assert got == files
