"""The object store: put, get, has, open, verify by id, on disk and in memory.

On disk (`.tally/objects/`), an object lives in one of two physical forms under one
namespace, and a reader accepts either:

    objects/<aa>/<rest>        raw: exactly the content, so a workspace file can be a
                               reflink or hardlink of it
    objects/<aa>/<rest>.zst    one zstd frame whose decompressed bytes are the content

where <aa> is the first two hex digits of the id and <rest> the other 62 (sharding
keeps directories to ~1/256 of the objects).

Write protocol (spec/store.md, "Write ordering"): content goes to a temp file in
`.tally/tmp/` (same filesystem), is hashed *from what was written* (or, for linked
ingest, checked unchanged), made read-only, made durable, and only then linked into
place with link(2), which never overwrites. EEXIST is success and freshens the mtime so
gc's grace period covers the object. A Writer batches this: it writes many temp files,
makes them durable with one syncfs(2), then publishes them in insertion order, which is
what keeps "blobs before the trees that name them" true at every instant.
"""

from __future__ import annotations

import errno
import itertools
import os
import threading
import uuid
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Iterator

import zstandard

from . import hashing
from .errors import CorruptObject, ObjectMissing, StoreError, TallyError, from_os_error
from .fsops import _write_all, copy_fd, fsync_dir, reflink, syncfs

ZST_SUFFIX = ".zst"
OBJECT_MODE = 0o444
# Content-size sample used by compression=auto to decide whether zstd pays off.
SAMPLE_SIZE = 64 * 1024  # bytes
AUTO_MIN_SAVING = 0.10  # compress only when the sample shrinks by at least 10%
# Files at least this large compress with zstd's worker threads.
THREADED_ZSTD_THRESHOLD = 8 * 1024 * 1024  # bytes
# Already-compressed formats: sampling would only confirm it.
COMPRESSED_SUFFIXES = frozenset(
    ".gz .tgz .bz2 .xz .zst .zip .7z .rar .lz4 .br .jpg .jpeg .png .gif .webp .mp3 .mp4 "
    ".mkv .avi .mov .flac .ogg .parquet .npz .pt .pth .h5 .hdf5 .onnx .tfrecord".split())
# One-shot decompression allocates a frame's declared size before reading it; above
# this, a header is not trusted with the allocation and the frame is streamed instead.
ONE_SHOT_MAX = 64 * 1024 * 1024  # bytes
# Publish at most this many pending objects per syncfs, bounding memory for 1M files.
BATCH_LIMIT = 20_000


@dataclass(frozen=True, slots=True)
class StoreOptions:
    """How a store writes. Readers accept every form regardless of these."""

    compression: str = "auto"  # auto | zstd | none
    zstd_level: int = 1
    fsync: str = "batch"  # batch (one syncfs per Writer flush) | each | off
    verify: bool = True  # re-read compressed output before publishing it

    def __post_init__(self) -> None:
        if self.compression not in ("auto", "zstd", "none"):
            raise StoreError(f"cache.compression must be auto, zstd or none, not {self.compression!r}")
        if self.fsync not in ("batch", "each", "off"):
            raise StoreError(f"cache.fsync must be batch, each or off, not {self.fsync!r}")
        if not 1 <= self.zstd_level <= 19:
            raise StoreError(f"cache.zstd_level must be 1..19, not {self.zstd_level}")


@dataclass(frozen=True, slots=True)
class StoredObject:
    """One object file as found on disk by FileStore.scan (one lstat, no read)."""

    oid: str
    path: str
    compressed: bool
    size: int  # bytes on disk
    mtime_ns: int
    ctime_ns: int  # link(2), chmod and utime all move it: the object's last publish/freshen
    nlink: int  # > 1: a workspace hardlink shares the bytes, deleting frees nothing


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    """Where and how an object is stored."""

    oid: str
    path: Path | None  # None for in-memory objects
    compressed: bool
    stored_size: int  # bytes on disk


class ObjectStore(ABC):
    """The contract every store implementation meets (tests/test_store_contract.py)."""

    @abstractmethod
    def has(self, oid: str) -> bool:
        """True when the object is present in either form."""

    @abstractmethod
    def info(self, oid: str) -> ObjectInfo:
        """Form and size of a present object. Raises ObjectMissing."""

    @abstractmethod
    def get(self, oid: str, *, max_size: int | None = None) -> bytes:
        """The object's content, verified against its id.

        Raises:
            ObjectMissing: not present.
            CorruptObject: present but damaged (bad frame, wrong hash, too large).
        """

    @abstractmethod
    def open(self, oid: str) -> BinaryIO:
        """A stream of the content, unverified (callers hash as they read if they care)."""

    @abstractmethod
    def put_bytes(self, data: bytes, *, compress: bool | None = None) -> str:
        """Store `data`, returning its id. Already present is success."""

    @abstractmethod
    def iter_oids(self) -> Iterator[str]:
        """Every stored id, in no particular order."""

    @abstractmethod
    def delete(self, oid: str) -> int:
        """Remove the object (both forms); return the bytes freed. Only gc calls this."""

    def verify(self, oid: str) -> None:
        """Re-hash the object. Raises ObjectMissing or CorruptObject."""
        self.get(oid)


class MemoryStore(ObjectStore):
    """A dict-backed store for tests and for code that must not touch disk."""

    def __init__(self) -> None:
        self._objects: dict[str, bytes] = {}
        self._lock = threading.Lock()

    def has(self, oid: str) -> bool:
        return oid in self._objects

    def info(self, oid: str) -> ObjectInfo:
        if oid not in self._objects:
            raise ObjectMissing(oid)
        return ObjectInfo(oid, None, False, len(self._objects[oid]))

    def get(self, oid: str, *, max_size: int | None = None) -> bytes:
        try:
            data = self._objects[oid]
        except KeyError:
            raise ObjectMissing(oid) from None
        if max_size is not None and len(data) > max_size:
            raise CorruptObject(oid, f"{len(data)} bytes exceeds the expected {max_size}")
        if hashing.hash_bytes(data) != oid:
            raise CorruptObject(oid, "content does not hash to its id")
        return data

    def open(self, oid: str) -> BinaryIO:
        import io
        return io.BytesIO(self.get(oid))

    def put_bytes(self, data: bytes, *, compress: bool | None = None) -> str:
        oid = hashing.hash_bytes(data)
        with self._lock:
            self._objects.setdefault(oid, bytes(data))
        return oid

    def iter_oids(self) -> Iterator[str]:
        return iter(list(self._objects))

    def delete(self, oid: str) -> int:
        with self._lock:
            data = self._objects.pop(oid, None)
        return 0 if data is None else len(data)

    def corrupt(self, oid: str, data: bytes) -> None:
        """Test hook: replace an object's bytes without changing its id."""
        self._objects[oid] = data


class FileStore(ObjectStore):
    """Objects as files under `<store>/objects/`, temp files under `<store>/tmp/`."""

    def __init__(self, root: Path, *, options: StoreOptions | None = None) -> None:
        self.root = Path(root)
        self.objects = self.root / "objects"
        self.tmp = self.root / "tmp"
        self.options = options or StoreOptions()
        self._objects_s = os.fspath(self.objects)
        self._tmp_s = os.fspath(self.tmp)
        # pid + random prefix: unique across processes and across pid reuse.
        self._tmp_prefix = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self._tmp_counter = itertools.count()

    # -- paths ---------------------------------------------------------------------
    # Paths are plain strings on the hot path: pathlib costs ~10 us per join, which is
    # a third of the work of storing a 2 KiB file.
    def raw_path(self, oid: str) -> str:
        return f"{self._objects_s}/{oid[:2]}/{oid[2:]}"

    def zst_path(self, oid: str) -> str:
        return f"{self._objects_s}/{oid[:2]}/{oid[2:]}{ZST_SUFFIX}"

    def tmp_path(self, tag: str = "obj") -> str:
        return f"{self._tmp_s}/{tag}-{self._tmp_prefix}-{next(self._tmp_counter)}"

    # -- reading -------------------------------------------------------------------
    def has(self, oid: str) -> bool:
        shard = self.raw_path(oid)
        # os.path.exists costs one stat; the raw form is checked first because large
        # linked data (the case where speed matters) is stored raw.
        return os.path.exists(shard) or os.path.exists(shard + ZST_SUFFIX)

    def info(self, oid: str) -> ObjectInfo:
        for path, compressed in ((self.raw_path(oid), False), (self.zst_path(oid), True)):
            try:
                st = os.stat(path)
            except FileNotFoundError:
                continue
            return ObjectInfo(oid, Path(path), compressed, st.st_size)
        raise ObjectMissing(oid)

    def get(self, oid: str, *, max_size: int | None = None) -> bytes:
        info = self.info(oid)
        try:
            with open(info.path, "rb") as f:
                raw = f.read()
        except OSError as exc:
            raise from_os_error(exc, path=info.path, doing="reading an object") from None
        if info.compressed:
            raw = _decompress(oid, raw, max_size=max_size, path=info.path)
        elif max_size is not None and len(raw) > max_size:
            raise CorruptObject(oid, f"{len(raw)} bytes exceeds the expected {max_size}", path=info.path)
        if hashing.hash_bytes(raw) != oid:
            raise CorruptObject(oid, "content does not hash to its id", path=info.path)
        return raw

    def open(self, oid: str) -> BinaryIO:
        info = self.info(oid)
        f = open(info.path, "rb")
        if not info.compressed:
            return f
        return zstandard.ZstdDecompressor().stream_reader(f, closefd=True)  # type: ignore[return-value]

    def verify(self, oid: str) -> None:
        info = self.info(oid)
        try:
            if not info.compressed:
                got = hashing.hash_file(info.path)
            else:
                got = _hash_zst_file(oid, info.path)
        except OSError as exc:
            raise CorruptObject(oid, f"unreadable: {exc.strerror}", path=info.path) from None
        if got != oid:
            raise CorruptObject(oid, "content does not hash to its id", path=info.path)

    def iter_oids(self) -> Iterator[str]:
        try:
            shards = sorted(os.scandir(self.objects), key=lambda d: d.name)
        except FileNotFoundError:
            return
        for shard in shards:
            if len(shard.name) != 2 or not shard.is_dir():
                continue
            for ent in os.scandir(shard.path):
                name = ent.name[:-len(ZST_SUFFIX)] if ent.name.endswith(ZST_SUFFIX) else ent.name
                oid = shard.name + name
                if hashing.is_oid(oid):
                    yield oid

    def scan(self) -> Iterator[StoredObject]:
        """Every object file with its lstat, shard by shard (gc's inventory).

        An object present in both forms yields two entries with the same oid. Names
        that are not objects (a stray file, a temp name) are skipped, as iter_oids does.
        """
        try:
            shards = sorted(os.scandir(self.objects), key=lambda d: d.name)
        except FileNotFoundError:
            return
        for shard in shards:
            if len(shard.name) != 2 or not shard.is_dir():
                continue
            for ent in os.scandir(shard.path):
                compressed = ent.name.endswith(ZST_SUFFIX)
                oid = shard.name + (ent.name[:-len(ZST_SUFFIX)] if compressed else ent.name)
                if not hashing.is_oid(oid):
                    continue
                try:
                    st = ent.stat(follow_symlinks=False)
                except FileNotFoundError:
                    continue  # deleted while we listed
                yield StoredObject(oid, ent.path, compressed, st.st_size, st.st_mtime_ns,
                                   st.st_ctime_ns, st.st_nlink)

    def read_head(self, oid: str, n: int) -> bytes:
        """The first `n` bytes of the object's content (decompressed), unverified.

        Enough to read a structured object's envelope header without reading the
        object. Raises ObjectMissing, or CorruptObject for a bad zstd frame.
        """
        info = self.info(oid)
        try:
            with open(info.path, "rb") as f:
                if not info.compressed:
                    return f.read(n)
                with zstandard.ZstdDecompressor().stream_reader(f) as reader:
                    head = b""
                    while len(head) < n and (chunk := reader.read(n - len(head))):
                        head += chunk
                    return head
        except zstandard.ZstdError as exc:
            raise CorruptObject(oid, f"bad zstd frame: {exc}", path=info.path) from None
        except FileNotFoundError:
            raise ObjectMissing(oid) from None

    # -- writing -------------------------------------------------------------------
    def put_bytes(self, data: bytes, *, compress: bool | None = None) -> str:
        with self.writer() as w:
            return w.put_bytes(data, compress=compress)

    def put_file(self, path: str | os.PathLike[str], *, ingest: str = "copy",
                 compress: bool | None = None) -> str:
        """Store one file; see Writer.put_file."""
        with self.writer() as w:
            return w.put_file(path, ingest=ingest, compress=compress)

    def writer(self) -> "Writer":
        """A batch of puts published together; use as a context manager."""
        return Writer(self)

    def delete(self, oid: str) -> int:
        freed = 0
        for path in (self.raw_path(oid), self.zst_path(oid)):
            try:
                freed += os.stat(path).st_size
                os.unlink(path)
            except FileNotFoundError:
                continue
        return freed

    def ensure_dirs(self) -> None:
        self.objects.mkdir(parents=True, exist_ok=True)
        self.tmp.mkdir(parents=True, exist_ok=True)


_tls = threading.local()


def _cctx(level: int) -> zstandard.ZstdCompressor:
    """A per-thread compressor for `level` (contexts are costly to create, unsafe to share)."""
    cache = _tls.__dict__.setdefault("cctx", {})
    c = cache.get(level)
    if c is None:
        c = cache[level] = zstandard.ZstdCompressor(level=level, write_content_size=True)
    return c


def _dctx() -> zstandard.ZstdDecompressor:
    d = getattr(_tls, "dctx", None)
    if d is None:
        d = _tls.dctx = zstandard.ZstdDecompressor()
    return d


class Writer:
    """Puts objects in batches: temp files first, one sync, then links in order.

    Ids are returned as soon as each put is hashed; the objects become visible to
    readers at flush() (also called on leaving the `with` block, and automatically
    every BATCH_LIMIT objects). Thread-safe: put_* may be called from a pool.
    A put whose object already exists writes nothing and freshens its mtime.
    """

    def __init__(self, store: FileStore) -> None:
        self.store = store
        self.opts = store.options
        self._pending: list[tuple[str, str]] = []  # (temp, final), insertion order
        self._pending_oids: set[str] = set()
        self._lock = threading.Lock()
        self.written = 0  # objects newly published
        self.bytes_written = 0
        store.ensure_dirs()

    def __enter__(self) -> "Writer":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.flush()
        else:
            self.abort()

    # -- public ----------------------------------------------------------------------
    def put_bytes(self, data: bytes, *, compress: bool | None = None) -> str:
        """Store `data`; return its id."""
        return self._put_data(hashing.hash_bytes(data), data, compress)

    def _put_data(self, oid: str, data: bytes, compress: bool | None) -> str:
        if self._exists(oid):
            return oid
        payload = None
        if compress is None:
            if self.opts.compression != "auto":
                compress = self.opts.compression == "zstd"
            elif len(data) <= SAMPLE_SIZE:
                # Small: compress once at the real level and keep it only if it pays.
                payload = _cctx(self.opts.zstd_level).compress(data) if len(data) >= 64 else data
                compress = len(data) >= 64 and len(payload) <= len(data) * (1 - AUTO_MIN_SAVING)
            else:
                compress = self._auto_compress(None, memoryview(data)[:SAMPLE_SIZE])
        tmp = self.store.tmp_path()
        try:
            # Created read-only: the descriptor still writes, and no fchmod is needed.
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, OBJECT_MODE)
            try:
                if compress:
                    if payload is None:
                        payload = _cctx(self.opts.zstd_level).compress(data)
                    if self.opts.verify and _decompress(oid, payload, max_size=len(data)) != data:
                        raise CorruptObject(oid, "compressed output failed verification")
                else:
                    payload = data
                _write_all(fd, payload)
                self._seal(fd, tmp)
            finally:
                os.close(fd)
        except OSError as exc:
            _unlink_quiet(tmp)
            raise from_os_error(exc, path=tmp, doing="writing an object") from None
        except BaseException:  # failed verification, Ctrl-C: publish nothing, leave nothing
            _unlink_quiet(tmp)
            raise
        self._stage(oid, tmp, compress)
        return oid

    def put_file(self, path: str | os.PathLike[str], *, ingest: str = "copy",
                 compress: bool | None = None, known_oid: str | None = None) -> str:
        """Store the regular file at `path`; return its id.

        Args:
            ingest: how the bytes get into the store. "copy" reads and writes them (one
                pass: the id is the hash of exactly what was written); "reflink" clones
                the file (O(1) on CoW filesystems) and hashes the clone; "hardlink"
                links the file itself into the store and makes it read-only (the
                workspace file then *is* the object); falls back to copy across devices
                or where the filesystem refuses.
            compress: force a form; None applies the store's compression policy
                (only ever for ingest="copy": linked data must stay raw).
            known_oid: the id from the stat cache; if that object exists, nothing is read.
        Raises:
            NotFound, StoreError: unreadable source, full or read-only store.
            CorruptObject: compressed output failed verification.
        """
        src = os.fspath(path)
        if known_oid is not None and self._exists(known_oid):
            return known_oid
        try:
            st = os.stat(src)
        except OSError as exc:
            raise from_os_error(exc, path=src, doing="reading") from None
        if ingest == "reflink":
            oid = self._put_reflink(src, st)
            if oid is not None:
                return oid
            ingest = "copy"
        if ingest == "hardlink":
            oid = self._put_hardlink(src, st)
            if oid is not None:
                return oid
            ingest = "copy"
        if ingest != "copy":
            raise TallyError(f"unknown ingest mode {ingest!r}")
        if st.st_size < hashing.MMAP_THRESHOLD:
            # Small files: one read, then the in-memory path (no streaming contexts).
            try:
                with open(src, "rb", buffering=0) as f:
                    data = f.read()
            except OSError as exc:
                raise from_os_error(exc, path=src, doing="reading") from None
            if compress is None and self.opts.compression == "auto" and \
                    os.path.splitext(src)[1].lower() in COMPRESSED_SUFFIXES:
                compress = False
            return self._put_data(hashing.hash_bytes(data), data, compress)
        if compress is None:
            compress = self._auto_compress(src, None, size=st.st_size)
        return self._put_copy(src, st, compress)

    def flush(self) -> None:
        """Make every pending temp file durable, then link each into place, in order."""
        with self._lock:
            pending, self._pending = self._pending, []
            self._pending_oids = set()
        if not pending:
            return
        if self.opts.fsync == "batch":
            syncfs(self.store.tmp)
        touched_dirs: set[str] = set()
        for tmp, final in pending:
            final_dir = os.path.dirname(final)
            try:
                try:
                    os.link(tmp, final)
                    self.written += 1
                except FileNotFoundError:
                    os.makedirs(final_dir, exist_ok=True)
                    # A new shard: its name must be durable too, or a power cut could
                    # drop the directory while a pointer naming its objects survives.
                    touched_dirs.add(os.path.dirname(final_dir))
                    try:
                        os.link(tmp, final)
                        self.written += 1
                    except FileExistsError:
                        _freshen(final)
                except FileExistsError:
                    _freshen(final)
                touched_dirs.add(final_dir)
            except OSError as exc:
                for t, _ in pending:
                    _unlink_quiet(t)
                raise from_os_error(exc, path=final, doing="publishing an object") from None
            _unlink_quiet(tmp)
        if self.opts.fsync != "off":
            for d in touched_dirs:
                fsync_dir(d)

    def abort(self) -> None:
        """Drop every unpublished temp file (on error or interrupt)."""
        with self._lock:
            pending, self._pending = self._pending, []
            self._pending_oids = set()
        for tmp, _ in pending:
            _unlink_quiet(tmp)

    # -- internals ---------------------------------------------------------------------
    def _exists(self, oid: str) -> bool:
        if oid in self._pending_oids:
            return True
        raw = self.store.raw_path(oid)
        for p in (raw, raw + ZST_SUFFIX):
            try:
                st = os.stat(p)
            except FileNotFoundError:
                continue
            # Freshen: gc's grace period now covers this object. Not a hardlinked one:
            # its inode is also a workspace file, and touching it would change the
            # user's mtime and void the stat cache entry vouching for that file.
            if st.st_nlink == 1:
                _freshen(p)  # quietly skipped where not ours to touch (shared store)
            return True
        return False

    def _stage(self, oid: str, tmp: str, compressed: bool) -> None:
        final = self.store.zst_path(oid) if compressed else self.store.raw_path(oid)
        with self._lock:
            if oid in self._pending_oids:
                _unlink_quiet(tmp)
                return
            self._pending.append((tmp, final))
            self._pending_oids.add(oid)
            full = len(self._pending) >= BATCH_LIMIT
        if full:
            self.flush()

    def _seal(self, fd: int, tmp: str) -> None:
        if self.opts.fsync == "each":
            os.fsync(fd)

    def _auto_compress(self, src: str | None, sample: memoryview | None, *, size: int = 0) -> bool:
        policy = self.opts.compression
        if policy != "auto":
            return policy == "zstd"
        if src is not None:
            if os.path.splitext(src)[1].lower() in COMPRESSED_SUFFIXES or size < 64:
                return False
            with open(src, "rb") as f:
                sample = memoryview(f.read(SAMPLE_SIZE))
        assert sample is not None
        if len(sample) < 64:
            return False
        packed = _cctx(1).compress(sample)
        return len(packed) <= len(sample) * (1 - AUTO_MIN_SAVING)

    def _put_copy(self, src: str, st: os.stat_result, compress: bool) -> str:
        tmp = self.store.tmp_path()
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, OBJECT_MODE)
            try:
                if compress:
                    oid = self._write_zst(src, fd, st.st_size)
                else:
                    # The kernel copies (copy_file_range: no trip through Python
                    # buffers), BLAKE3's threads hash the source from the page cache,
                    # and the source is proven unchanged from before the copy to after
                    # the hash, so the copy is exactly what was hashed (1 GiB: ~5 s of
                    # read/hash/write in Python -> ~1 s).
                    _copy_into(src, fd, st.st_size)
                    oid = hashing.hash_file(src, size=st.st_size)
                    _check_unchanged(src, st)
                self._seal(fd, tmp)
            finally:
                os.close(fd)
        except OSError as exc:
            _unlink_quiet(tmp)
            raise from_os_error(exc, path=src if exc.filename == src else tmp,
                                doing="storing a file") from None
        except BaseException:
            _unlink_quiet(tmp)
            raise
        if self._exists(oid):
            _unlink_quiet(tmp)
            return oid
        if compress and self.opts.verify:
            try:
                got = _hash_zst_file(oid, tmp)
            except CorruptObject:
                got = None
            if got != oid:
                _unlink_quiet(tmp)
                raise CorruptObject(oid, "compressed output failed verification", path=src)
        self._stage(oid, tmp, compress)
        return oid

    def _write_zst(self, src: str, fd: int, size: int) -> str:
        threads = -1 if size >= THREADED_ZSTD_THRESHOLD else 0
        cctx = zstandard.ZstdCompressor(level=self.opts.zstd_level, write_content_size=True,
                                        threads=threads)
        hasher = hashing.new_hasher(threaded=size >= hashing.MMAP_THRESHOLD)
        with open(src, "rb", buffering=0) as fin, os.fdopen(os.dup(fd), "wb") as fout:
            with cctx.stream_writer(fout, size=size, closefd=False) as comp:
                buf = bytearray(hashing.STREAM_CHUNK)
                view = memoryview(buf)
                while True:
                    n = fin.readinto(buf)
                    if not n:
                        break
                    hasher.update(view[:n])
                    comp.write(view[:n])
        return hasher.hexdigest()

    def _put_reflink(self, src: str, st: os.stat_result) -> str | None:
        tmp = self.store.tmp_path()
        try:
            if not reflink(src, tmp):
                return None
            # Hash the source, not the clone: a clone is a new inode whose pages are not
            # in the page cache, so hashing it re-reads everything from disk (measured:
            # 3.5 s vs 0.2 s for 450 MB). The clone was taken after `st` and the source
            # is unchanged after hashing, so clone content == hashed content.
            oid = hashing.hash_file(src, size=st.st_size)
            _check_unchanged(src, st)
            os.chmod(tmp, OBJECT_MODE)
            if self.opts.fsync == "each":
                _fsync_path(tmp)
        except OSError as exc:
            _unlink_quiet(tmp)
            raise from_os_error(exc, path=src, doing="cloning a file into the store") from None
        if self._exists(oid):
            _unlink_quiet(tmp)
            return oid
        self._stage(oid, tmp, False)
        return oid

    def _put_hardlink(self, src: str, st: os.stat_result) -> str | None:
        if st.st_mode & 0o111:
            # The object's 0444 would become the file's mode and strip its x bits (and
            # its tree mode with them): an executable is copied in instead.
            return None
        oid = hashing.hash_file(src, size=st.st_size)
        _check_unchanged(src, st)
        if self._exists(oid):
            return oid
        tmp = self.store.tmp_path()
        try:
            os.link(src, tmp)
        except OSError as exc:
            if exc.errno in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP):
                return None
            raise from_os_error(exc, path=src, doing="linking a file into the store") from None
        os.chmod(tmp, OBJECT_MODE)  # the workspace file is now protected too
        self._stage(oid, tmp, False)
        return oid


def _copy_into(src: str, fd: int, size: int) -> None:
    """Copy the file `src` into the open, empty descriptor `fd` (in the kernel if it can)."""
    with open(src, "rb", buffering=0) as fin:
        if copy_fd(fin.fileno(), fd, size) != size:
            raise StoreError("file changed size while it was being stored", path=src,
                             hint="stop whatever is writing it and run the command again")


def _check_unchanged(src: str, st: os.stat_result) -> None:
    """Raise unless `src` still has the identity and timestamps it had in `st`."""
    after = os.stat(src)
    if (after.st_ino, after.st_size, after.st_mtime_ns, after.st_ctime_ns) != \
            (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns):
        raise StoreError("file changed while it was being stored", path=src,
                         hint="stop whatever is writing it and run the command again")


def _decompress(oid: str, payload: bytes, *, max_size: int | None,
                path: Path | None = None) -> bytes:
    """Decompress one frame, refusing frames that declare or expand beyond max_size."""
    limit = max_size if max_size is not None else 1 << 40
    try:
        params = zstandard.get_frame_parameters(payload)
        declared = params.content_size
        if declared in (zstandard.CONTENTSIZE_UNKNOWN, zstandard.CONTENTSIZE_ERROR):
            declared = None
        if declared is not None and declared > limit:
            raise CorruptObject(oid, f"frame declares {declared} bytes, "
                                f"more than the expected {limit}", path=path)
        dctx = _dctx()
        if declared is not None and declared <= ONE_SHOT_MAX:
            # An object is exactly one frame: bytes after it are damage, which
            # decompress() alone would silently ignore; a decompressobj reports them.
            dobj = dctx.decompressobj()
            out = dobj.decompress(payload)
            if len(out) != declared:
                raise CorruptObject(oid, f"bad zstd frame: truncated ({len(out)} of the "
                                    f"{declared} bytes its header declares)", path=path)
            if dobj.unused_data:
                raise CorruptObject(oid, f"{len(dobj.unused_data)} stray bytes after the frame",
                                    path=path)
            return out
        # No declared size (we always declare one, but a hostile frame may not), or one
        # too large to allocate on the header's word: read in bounded chunks, so memory
        # grows with real output and a decompression bomb stops at the limit.
        parts, total = [], 0
        reader = dctx.stream_reader(payload, read_across_frames=False)
        while chunk := reader.read(1 << 20):
            total += len(chunk)
            if total > limit:
                raise CorruptObject(oid, f"frame expands beyond the expected {limit} bytes", path=path)
            parts.append(chunk)
        if declared is not None and total != declared:
            raise CorruptObject(oid, "frame size does not match its header", path=path)
        return b"".join(parts)
    except zstandard.ZstdError as exc:
        raise CorruptObject(oid, f"bad zstd frame: {exc}", path=path) from None


def _hash_zst_file(oid: str, path: str | os.PathLike[str]) -> str:
    hasher = hashing.new_hasher(threaded=True)
    try:
        with open(path, "rb") as f:
            # Across frames: stray bytes after the frame then fail to decode, or decode
            # into extra content that fails the hash. Either way fsck sees the damage.
            reader = zstandard.ZstdDecompressor().stream_reader(f, read_across_frames=True)
            while True:
                chunk = reader.read(hashing.STREAM_CHUNK)
                if not chunk:
                    break
                hasher.update(chunk)
    except zstandard.ZstdError as exc:
        raise CorruptObject(oid, f"bad zstd frame: {exc}", path=path) from None
    return hasher.hexdigest()


def _freshen(path: str) -> None:
    try:
        os.utime(path)
    except OSError:
        pass  # a shared store we do not own: presence is what matters


def _unlink_quiet(path: Path | str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _fsync_path(path: Path | str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


