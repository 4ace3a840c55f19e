"""Disk errors the real disk cannot produce on demand, on a fake filesystem (pyfakefs).

A full disk (ENOSPC), a directory the user may not write (EACCES: the fake runs as
an ordinary user, so permissions apply even when the tests run as root), another
filesystem (EXDEV), an I/O error in the middle of a write (EIO), and a filesystem
that does not tell names apart by case. Each test states what the code must leave
behind: no half-written object, the old pointer whole, an independent copy where a
link cannot cross filesystems, a typed error with the right exit code.

The fake stands in for the kernel only where cas/ reaches the filesystem through
Python (os, open, pathlib): a clone (FICLONE ioctl) is refused as a filesystem
without reflink refuses it, and copy_file_range as an old kernel refuses it, so
copies take their read/write loop. Its paths start at /fake, which does not exist on
the real disk, so the stat cache's SQLite file (opened by SQLite itself, not through
Python) cannot be created and the cache works from memory, as it does on a read-only
store. Known difference: the fake resets a file's mode on every os.open, so file
modes are not asserted here.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest
from pyfakefs.fake_filesystem import FakeFcntlModule
from pyfakefs.fake_filesystem_unittest import Patcher

from cas.core.errors import Conflict, StoreError, TallyError
from cas.objects import pointer, tree
from cas.store.objectstore import FileStore, StoreOptions
from cas.workspace import checkout as co
from cas.workspace.statcache import StatCache

ROOT = Path("/fake")
STORE = ROOT / "store"


class _NoClone(FakeFcntlModule):
    """fcntl on the fake filesystem: FICLONE is refused, as without reflink."""

    def ioctl(self, fd, request, arg=0, mutate_flag=True):
        raise OSError(errno.EOPNOTSUPP, "the fake filesystem cannot clone")


def _no_copy_file_range(*args, **kwargs):
    raise OSError(errno.ENOSYS, "no copy_file_range on the fake filesystem")


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch):
    """The fake filesystem, with /fake/store created; runs as an ordinary user."""
    assert not ROOT.exists()  # on the real disk: SQLite must find nothing there
    # On the real os module: the fake os module hands it every name it does not fake.
    monkeypatch.setattr(os, "copy_file_range", _no_copy_file_range)
    with Patcher(allow_root_user=False, modules_to_patch={"fcntl": _NoClone}) as patcher:
        patcher.fs.create_dir(STORE)
        yield patcher.fs


def fail_writes(fs, monkeypatch: pytest.MonkeyPatch, *, names: str, err: int,
                after: int = 0) -> None:
    """Make writes to files whose name starts with `names` fail with `err` once `after`
    bytes have been written to them: through the fake disk's space accounting
    (FakeFilesystem.change_disk_usage), which every change of a file's content asks."""
    written = [0]
    real = fs.change_disk_usage

    def change(usage_change, file_path, st_dev):
        name = os.path.basename(os.fsdecode(file_path))
        if usage_change > 0 and name.startswith(names):
            if written[0] + usage_change > after:
                raise OSError(err, os.strerror(err), file_path)
            written[0] += usage_change
        return real(usage_change, file_path, st_dev)
    monkeypatch.setattr(fs, "change_disk_usage", change)


def listing(path: Path) -> list[str]:
    out = []
    for dirpath, _, names in os.walk(path):
        out += [os.path.relpath(os.path.join(dirpath, n), path) for n in names]
    return sorted(out)


def store_tree(store: FileStore, files: dict[str, bytes]) -> str:
    """Store `files` (names in one directory) and their tree; return the tree's id."""
    with store.writer() as w:
        entries = [tree.Entry(n, tree.FILE, w.put_bytes(d), len(d), 0o644) for n, d in files.items()]
        return w.put_bytes(tree.encode(tree.make(entries, subtree_files={})), compress=True)


def statcache() -> StatCache:
    return StatCache(STORE / "statcache.db", clock_dir=STORE / "tmp")


# -- the store's writer ------------------------------------------------------------------

def test_a_full_disk_mid_batch_publishes_nothing_and_leaves_nothing(fake) -> None:
    fake.add_mount_point(os.fspath(STORE / "tmp"), total_size=64 * 1024)
    s = FileStore(STORE, options=StoreOptions(compression="none"))
    with pytest.raises(StoreError) as ei:
        with s.writer() as w:
            for i in range(3):
                w.put_bytes(os.urandom(10_000) + b"%d" % i)  # fits
            w.put_bytes(os.urandom(100_000))  # does not
    assert ei.value.exit_code == 6 and "no space left" in ei.value.message
    assert "gc" in ei.value.hint
    assert list(s.iter_oids()) == [] and listing(s.tmp) == []  # the three staged ones too
    assert fake.get_disk_usage(os.fspath(s.tmp)).used == 0


def test_a_full_disk_while_storing_a_file_leaves_nothing(fake) -> None:
    fake.add_mount_point(os.fspath(STORE / "tmp"), total_size=8 * 1024)
    src = fake.create_file(ROOT / "data.csv", contents=b"a,b\n" * 5000).path
    s = FileStore(STORE, options=StoreOptions(compression="none"))
    with pytest.raises(StoreError) as ei:
        s.put_file(src)
    assert ei.value.exit_code == 6 and "no space left" in ei.value.message
    assert list(s.iter_oids()) == [] and listing(s.tmp) == []


def test_an_io_error_mid_write_of_an_object_leaves_nothing(fake, monkeypatch) -> None:
    s = FileStore(STORE, options=StoreOptions(compression="none"))
    kept = s.put_bytes(b"stored before the disk went bad\n")
    fail_writes(fake, monkeypatch, names="obj-", err=errno.EIO)
    with pytest.raises(TallyError) as ei:
        s.put_bytes(os.urandom(30_000))
    assert "Input/output error" in ei.value.message and ei.value.exit_code == 1
    assert list(s.iter_oids()) == [kept] and listing(s.tmp) == []


@pytest.mark.parametrize("unwritable", ["objects", "tmp"])
def test_a_store_the_user_may_not_write_is_a_store_error(fake, unwritable: str) -> None:
    s = FileStore(STORE)
    s.ensure_dirs()
    os.chmod(STORE / unwritable, 0o555)
    with pytest.raises(StoreError) as ei:
        with s.writer() as w:
            w.put_bytes(b"one\n")
            w.put_bytes(b"two\n")
    assert ei.value.exit_code == 6 and "permission denied" in ei.value.message
    assert list(s.iter_oids()) == [] and listing(s.tmp) == []


def test_hardlink_ingest_across_filesystems_stores_a_copy(fake) -> None:
    fake.add_mount_point(os.fspath(ROOT / "work"))
    src = fake.create_file(ROOT / "work" / "model.bin", contents=b"weights " * 100).path
    s = FileStore(STORE)
    oid = s.put_file(src, ingest="hardlink")
    assert s.get(oid) == b"weights " * 100
    assert os.stat(src).st_nlink == 1  # the workspace file is not the object
    assert os.stat(s.raw_path(oid)).st_nlink == 1 and listing(s.tmp) == []


# -- pointers ----------------------------------------------------------------------------

OLD = pointer.Pointer(path="data", oid="ab" * 32, is_dir=True, size=10, files=2, mode=0)
NEW = OLD._replace(oid="cd" * 32, size=20, files=3)


@pytest.mark.parametrize("err", ["ENOSPC", "EIO", "EACCES"])
def test_a_failed_pointer_write_leaves_the_old_pointer(fake, monkeypatch, err: str) -> None:
    work = ROOT / "work"
    work.mkdir()
    pointer.write(work, OLD)
    if err == "EACCES":
        os.chmod(work, 0o555)
    else:
        fail_writes(fake, monkeypatch, names=".data.tally.tmp-", err=getattr(errno, err))
    with pytest.raises(TallyError) as ei:
        pointer.write(work, NEW)
    assert ei.value.exit_code == (1 if err == "EIO" else 6)  # StoreError for a full or locked disk
    assert ei.value.path == os.fspath(work / "data.tally")
    assert pointer.read(work, "data") == OLD
    assert os.listdir(work) == ["data.tally"]  # no temp file left beside it


def test_an_unreadable_pointer_is_a_store_error(fake) -> None:
    work = ROOT / "work"
    work.mkdir()
    path = pointer.write(work, OLD)
    os.chmod(path, 0o000)
    with pytest.raises(StoreError) as ei:
        pointer.read(work, "data")
    assert ei.value.path == os.fspath(path) and "permission denied" in ei.value.message


# -- checkout ----------------------------------------------------------------------------

FILES = {"a.txt": b"alpha\n" * 10, "b.bin": os.urandom(40_000), "c.txt": b""}


@pytest.mark.parametrize("links", [("hardlink", "copy"), ("reflink", "hardlink", "copy")])
def test_checkout_across_filesystems_falls_back_to_copies(fake, links) -> None:
    s = FileStore(STORE)
    oid = store_tree(s, FILES)
    fake.add_mount_point(os.fspath(ROOT / "work"))
    dest = ROOT / "work" / "data"
    report = co.checkout(s, co.Target(oid, True), dest, links=links, statcache=statcache())
    assert report.modes == {"copy": 3} and sorted(report.written) == sorted(FILES)
    for name, data in FILES.items():
        assert (dest / name).read_bytes() == data
        assert os.stat(dest / name).st_nlink == 1
    assert all(os.stat(s.raw_path(e.oid)).st_nlink == 1
               for e in tree.decode(s.get(oid)).entries)  # no object was linked out
    assert listing(ROOT / "work") == sorted(f"data/{n}" for n in FILES)  # no temp files


def test_names_differing_only_in_case_check_out_on_a_case_sensitive_filesystem(fake) -> None:
    s = FileStore(STORE)
    files = {"A.txt": b"upper\n", "a.txt": b"lower\n"}
    dest = ROOT / "work" / "data"
    co.checkout(s, co.Target(store_tree(s, files), True), dest, links=("copy",), statcache=statcache())
    assert {n: (dest / n).read_bytes() for n in os.listdir(dest)} == files


def test_an_io_error_mid_copy_leaves_the_old_file_whole(fake, monkeypatch) -> None:
    """The copy is written under a temp name and renamed over only when complete: an
    EIO after the first chunk leaves the previous version in place, and no temp file."""
    s = FileStore(STORE)
    v1 = store_tree(s, FILES)
    v2 = store_tree(s, {**FILES, "b.bin": os.urandom(40_000)})
    dest = ROOT / "work" / "data"
    co.checkout(s, co.Target(v1, True), dest, links=("copy",), statcache=statcache())
    fail_writes(fake, monkeypatch, names=".tally-tmp-", err=errno.EIO, after=16 * 1024)
    with pytest.raises(TallyError) as ei:
        co.checkout(s, co.Target(v2, True), dest, links=("copy",), statcache=statcache())
    assert "Input/output error" in ei.value.message
    assert (dest / "b.bin").read_bytes() == FILES["b.bin"]
    assert listing(dest) == sorted(FILES)


def test_checkout_into_a_directory_the_user_may_not_write(fake) -> None:
    s = FileStore(STORE)
    oid = store_tree(s, FILES)
    dest = ROOT / "work" / "data"
    dest.mkdir(parents=True)
    os.chmod(dest, 0o555)
    with pytest.raises(StoreError) as ei:
        co.checkout(s, co.Target(oid, True), dest, links=("copy",), statcache=statcache())
    assert ei.value.exit_code == 6 and "permission denied" in ei.value.message
    assert listing(dest) == []


# -- odd names ---------------------------------------------------------------------------

def test_names_that_differ_only_in_case_are_never_silently_merged(fake) -> None:
    """On a case-insensitive filesystem (macOS, Windows) `A.txt` and `a.txt` are one
    file: a checkout of a tree holding both must fail, naming the second, and never
    report both written while one overwrote the other."""
    fake.is_case_sensitive = False
    s = FileStore(STORE)
    oid = store_tree(s, {"A.txt": b"upper\n", "a.txt": b"lower\n", "b.txt": b"b\n"})
    dest = ROOT / "work" / "data"
    for links in (("copy",), ("hardlink", "copy")):
        with pytest.raises(TallyError) as ei:
            co.checkout(s, co.Target(oid, True), dest, links=links, statcache=statcache(),
                        force=True)
        assert isinstance(ei.value, Conflict) and ei.value.exit_code == 4, links
        assert ei.value.path == os.fspath(dest / "a.txt") and "differ only in case" in ei.value.message
        assert (dest / "A.txt").read_bytes() == b"upper\n"  # the first one is not overwritten
