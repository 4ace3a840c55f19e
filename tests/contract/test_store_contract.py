"""The ObjectStore contract, run against every implementation (dulwich ObjectStoreTests
style), then what only the on-disk FileStore promises: physical forms per compression
policy, read-only objects, "already exists" freshening, ingest modes, and no temp file
left behind whatever happens."""

from __future__ import annotations

import errno
import os
import random
import stat
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from support import helpers
from cas.core import hashing
from cas.store import zstdframe as codec_mod
from cas.core import fsops as fsops_mod
from cas.store import objectstore as store_mod
from cas.store import writer as writer_mod
from cas.core.errors import CorruptObject, NotFound, ObjectMissing, StoreError, TallyError
from cas.store.objectstore import FileStore, MemoryStore, ObjectStore, StoreOptions

TEXT = b"".join(b"line %d of a very compressible text file\n" % i for i in range(2000))
RANDOM = random.Random(7).randbytes(50_000)
MISSING = "0" * 64


def damage_object(s: ObjectStore, oid: str) -> None:
    """Change an object's stored content without changing its id."""
    if isinstance(s, MemoryStore):
        s.corrupt(oid, s.get(oid) + b"!")
    else:
        helpers.rewrite(s.info(oid).path, lambda b: b[:-1] + bytes([b[-1] ^ 0xFF]) if b else b"!")


@pytest.fixture(params=["memory", "file"])
def any_store(request, tmp_path: Path) -> ObjectStore:
    if request.param == "memory":
        return MemoryStore()
    return FileStore(tmp_path / "store")


def file_store(tmp_path: Path, **opts) -> FileStore:
    return FileStore(tmp_path / "store", options=StoreOptions(**opts))


def put_known(s: FileStore, src: Path, oid: str) -> str:
    with s.writer() as w:
        return w.put_file(src, known_oid=oid)


def tmp_files(s: FileStore) -> list[str]:
    return sorted(os.listdir(s.tmp)) if s.tmp.exists() else []


# -- the contract -------------------------------------------------------------------------

class TestContract:
    def test_put_then_get_has_info(self, any_store: ObjectStore) -> None:
        oid = any_store.put_bytes(TEXT)
        assert oid == hashing.hash_bytes(TEXT)
        assert hashing.is_oid(oid)
        assert any_store.has(oid)
        assert any_store.get(oid) == TEXT
        info = any_store.info(oid)
        assert info.oid == oid and info.stored_size > 0

    def test_put_is_idempotent(self, any_store: ObjectStore) -> None:
        a = any_store.put_bytes(RANDOM)
        b = any_store.put_bytes(RANDOM)
        assert a == b
        assert list(any_store.iter_oids()) == [a]

    def test_empty_object(self, any_store: ObjectStore) -> None:
        oid = any_store.put_bytes(b"")
        assert oid == hashing.EMPTY_OID
        assert any_store.get(oid) == b""
        any_store.verify(oid)

    def test_large_object_takes_the_threaded_path(self, any_store: ObjectStore) -> None:
        data = random.Random(1).randbytes(5 * hashing.MMAP_THRESHOLD + 3)
        assert len(data) > hashing.MMAP_THRESHOLD
        oid = any_store.put_bytes(data)
        assert oid == hashing.hash_bytes(data)  # the threaded hash equals the plain one
        assert any_store.get(oid) == data
        any_store.verify(oid)

    def test_missing_object(self, any_store: ObjectStore) -> None:
        assert not any_store.has(MISSING)
        for call in (any_store.get, any_store.info, any_store.verify):
            with pytest.raises(ObjectMissing) as ei:
                call(MISSING)
            assert ei.value.oid == MISSING
            assert ei.value.exit_code == 3
            assert MISSING in str(ei.value)

    def test_iter_oids_lists_exactly_what_was_put(self, any_store: ObjectStore) -> None:
        oids = {any_store.put_bytes(b"object %d" % i) for i in range(40)}
        assert set(any_store.iter_oids()) == oids
        assert len(list(any_store.iter_oids())) == 40

    def test_delete(self, any_store: ObjectStore) -> None:
        keep = any_store.put_bytes(b"keep me")
        oid = any_store.put_bytes(RANDOM)
        assert any_store.delete(oid) > 0
        assert not any_store.has(oid)
        with pytest.raises(ObjectMissing):
            any_store.get(oid)
        assert any_store.delete(oid) == 0
        assert list(any_store.iter_oids()) == [keep]

    def test_open_streams_the_content(self, any_store: ObjectStore) -> None:
        oid = any_store.put_bytes(TEXT)
        with any_store.open(oid) as f:
            assert f.read() == TEXT

    def test_get_refuses_more_than_max_size(self, any_store: ObjectStore) -> None:
        oid = any_store.put_bytes(TEXT)
        assert any_store.get(oid, max_size=len(TEXT)) == TEXT
        with pytest.raises(CorruptObject) as ei:
            any_store.get(oid, max_size=len(TEXT) - 1)
        assert ei.value.oid == oid

    def test_damaged_content_is_corrupt_not_returned(self, any_store: ObjectStore) -> None:
        oid = any_store.put_bytes(RANDOM)
        damage_object(any_store, oid)
        for call in (any_store.get, any_store.verify):
            with pytest.raises(CorruptObject) as ei:
                call(oid)
            assert ei.value.oid == oid
            assert ei.value.exit_code == 5

    def test_concurrent_puts_of_one_object(self, any_store: ObjectStore) -> None:
        with ThreadPoolExecutor(8) as pool:
            oids = set(pool.map(lambda _: any_store.put_bytes(TEXT), range(32)))
        assert len(oids) == 1
        assert list(any_store.iter_oids()) == list(oids)


# -- FileStore: forms and policies --------------------------------------------------------

@pytest.mark.parametrize("policy,data,compressed", [
    ("auto", TEXT, True),
    ("auto", RANDOM, False),
    ("auto", b"short text", False),  # below the sampling minimum: not worth a frame
    ("none", TEXT, False),
    ("zstd", TEXT, True),
    ("zstd", RANDOM, True),
])
@pytest.mark.parametrize("via", ["bytes", "file"])
def test_physical_form_follows_the_policy(tmp_path: Path, policy: str, data: bytes,
                                          compressed: bool, via: str) -> None:
    s = file_store(tmp_path, compression=policy)
    if via == "bytes":
        oid = s.put_bytes(data)
    else:
        src = tmp_path / "src.dat"
        src.write_bytes(data)
        oid = s.put_file(src)
    raw, zst = Path(s.raw_path(oid)), Path(s.zst_path(oid))
    assert zst.exists() == compressed
    assert raw.exists() == (not compressed)
    assert s.info(oid).compressed == compressed
    assert s.get(oid) == data
    if compressed:
        assert zst.read_bytes()[:4] == b"\x28\xb5\x2f\xfd"  # a zstd frame
    else:
        assert raw.read_bytes() == data  # raw is exactly the content
    assert raw.parent.name == oid[:2] and raw.name == oid[2:]


def test_large_file_forms(tmp_path: Path) -> None:
    """Files above the mmap threshold go through the streamed copy/compress paths."""
    big_text = TEXT * 3
    big_rand = random.Random(3).randbytes(4 * hashing.MMAP_THRESHOLD)
    s = file_store(tmp_path, compression="auto")
    for name, data, compressed in (("t.txt", big_text, True), ("r.bin", big_rand, False)):
        assert len(data) > hashing.MMAP_THRESHOLD
        src = tmp_path / name
        src.write_bytes(data)
        oid = s.put_file(src)
        assert oid == hashing.hash_bytes(data)
        assert s.info(oid).compressed == compressed
        assert s.get(oid) == data
        s.verify(oid)


@pytest.mark.parametrize("name", ["data.csv.gz", "model.pt", "images.zip"])
def test_auto_leaves_compressed_formats_raw(tmp_path: Path, name: str) -> None:
    s = file_store(tmp_path, compression="auto")
    for size in (len(TEXT), 4 * hashing.MMAP_THRESHOLD):  # small and streamed paths
        src = tmp_path / f"{size}-{name}"
        src.write_bytes((TEXT * 20)[:size])  # compressible, but the suffix says it is not
        oid = s.put_file(src)
        assert not s.info(oid).compressed


def test_explicit_compress_overrides_the_policy(tmp_path: Path) -> None:
    s = file_store(tmp_path, compression="none")
    assert s.info(s.put_bytes(TEXT, compress=True)).compressed
    s2 = file_store(tmp_path / "2", compression="zstd")
    assert not s2.info(s2.put_bytes(TEXT, compress=False)).compressed


def test_a_reader_accepts_either_form(tmp_path: Path) -> None:
    """Objects written under one policy stay readable under every other."""
    oid_z = file_store(tmp_path, compression="zstd").put_bytes(TEXT)
    oid_r = file_store(tmp_path, compression="none").put_bytes(RANDOM)
    for policy in ("auto", "zstd", "none"):
        s = file_store(tmp_path, compression=policy)
        assert s.get(oid_z) == TEXT and s.get(oid_r) == RANDOM
        assert set(s.iter_oids()) == {oid_z, oid_r}


@pytest.mark.parametrize("opts", [{"compression": "gzip"}, {"fsync": "sometimes"},
                                  {"zstd_level": 0}, {"zstd_level": 20}])
def test_bad_store_options(opts: dict) -> None:
    with pytest.raises(StoreError):
        StoreOptions(**opts)


@pytest.mark.parametrize("fsync", ["batch", "each", "off"])
@pytest.mark.parametrize("policy", ["none", "zstd"])
def test_every_fsync_mode_publishes(tmp_path: Path, fsync: str, policy: str) -> None:
    s = file_store(tmp_path, compression=policy, fsync=fsync)
    src = tmp_path / "big"
    src.write_bytes(TEXT * 5)
    oids = [s.put_bytes(TEXT), s.put_file(src)]
    for oid in oids:
        s.verify(oid)
    assert tmp_files(s) == []


def test_iter_oids_ignores_foreign_files(tmp_path: Path) -> None:
    s = file_store(tmp_path)
    oid = s.put_bytes(TEXT)
    (s.objects / "zz").mkdir()
    (s.objects / "zz" / "not-an-id").write_bytes(b"x")
    (s.objects / "README").write_bytes(b"x")
    (s.objects / oid[:2] / "short").write_bytes(b"x")
    assert list(s.iter_oids()) == [oid]


# -- FileStore: permissions and freshening ----------------------------------------------

@pytest.mark.parametrize("policy,data", [("none", RANDOM), ("zstd", TEXT)])
def test_objects_are_read_only(tmp_path: Path, policy: str, data: bytes) -> None:
    s = file_store(tmp_path, compression=policy)
    src = tmp_path / "src"
    src.write_bytes(data)
    for oid in (s.put_bytes(data + b"x"), s.put_file(src)):
        assert stat.S_IMODE(os.stat(s.info(oid).path).st_mode) == 0o444


@pytest.mark.parametrize("policy,data", [("none", RANDOM), ("zstd", TEXT)])
def test_already_exists_freshens_the_mtime(tmp_path: Path, policy: str, data: bytes) -> None:
    s = file_store(tmp_path, compression=policy)
    src = tmp_path / "src"
    src.write_bytes(data)
    for put in (lambda: s.put_bytes(data), lambda: s.put_file(src),
                lambda: put_known(s, src, hashing.hash_bytes(data))):
        oid = put()
        path = s.info(oid).path
        os.utime(path, ns=(10**18, 10**18))  # 2001: well outside any grace period
        inode = os.stat(path).st_ino
        assert put() == oid
        st = os.stat(path)
        assert st.st_mtime_ns > 10**18, "an existing object was not freshened"
        assert st.st_ino == inode, "an existing object was rewritten"
        assert tmp_files(s) == []


def test_known_oid_reads_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    s = file_store(tmp_path)
    src = tmp_path / "src"
    src.write_bytes(TEXT)
    oid = s.put_file(src)
    hashed = helpers.CallCounter(monkeypatch, hashing, "hash_file")
    hashed_bytes = helpers.CallCounter(monkeypatch, hashing, "hash_bytes")
    assert put_known(s, src, oid) == oid
    assert len(hashed) == 0 and len(hashed_bytes) == 0


# -- FileStore: ingest modes --------------------------------------------------------------

@pytest.mark.parametrize("data", [RANDOM, RANDOM * 8], ids=["small", "above-mmap"])
def test_ingest_copy_makes_an_independent_object(tmp_path: Path, data: bytes) -> None:
    s = file_store(tmp_path, compression="none")
    src = tmp_path / "src"
    src.write_bytes(data)
    oid = s.put_file(src, ingest="copy")
    assert os.stat(s.raw_path(oid)).st_ino != os.stat(src).st_ino
    assert stat.S_IMODE(os.stat(src).st_mode) == 0o644  # the source is left alone
    src.write_bytes(b"changed afterwards")
    s.verify(oid)


@pytest.mark.parametrize("data", [RANDOM, RANDOM * 8], ids=["small", "above-mmap"])
def test_ingest_hardlink_shares_the_inode(tmp_path: Path, data: bytes) -> None:
    s = file_store(tmp_path, compression="zstd")  # linked data stays raw regardless
    src = tmp_path / "src"
    src.write_bytes(data)
    oid = s.put_file(src, ingest="hardlink")
    st = os.stat(src)
    assert os.stat(s.raw_path(oid)).st_ino == st.st_ino
    assert st.st_nlink == 2
    assert stat.S_IMODE(st.st_mode) == 0o444  # the workspace file is protected too
    assert not s.info(oid).compressed
    assert tmp_files(s) == []


def test_ingest_hardlink_keeps_an_executable_executable(tmp_path: Path) -> None:
    """Linking an executable in would strip its x bits (objects are 0444): copy it."""
    s = file_store(tmp_path, compression="none")
    src = tmp_path / "tool.sh"
    src.write_bytes(b"#!/bin/sh\n")
    src.chmod(0o755)
    oid = s.put_file(src, ingest="hardlink")
    assert stat.S_IMODE(os.stat(src).st_mode) == 0o755
    assert os.stat(s.raw_path(oid)).st_ino != os.stat(src).st_ino


def test_ingest_hardlink_across_devices_falls_back_to_copy(tmp_path: Path,
                                                           reflink_dir: Path) -> None:
    s = FileStore(reflink_dir / "store", options=StoreOptions(compression="none"))
    src = tmp_path / "src"  # another filesystem than the store
    src.write_bytes(RANDOM)
    oid = s.put_file(src, ingest="hardlink")
    assert os.stat(src).st_nlink == 1
    assert stat.S_IMODE(os.stat(src).st_mode) == 0o644
    s.verify(oid)


def test_ingest_reflink_clones(reflink_dir: Path) -> None:
    s = FileStore(reflink_dir / "store", options=StoreOptions(compression="zstd"))
    src = reflink_dir / "src"
    src.write_bytes(RANDOM * 8)
    oid = s.put_file(src, ingest="reflink")
    obj = Path(s.raw_path(oid))
    assert obj.exists() and not s.info(oid).compressed  # clones are raw by nature
    assert os.stat(obj).st_ino != os.stat(src).st_ino
    assert stat.S_IMODE(os.stat(src).st_mode) == 0o644  # the source stays writable
    src.write_bytes(b"overwritten")  # copy-on-write: the object keeps its bytes
    s.verify(oid)
    assert tmp_files(s) == []


def test_ingest_reflink_falls_back_to_copy_where_it_cannot(tmp_path: Path) -> None:
    from cas.core.fsops import can_reflink
    if can_reflink(tmp_path):
        pytest.skip("tmp_path can clone; this test needs a filesystem that cannot")
    s = file_store(tmp_path, compression="none")
    src = tmp_path / "src"
    src.write_bytes(RANDOM)
    oid = s.put_file(src, ingest="reflink")
    assert os.stat(s.raw_path(oid)).st_ino != os.stat(src).st_ino
    s.verify(oid)
    assert tmp_files(s) == []


def test_unknown_ingest_mode(tmp_path: Path) -> None:
    s = file_store(tmp_path)
    src = tmp_path / "src"
    src.write_bytes(b"x")
    with pytest.raises(TallyError, match="unknown ingest mode"):
        s.put_file(src, ingest="teleport")
    assert tmp_files(s) == []


# -- FileStore: writers, batches and failures --------------------------------------------

def test_writer_publishes_at_flush_in_insertion_order(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    s = file_store(tmp_path, compression="none")
    linked: list[str] = []
    real_link = os.link

    def spy(src, dst, *a, **kw):
        real_link(src, dst, *a, **kw)  # raises when the shard dir is not there yet
        if os.fspath(dst).startswith(os.fspath(s.objects)):
            linked.append(Path(dst).parent.name + Path(dst).name)

    monkeypatch.setattr(store_mod.os, "link", spy)
    monkeypatch.setattr(writer_mod, "BATCH_LIMIT", 1000)
    blobs = [b"blob %d" % i for i in range(10)]
    with s.writer() as w:
        oids = [w.put_bytes(b) for b in blobs]
        assert not any(s.has(o) for o in oids), "visible before flush"
        tree_oid = w.put_bytes(b"a tree naming them all")
    assert linked == oids + [tree_oid]  # blobs before the tree that names them
    assert w.written == 11


@pytest.mark.parametrize("n,barrier", [(3, "fsync"), (writer_mod.SMALL_BATCH, "fsync"),
                                       (writer_mod.SMALL_BATCH + 1, "syncfs")])
def test_batch_barrier_by_size(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                               n: int, barrier: str) -> None:
    """Small batches fsync each temp file; larger ones pay for one syncfs.

    Either way every temp file is durable before the first link(2) publishes anything.
    """
    monkeypatch.setattr(writer_mod, "BATCH_LIMIT", 1000)
    s = file_store(tmp_path, compression="none")
    events: list[tuple[str, str]] = []
    real_link, real_fsync, real_syncfs = os.link, fsops_mod.fsync_file, writer_mod.syncfs
    # fsync_all (the small-batch barrier) calls fsops.fsync_file, from several threads
    monkeypatch.setattr(fsops_mod, "fsync_file",
                        lambda p: (events.append(("fsync", os.fspath(p))), real_fsync(p)))
    monkeypatch.setattr(writer_mod, "syncfs",
                        lambda p: (events.append(("syncfs", os.fspath(p))), real_syncfs(p)))

    def link(src, dst, *a, **kw):
        real_link(src, dst, *a, **kw)  # raises when the shard dir is not there yet
        events.append(("link", os.fspath(src)))

    monkeypatch.setattr(writer_mod.os, "link", link)
    with s.writer() as w:
        for i in range(n):
            w.put_bytes(b"durable %d" % i)
    kinds = [k for k, _ in events]
    first_link = kinds.index("link")
    assert "link" not in kinds[:first_link] and kinds[first_link:] == ["link"] * n
    if barrier == "syncfs":
        assert kinds[:first_link] == ["syncfs"]
    else:
        synced = {p for k, p in events[:first_link] if k == "fsync"}
        assert kinds[:first_link] == ["fsync"] * n
        assert synced == {p for k, p in events[first_link:]}  # exactly the temps published


def test_batch_limit_flushes_automatically(tmp_path: Path) -> None:
    s = file_store(tmp_path, compression="none")
    n = 3 * writer_mod.BATCH_LIMIT + 1
    with s.writer() as w:
        oids = [w.put_bytes(b"item %d" % i) for i in range(n)]
        published = sum(s.has(o) for o in oids)
        assert published == 3 * writer_mod.BATCH_LIMIT  # the last one is still pending
    assert all(s.has(o) for o in oids)
    assert tmp_files(s) == []


def test_exception_mid_batch_aborts_unpublished_work(tmp_path: Path) -> None:
    s = file_store(tmp_path, compression="auto")
    src = tmp_path / "big"
    src.write_bytes(TEXT * 4)  # the streamed, compressed path
    with pytest.raises(RuntimeError, match="boom"):
        with s.writer() as w:
            a = w.put_bytes(RANDOM)
            b = w.put_file(src)
            assert len(tmp_files(s)) == 2
            raise RuntimeError("boom")
    assert not s.has(a) and not s.has(b)
    assert tmp_files(s) == []
    assert list(s.iter_oids()) == []


def test_failure_reading_the_source_leaves_no_temp(tmp_path: Path) -> None:
    s = file_store(tmp_path)
    with pytest.raises(NotFound):
        s.put_file(tmp_path / "does-not-exist")
    assert tmp_files(s) == []


def test_compressed_output_is_verified_before_publishing(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """restic's verifyCiphertext: a compressor that produces the wrong bytes is caught."""
    import zstandard

    class Liar:
        def compress(self, data: bytes) -> bytes:
            return zstandard.ZstdCompressor().compress(data[:-1] + b"?")

    monkeypatch.setattr(codec_mod, "cctx", lambda level: Liar())
    s = file_store(tmp_path, compression="zstd")
    with pytest.raises(CorruptObject, match="failed verification"):
        s.put_bytes(TEXT)
    assert list(s.iter_oids()) == [] and tmp_files(s) == []


@pytest.mark.parametrize("code,exc", [(errno.ENOSPC, StoreError), (errno.EROFS, StoreError),
                                      (errno.EACCES, StoreError)])
def test_full_or_read_only_store_when_publishing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                 code: int, exc: type) -> None:
    s = file_store(tmp_path, compression="none")
    real_link = os.link

    def failing(src, dst, *a, **kw):
        if os.fspath(dst).startswith(os.fspath(s.objects)):
            raise OSError(code, os.strerror(code), dst)
        return real_link(src, dst, *a, **kw)

    monkeypatch.setattr(store_mod.os, "link", failing)
    with pytest.raises(exc) as ei:
        with s.writer() as w:
            for i in range(5):
                w.put_bytes(b"object %d" % i)
    assert ei.value.exit_code == 6
    assert "publishing an object" in ei.value.message
    assert tmp_files(s) == [] and list(s.iter_oids()) == []


# A full disk while a temp file is written: tests/contract/test_disk_errors.py (pyfakefs).


def test_writers_in_threads_share_one_batch(tmp_path: Path) -> None:
    s = file_store(tmp_path, compression="auto")
    datas = [TEXT + b"%d" % i for i in range(50)] + [RANDOM + b"%d" % i for i in range(50)]
    lock = threading.Lock()
    got: list[str] = []
    with s.writer() as w:
        def put(d: bytes) -> None:
            oid = w.put_bytes(d)
            with lock:
                got.append(oid)
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(put, datas * 2))
    assert set(got) == set(s.iter_oids())
    assert len(set(got)) == 100
    for oid in set(got):
        s.verify(oid)
    assert tmp_files(s) == []


def test_fsync_all_syncs_every_path_and_reports_a_failure(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """The concurrent barrier: every file fsynced before it returns; a failing fsync is
    raised to the caller (after the other threads finished), never lost in a thread."""
    paths = []
    for i in range(fsops_mod.FSYNC_THREADS * 2 + 3):
        p = tmp_path / f"f{i}"
        p.write_bytes(b"x")
        paths.append(os.fspath(p))
    done: list[str] = []
    lock = threading.Lock()
    real = fsops_mod.fsync_file

    def record(p):
        real(p)
        with lock:
            done.append(p)

    monkeypatch.setattr(fsops_mod, "fsync_file", record)
    fsops_mod.fsync_all(paths)
    assert sorted(done) == sorted(paths)

    def failing(p):
        if p == paths[5]:
            raise OSError(errno.EIO, "I/O error", p)
        record(p)

    done.clear()
    monkeypatch.setattr(fsops_mod, "fsync_file", failing)
    with pytest.raises(OSError) as info:
        fsops_mod.fsync_all(paths)
    assert info.value.errno == errno.EIO
    fsops_mod.fsync_all([os.fspath(tmp_path)], directories=True)  # a directory: best effort
