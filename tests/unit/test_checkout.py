"""Checkout: the link-mode matrix (dvc-data's test_determine_relinking style), touching
only what differs, never destroying user work without force, and hostile trees."""

from __future__ import annotations

import os
import shutil
import stat
from dataclasses import dataclass
from pathlib import Path

import pytest

from support import helpers
from cas.workspace import checkout as co
from cas.workspace import materialize
from cas.objects import envelope
from cas.core import hashing
from cas.objects import tree
from cas.workspace import snapshot as workspace
from cas.core.errors import Corruption, ObjectMissing, UsageError, WouldOverwrite
from cas.workspace.statcache import StatCache
from cas.store.objectstore import FileStore, StoreOptions

LINK_MODES = ["reflink", "hardlink", "symlink", "copy"]


@dataclass
class Env:
    """A store, its stat cache, and a place for sources and workspaces."""

    base: Path
    store: FileStore
    statcache: StatCache

    def put_dir(self, spec: helpers.Spec, name: str = "src") -> tuple[Path, str]:
        """Write `spec` under base/name and store it; return (source dir, tree id)."""
        src = helpers.write_tree(self.base / name, spec)
        with self.store.writer() as w:
            snap = workspace.snapshot(src, statcache=self.statcache, writer=w, ingest="copy")
        return src, snap.oid

    def checkout(self, oid: str, dest: Path, links: tuple[str, ...] = ("copy",), *,
                 force: bool = False, is_dir: bool = True, mode: int = 0o644) -> co.CheckoutReport:
        return co.checkout(self.store, co.Target(oid, is_dir, mode), dest, links=links,
                           statcache=self.statcache, force=force)

    def object_path(self, oid: str) -> str:
        return os.path.abspath(self.store.raw_path(oid))


def make_env(base: Path, compression: str = "none") -> Env:
    tally = base / ".tally"
    return Env(base, FileStore(tally, options=StoreOptions(compression=compression)),
               StatCache(tally / "statcache.db", clock_dir=tally / "tmp"))


@pytest.fixture
def env(tmp_path: Path) -> Env:
    # Raw objects, so every link mode can apply (a zstd object can only be copied).
    return make_env(tmp_path)


def env_for(request, mode: str, tmp_path: Path) -> Env:
    """An Env on a filesystem that can do `mode` (reflink: TALLY_REFLINK_DIR, else skip)."""
    if mode == "reflink":
        return make_env(request.getfixturevalue("reflink_dir"))
    return make_env(tmp_path)


@pytest.fixture(params=LINK_MODES)
def mode_env(request, tmp_path: Path) -> tuple[str, Env]:
    """Each link mode, on a filesystem that can do it."""
    return request.param, env_for(request, request.param, tmp_path)


def blob_oids(env: Env, oid: str) -> dict[str, tree.Entry]:
    return dict(tree.walk(oid, lambda o: tree.decode(env.store.get(o))))


def leftovers(root: Path) -> list[str]:
    return [p for p in helpers.listing(root) if co.TMP_PREFIX in p]


# -- the link-mode matrix ---------------------------------------------------------------------

def test_link_mode_matrix(mode_env: tuple[str, Env]) -> None:
    mode, env = mode_env
    src, oid = env.put_dir(helpers.rich_spec())
    dest = env.base / "ws" / "data"
    report = env.checkout(oid, dest, (mode,))

    assert helpers.read_tree(dest) == helpers.read_tree(src)  # identical bytes, bits, links
    entries = blob_oids(env, oid)
    assert sorted(report.written) == sorted(entries)
    assert sum(report.modes.values()) == len(entries)
    for rel, e in entries.items():
        p = dest / rel
        st = os.lstat(p)
        if e.kind == tree.SYMLINK:
            assert os.readlink(p) == env.store.get(e.oid).decode()
            continue
        obj = os.stat(env.object_path(e.oid))
        linked = mode in ("hardlink", "symlink") and e.mode == 0o644
        if linked and mode == "hardlink":
            assert st.st_ino == obj.st_ino, rel
            assert stat.S_IMODE(st.st_mode) == 0o444, f"{rel}: a hardlinked file must be read-only"
        elif linked and mode == "symlink":
            assert stat.S_ISLNK(st.st_mode), rel
            assert os.readlink(p) == env.object_path(e.oid)
            assert stat.S_IMODE(os.stat(p).st_mode) == 0o444
        else:  # reflink, copy, and executables in every mode: an independent file
            assert stat.S_ISREG(st.st_mode) and st.st_ino != obj.st_ino, rel
            assert stat.S_IMODE(st.st_mode) == e.mode, rel
    files = [e for e in entries.values() if e.kind == tree.FILE]
    n_links = len(entries) - len(files)
    if mode in ("reflink", "copy"):
        assert report.modes == {mode: len(files), "symlink": n_links}
    else:  # the one executable falls through to copy (it would lose its x bits)
        n_exe = sum(e.mode == 0o755 for e in files)
        assert n_exe == 1
        expected = {mode: len(files) - n_exe, "copy": n_exe}
        expected["symlink"] = expected.get("symlink", 0) + n_links
        assert report.modes == expected
    for e in files:
        env.store.verify(e.oid)  # nothing written through a link into the store
    assert leftovers(env.base) == []


def test_link_order_falls_through(env: Env, tmp_path: Path) -> None:
    """Compressed objects can only be copied: linked modes fall through to the next."""
    zenv = make_env(tmp_path / "z", compression="zstd")
    src, oid = zenv.put_dir({"a.txt": "compressible\n" * 500, "b.txt": "also\n" * 1000})  # > writer.RAW_MAX
    report = zenv.checkout(oid, tmp_path / "out", ("hardlink", "symlink", "copy"))
    assert report.modes == {"copy": 2}
    assert helpers.read_tree(tmp_path / "out") == helpers.read_tree(src)


@pytest.mark.parametrize("mode", ["hardlink", "symlink"])
def test_unprotect_makes_a_writable_copy(env: Env, mode: str) -> None:
    src, oid = env.put_dir({"a.txt": "alpha\n", "sub/b.txt": "beta\n"})
    dest = env.base / "ws"
    env.checkout(oid, dest, (mode,))
    p = dest / "a.txt"
    a_oid = hashing.hash_bytes(b"alpha\n")
    assert co.unprotect(p) is True
    st = os.lstat(p)
    assert stat.S_ISREG(st.st_mode) and st.st_nlink == 1
    assert stat.S_IMODE(st.st_mode) & 0o200
    assert p.read_bytes() == b"alpha\n"
    p.write_bytes(b"edited\n")
    env.store.verify(a_oid)  # the store's copy is untouched
    assert co.unprotect(p) is False  # already independent
    assert os.stat(dest / "sub" / "b.txt").st_mode & 0o200 == 0  # the others stay protected


@pytest.mark.parametrize("mode", ["copy", "reflink"])
def test_unprotect_leaves_independent_files_alone(request, tmp_path: Path, mode: str) -> None:
    env = env_for(request, mode, tmp_path)
    src, oid = env.put_dir({"a.txt": "alpha\n"})
    dest = env.base / "ws"
    env.checkout(oid, dest, (mode,))
    ino = os.stat(dest / "a.txt").st_ino
    assert co.unprotect(dest / "a.txt") is False
    assert os.stat(dest / "a.txt").st_ino == ino


def test_empty_tree_and_empty_file(env: Env) -> None:
    _, empty = env.put_dir({}, name="empty")
    dest = env.base / "ws"
    assert env.checkout(empty, dest).written == []
    assert dest.is_dir() and list(dest.iterdir()) == []
    _, oid = env.put_dir({"e": b""}, name="one-empty")
    env.checkout(oid, dest)
    assert (dest / "e").read_bytes() == b""


@pytest.mark.parametrize("mode", ["copy", "hardlink"])
def test_single_file_target(env: Env, mode: str) -> None:
    data = b"a single tracked file\n" * 10
    oid = env.store.put_bytes(data)
    dest = env.base / "model.bin"
    r = env.checkout(oid, dest, (mode,), is_dir=False, mode=0o644)
    assert r.written == [""] and dest.read_bytes() == data
    assert env.checkout(oid, dest, (mode,), is_dir=False).written == []
    exe = env.base / "tool.sh"
    env.checkout(oid, exe, (mode,), is_dir=False, mode=0o755)
    assert stat.S_IMODE(os.stat(exe).st_mode) == 0o755


# -- touch only what differs --------------------------------------------------------------------

@pytest.mark.parametrize("mode", ["copy", "hardlink", "symlink"])
def test_only_what_differs_is_touched(env: Env, mode: str) -> None:
    spec = helpers.rich_spec()
    _, old = env.put_dir(spec, name="v1")
    spec2 = dict(spec)
    spec2["a.txt"] = "alpha, changed\n"
    spec2["sub/new.txt"] = "new file\n"
    del spec2["other/only.txt"]
    src2, new = env.put_dir(spec2, name="v2")

    dest = env.base / "ws"
    env.checkout(old, dest, (mode,))
    before = {rel: (os.lstat(dest / rel).st_ino, os.lstat(dest / rel).st_mtime_ns)
              for rel in blob_oids(env, old)}
    report = env.checkout(new, dest, (mode,))
    assert sorted(report.written) == ["a.txt", "sub/new.txt"]
    assert report.deleted == ["other/only.txt"]
    assert report.unchanged == len(blob_oids(env, new)) - 2
    assert not (dest / "other").exists(), "an emptied directory was left behind"
    for rel, (ino, mtime) in before.items():
        if rel in ("a.txt", "other/only.txt"):
            continue
        st = os.lstat(dest / rel)
        assert (st.st_ino, st.st_mtime_ns) == (ino, mtime), f"{rel} was rewritten"
    assert helpers.read_tree(dest) == helpers.read_tree(src2)


def test_a_repeated_checkout_reads_nothing(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    _, oid = env.put_dir(helpers.rich_spec())
    dest = env.base / "ws"
    env.checkout(oid, dest)
    hashed = helpers.CallCounter(monkeypatch, hashing, "hash_file")
    report = env.checkout(oid, dest)
    assert report.written == [] and report.deleted == []
    assert len(hashed) == 0, "checkout re-hashed files it had just written"


# -- user work is never destroyed without force ----------------------------------------------

@pytest.fixture
def checked_out(env: Env) -> tuple[Env, Path, str, Path]:
    src, oid = env.put_dir(helpers.rich_spec())
    dest = env.base / "ws" / "data"
    env.checkout(oid, dest)
    return env, dest, oid, src


def test_refuses_to_overwrite_a_modified_file(checked_out) -> None:
    env, dest, oid, src = checked_out
    (dest / "sub" / "b.csv").write_text("my own edits\n")
    (dest / "a.txt").write_text("more edits\n")
    with pytest.raises(WouldOverwrite) as ei:
        env.checkout(oid, dest)
    assert ei.value.paths == ["data/a.txt", "data/sub/b.csv"]
    assert "data/sub/b.csv" in str(ei.value) and ei.value.exit_code == 4
    assert (dest / "sub" / "b.csv").read_text() == "my own edits\n"  # nothing touched
    assert (dest / "a.txt").read_text() == "more edits\n"
    report = env.checkout(oid, dest, force=True)
    assert sorted(report.written) == ["a.txt", "sub/b.csv"]
    assert helpers.read_tree(dest) == helpers.read_tree(src)


def test_a_change_the_store_can_undo_is_not_user_work(checked_out) -> None:
    """A file whose current content is itself stored can be restored: no refusal."""
    env, dest, oid, src = checked_out
    (dest / "sub" / "b.csv").write_bytes((src / "a.txt").read_bytes())
    report = env.checkout(oid, dest)
    assert report.written == ["sub/b.csv"]
    assert helpers.read_tree(dest) == helpers.read_tree(src)


def test_an_untracked_file_in_a_tracked_dir_blocks_unless_force(checked_out) -> None:
    env, dest, oid, src = checked_out
    (dest / "sub" / "mine.txt").write_text("not tracked\n")
    (dest / "newdir").mkdir()
    (dest / "newdir" / "notes.txt").write_text("also mine\n")
    with pytest.raises(WouldOverwrite) as ei:
        env.checkout(oid, dest)
    assert ei.value.paths == ["data/newdir/notes.txt", "data/sub/mine.txt"]
    assert (dest / "sub" / "mine.txt").exists()
    report = env.checkout(oid, dest, force=True)
    assert sorted(report.deleted) == ["newdir/notes.txt", "sub/mine.txt"]
    assert helpers.read_tree(dest) == helpers.read_tree(src)
    assert not (dest / "newdir").exists()


def test_a_file_where_a_directory_must_go(checked_out) -> None:
    env, dest, oid, src = checked_out
    shutil.rmtree(dest / "sub")
    (dest / "sub").write_text("a file in the way\n")
    with pytest.raises(WouldOverwrite) as ei:
        env.checkout(oid, dest)
    assert ei.value.paths == ["data/sub"]
    assert (dest / "sub").read_text() == "a file in the way\n"
    env.checkout(oid, dest, force=True)
    assert helpers.read_tree(dest) == helpers.read_tree(src)


def test_a_directory_where_a_file_must_go(checked_out) -> None:
    env, dest, oid, src = checked_out
    (dest / "a.txt").unlink()
    (dest / "a.txt").mkdir()
    (dest / "a.txt" / "inner.txt").write_text("user data\n")
    with pytest.raises(WouldOverwrite) as ei:
        env.checkout(oid, dest)
    assert ei.value.paths == ["data/a.txt/inner.txt"]
    assert (dest / "a.txt" / "inner.txt").exists()
    env.checkout(oid, dest, force=True)
    assert helpers.read_tree(dest) == helpers.read_tree(src)


def test_an_empty_directory_where_a_file_must_go_is_replaced(checked_out) -> None:
    env, dest, oid, src = checked_out
    (dest / "a.txt").unlink()
    (dest / "a.txt").mkdir()
    assert env.checkout(oid, dest).written == ["a.txt"]
    assert helpers.read_tree(dest) == helpers.read_tree(src)


def test_a_single_file_target_over_a_directory(env: Env) -> None:
    oid = env.store.put_bytes(b"data\n")
    dest = env.base / "thing"
    dest.mkdir()
    (dest / "user.txt").write_text("mine\n")
    with pytest.raises(WouldOverwrite) as ei:
        env.checkout(oid, dest, is_dir=False)
    assert ei.value.paths == ["thing"]
    assert (dest / "user.txt").exists()
    env.checkout(oid, dest, is_dir=False, force=True)
    assert dest.read_bytes() == b"data\n"


def test_a_user_symlink_to_elsewhere_is_never_written_through(checked_out) -> None:
    env, dest, oid, src = checked_out
    outside = env.base / "outside"
    outside.mkdir()
    shutil.rmtree(dest / "sub")
    (dest / "sub").symlink_to(outside, target_is_directory=True)
    with pytest.raises(WouldOverwrite) as ei:
        env.checkout(oid, dest)
    assert ei.value.paths == ["data/sub"]
    env.checkout(oid, dest, force=True)
    assert list(outside.iterdir()) == []
    assert not (dest / "sub").is_symlink()
    assert helpers.read_tree(dest) == helpers.read_tree(src)


def test_a_missing_object_raises_object_missing(env: Env) -> None:
    _, oid = env.put_dir({"a.txt": "a\n", "b.txt": "b\n"})
    b_oid = hashing.hash_bytes(b"b\n")
    env.store.delete(b_oid)
    dest = env.base / "ws"
    with pytest.raises(ObjectMissing) as ei:
        env.checkout(oid, dest)
    assert ei.value.oid == b_oid
    assert not (dest / "b.txt").exists()
    assert leftovers(env.base) == []


def test_an_interrupted_checkout_leaves_no_temp_file(env: Env,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    _, oid = env.put_dir({f"f{i}.txt": f"file {i}\n" for i in range(20)})
    dest = env.base / "ws"
    calls = []
    real = materialize.write_all  # how a small file's checked bytes are written

    def dies(fd, data):
        calls.append(fd)
        if len(calls) == 7:
            real(fd, data)  # the temp file exists: now the process is "interrupted"
            raise KeyboardInterrupt
        return real(fd, data)

    monkeypatch.setattr(materialize, "write_all", dies)
    with pytest.raises(KeyboardInterrupt):
        env.checkout(oid, dest)
    assert leftovers(env.base) == []
    monkeypatch.undo()
    report = env.checkout(oid, dest)  # a rerun completes what is missing
    assert len(report.written) == 20 - 6
    assert len(list(dest.iterdir())) == 20


# -- hostile trees ------------------------------------------------------------------------------

def hostile(env: Env, rows: list, total_files: int | None = None) -> str:
    """Store a tree built by hand with envelope.encode (bypassing tree.make's checks)."""
    total = sum(r[3] for r in rows if r[1] != tree.SYMLINK)
    files = sum(1 for r in rows if r[1] == tree.FILE) if total_files is None else total_files
    return env.store.put_bytes(envelope.encode(envelope.KIND_TREE, 1, [total, files, rows]))


def assert_nothing_outside(env: Env, before: set[str], dest: Path) -> None:
    rel_dest = os.path.relpath(dest, env.base)
    after = {p for p in helpers.listing(env.base)
             if not (p == rel_dest or p.startswith(rel_dest + "/") or p.startswith(".tally"))}
    assert after == {p for p in before if not p.startswith(".tally")}


@pytest.mark.parametrize("name", ["..", ".", "a/b", "../escape", "a\0b", ""])
def test_hostile_names_are_refused(env: Env, name: str) -> None:
    blob = env.store.put_bytes(b"payload\n")
    sub = hostile(env, [["x", tree.FILE, bytes.fromhex(blob), 8, 0o644]])
    oid = hostile(env, [[name, tree.DIR, bytes.fromhex(sub), 8, 0]], total_files=1)
    dest = env.base / "ws" / "data"
    before = helpers.listing(env.base)
    with pytest.raises(Corruption):  # FormatError: the decoder is the first fence
        env.checkout(oid, dest)
    assert_nothing_outside(env, before, dest)
    assert not dest.exists()


@pytest.mark.parametrize("name", ["..", "."])
def test_unsafe_paths_are_refused_even_past_the_decoder(env: Env, name: str) -> None:
    """The second fence: a tree that reached checkout without tree.decode's checks."""
    blob = env.store.put_bytes(b"payload\n")
    evil = tree.Tree((tree.Entry("x", tree.FILE, blob, 8, 0o644),), 8, 1)
    root = tree.Tree((tree.Entry(name, tree.DIR, "e" * 64, 8, 0),), 8, 1)
    trees = {"r" * 64: root, "e" * 64: evil}
    dest = env.base / "ws" / "data"
    before = helpers.listing(env.base)
    with pytest.raises(UsageError, match="refusing unsafe path"):
        co.checkout(env.store, co.Target("r" * 64, True), dest, links=("copy",),
                    statcache=env.statcache, load_tree=trees.__getitem__)
    assert_nothing_outside(env, before, dest)


@pytest.mark.parametrize("where,target", [
    ("l", "/etc/passwd"),
    ("l", "../outside"),
    ("l", "a/../../x"),
    ("sub/l", "../../x"),
    ("sub/deeper/l", "../../../etc"),
])
def test_escaping_symlinks_are_refused(env: Env, where: str, target: str) -> None:
    t = env.store.put_bytes(target.encode())
    rows = [[where.rsplit("/", 1)[-1], tree.SYMLINK, bytes.fromhex(t), len(target), 0]]
    oid = hostile(env, rows)
    for part in reversed(where.split("/")[:-1]):
        oid = hostile(env, [[part, tree.DIR, bytes.fromhex(oid), 0, 0]], total_files=0)
    dest = env.base / "ws" / "data"
    before = helpers.listing(env.base)
    with pytest.raises(UsageError, match="points outside its tree|absolute path"):
        env.checkout(oid, dest, ("copy",))
    assert not os.path.lexists(dest / where)
    assert_nothing_outside(env, before, dest)
    assert leftovers(env.base) == []


@pytest.mark.parametrize("where,target", [
    ("sub/l", "../a.txt"), ("sub/deeper/l", "../../a.txt"), ("l", "sub/./x/../b"), ("l", "."),
])
def test_relative_symlinks_inside_the_tree_are_kept(env: Env, where: str, target: str) -> None:
    src, oid = env.put_dir({"a.txt": "a\n", where: helpers.Link(target)})
    dest = env.base / "ws"
    env.checkout(oid, dest)
    assert os.readlink(dest / where) == target


def test_a_symlink_chain_cannot_escape(env: Env) -> None:
    """A target may not pass through another link of the tree (link -> ., evil -> link/..)."""
    _, oid = env.put_dir({"link": helpers.Link("."), "zevil": helpers.Link("link/..")})
    dest = env.base / "ws" / "data"
    try:
        env.checkout(oid, dest)
    except UsageError:
        return
    real = os.path.realpath(dest / "zevil")
    assert real == str(dest) or real.startswith(str(dest) + "/"), f"zevil resolves to {real}"
