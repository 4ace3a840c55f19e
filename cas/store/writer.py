"""Writing objects: a batch of puts made durable together, then published in order.

Write protocol (spec/store.md, "Write ordering"): content goes to a temp file in
`.tally/tmp/` (same filesystem), is hashed *from what was written* (or, for linked
ingest, checked unchanged), made read-only, made durable, and only then linked into
place with link(2), which never overwrites. EEXIST is success and freshens the mtime so
gc's grace period covers the object. A Writer batches this: it writes many temp files,
makes them durable with one barrier, then publishes them in insertion order, which is
what keeps "blobs before the trees that name them" true at every instant. Each step
has a failpoint (cas/core/failpoints.py: store:temp-written, store:temp-synced,
store:linked, store:dirs-synced) where the crash tests kill a writer.

The barrier for `cache.fsync = batch` is chosen by batch size: up to SMALL_BATCH
objects are fsynced each, concurrently (a handful of fsyncs is cheaper and more
predictable than syncfs, which also waits for every other process's dirty data on the
filesystem: 0.5 ms vs up to 20 ms measured for a `tally run` on a busy machine);
larger batches use one syncfs(2).
"""

from __future__ import annotations

import errno
import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, Sequence

from cas.store import zstdframe as codec
from cas.core import hashing
from cas.core.errors import CorruptObject, StoreError, TallyError, from_os_error
from cas.core.failpoints import failpoint
from cas.core.fsops import copy_fd, fsync_all, fsync_file, reflink, syncfs
from cas.core.fsops import unlink_quiet, write_all

if TYPE_CHECKING:
    from cas.store.inflight import InFlight

OBJECT_MODE = 0o444
# Content of at most this many bytes is always stored raw, whatever the kind, the
# `cache.compression` policy or a caller's `compress=`: a file takes at least one 4 KiB
# filesystem block, so compressing it saves no disk space, and keeping records, trees
# and run-cache entries of a typical run raw spares `tally run` importing zstandard
# (which imports `platform` and `typing`: ~6-7 ms of a ~0.1 s budget, issue 4).
RAW_MAX = 4096  # bytes: one block of the common 4 KiB-block filesystems
# Content-size sample used by compression=auto to decide whether zstd pays off.
SAMPLE_SIZE = 64 * 1024  # bytes
AUTO_MIN_SAVING = 0.10  # compress only when the sample shrinks by at least 10%
# Already-compressed formats: sampling would only confirm it.
COMPRESSED_SUFFIXES = frozenset(
    ".gz .tgz .bz2 .xz .zst .zip .7z .rar .lz4 .br .jpg .jpeg .png .gif .webp .mp3 .mp4 "
    ".mkv .avi .mov .flac .ogg .parquet .npz .pt .pth .h5 .hdf5 .onnx .tfrecord".split())
# Publish at most this many pending objects per barrier, bounding memory for 1M files.
BATCH_LIMIT = 20_000
# Batches up to this size are made durable by one fsync per temp file, not syncfs.
SMALL_BATCH = 32
# In-flight ids buffered before they are written out even without a flush (bounds
# memory when a snapshot reuses a million present objects).
NOTE_LIMIT = 4096



class StoreOptions:
    """How a store writes. Readers accept every form regardless of these.

    A plain class, validated on construction (a slots dataclass costs ~1 ms to
    create at import, on every command).
    """

    __slots__ = ("compression", "zstd_level", "fsync", "verify")

    def __init__(self, compression: str = "auto", zstd_level: int = 1, fsync: str = "batch",
                 verify: bool = True) -> None:
        if compression not in ("auto", "zstd", "none"):
            raise StoreError(f"cache.compression must be auto, zstd or none, not {compression!r}")
        if fsync not in ("batch", "each", "off"):
            raise StoreError(f"cache.fsync must be batch, each or off, not {fsync!r}")
        if not 1 <= zstd_level <= 19:
            raise StoreError(f"cache.zstd_level must be 1..19, not {zstd_level}")
        self.compression = compression  # auto | zstd | none
        self.zstd_level = zstd_level
        self.fsync = fsync  # batch (one barrier per Writer flush) | each | off
        self.verify = verify  # re-read compressed output before publishing it

    def __repr__(self) -> str:
        return (f"StoreOptions(compression={self.compression!r}, zstd_level={self.zstd_level}, "
                f"fsync={self.fsync!r}, verify={self.verify})")


class ObjectFiles(Protocol):
    """What a Writer needs of a store: where object and temp files go, and how to write.

    cas/store/objectstore.py's FileStore is the one implementation; naming the
    protocol here keeps the writer from depending on the store that uses it.
    """

    root: Path
    tmp: Path
    options: StoreOptions

    def raw_path(self, oid: str) -> str: ...

    def zst_path(self, oid: str) -> str: ...

    def tmp_path(self, tag: str = "obj") -> str: ...

    def ensure_dirs(self) -> None: ...


class Writer:
    """Puts objects in batches: temp files first, one sync, then links in order.

    Ids are returned as soon as each put is hashed; the objects become visible to
    readers at flush() (also called on leaving the `with` block, and automatically
    every BATCH_LIMIT objects). Thread-safe: put_* may be called from a pool.
    A put whose object already exists writes nothing and freshens its mtime.

    With `inflight` (spec/gc.md, "In-flight roots"), every id the writer puts or
    reuses, and every id given to keep(), is written to that file before flush()
    publishes anything and before flush() returns: the caller holds the store lock
    shared from the first put of a burst to the end of its flush, and may let go of
    the lock after it; gc keeps what the file names. `inflight=True` creates this
    process's own file on first use (removed by close(), and on leaving the `with`
    block); an InFlight object is used as it is (and closed too).
    """

    def __init__(self, store: ObjectFiles, *, inflight: "InFlight | bool | None" = None) -> None:
        self.store = store
        self.opts = store.options
        self._pending: list[tuple[str, str]] = []  # (temp, final), insertion order
        self._pending_oids: set[str] = set()
        self._lock = threading.Lock()
        self.written = 0  # objects newly published
        self.bytes_written = 0
        self._track = bool(inflight)
        self._inflight: "InFlight | None" = inflight if not isinstance(inflight, bool) else None
        self._notes: list[str] = []  # ids not yet written to the in-flight file
        store.ensure_dirs()

    def __enter__(self) -> "Writer":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if exc_type is None:
                self.flush()
            else:
                self.abort()
        finally:
            self.close()

    # -- in-flight roots -----------------------------------------------------------------
    def keep(self, oid: str) -> None:
        """Name `oid` in the in-flight file (an object taken from the store without a
        put: a run-cache hit's outputs, a tree from the directory memo). No-op without
        an in-flight file."""
        if self._track:
            self._note(oid)

    def has(self, oid: str) -> bool:
        """Is `oid` present (or staged)? A present one is freshened and kept, as a put
        of it would be."""
        return self._exists(oid)

    def inflight_path(self) -> str | None:
        """The in-flight file's path (created now if needed), or None without one."""
        if not self._track:
            return None
        with self._lock:
            return os.fspath(self._open_inflight().path)

    def sync_inflight(self) -> None:
        """Write the buffered ids to the in-flight file (flush() does it too)."""
        if not self._track:
            return
        with self._lock:
            notes, self._notes = self._notes, []
            if notes:
                self._open_inflight().append(notes)

    def close(self) -> None:
        """Remove the in-flight file: call once what names the objects is written
        (or the writer gave up). Pending puts are not published: flush() first."""
        if self._inflight is not None:
            self._inflight.close()
            self._inflight = None
        self._track = False
        self._notes = []

    def _open_inflight(self) -> "InFlight":
        if self._inflight is None:
            from cas.store.inflight import InFlight
            self._inflight = InFlight.create(self.store.root)
        return self._inflight

    def _note(self, oid: str) -> None:
        with self._lock:
            self._notes.append(oid)
            if len(self._notes) < NOTE_LIMIT:
                return
            notes, self._notes = self._notes, []
            self._open_inflight().append(notes)

    # -- public ----------------------------------------------------------------------
    def put_bytes(self, data: bytes, *, compress: bool | None = None) -> str:
        """Store `data`; return its id.

        Args:
            compress: the form for content of more than RAW_MAX bytes: True zstd
                (structured objects: "the zstd form where it can save space"),
                False raw, None the store's compression policy. Content of at most
                RAW_MAX bytes is written raw whatever this says (spec/store.md,
                "Compression policy").
        Raises:
            StoreError: full or read-only store.
            CorruptObject: compressed output failed verification.
        """
        return self._put_data(hashing.hash_bytes(data), data, compress)

    def _put_data(self, oid: str, data: bytes, compress: bool | None) -> str:
        if self._exists(oid):
            return oid
        payload = None
        if len(data) <= RAW_MAX:
            compress = False  # one block either way (RAW_MAX)
        elif compress is None:
            if self.opts.compression != "auto":
                compress = self.opts.compression == "zstd"
            elif len(data) <= SAMPLE_SIZE:
                # Small: compress once at the real level and keep it only if it pays.
                payload = codec.compress(data, self.opts.zstd_level)
                compress = len(payload) <= len(data) * (1 - AUTO_MIN_SAVING)
            else:
                compress = self._auto_compress(None, memoryview(data)[:SAMPLE_SIZE])
        tmp = self.store.tmp_path()
        try:
            # Created read-only: the descriptor still writes, and no fchmod is needed.
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, OBJECT_MODE)
            try:
                if compress:
                    if payload is None:
                        payload = codec.compress(data, self.opts.zstd_level)
                    if self.opts.verify and codec.decompress(oid, payload, max_size=len(data)) != data:
                        raise CorruptObject(oid, "compressed output failed verification")
                else:
                    payload = data
                write_all(fd, payload)
                self._seal(fd, tmp)
            finally:
                os.close(fd)
        except OSError as exc:
            unlink_quiet(tmp)
            raise from_os_error(exc, path=tmp, doing="writing an object") from None
        except BaseException:  # failed verification, Ctrl-C: publish nothing, leave nothing
            unlink_quiet(tmp)
            raise
        self._stage(oid, tmp, compress)
        return oid

    def put_stored(self, oid: str, payload: bytes, *, compressed: bool, size: int) -> bool:
        """Store an object received in its stored form (a remote's pack): `payload` is
        the raw content, or one zstd frame of it when `compressed`; `size` is the
        content's size. It is verified against `oid` before anything is written.

        Returns False when the object was already present (nothing written).
        Raises:
            CorruptObject: the payload does not hold exactly `size` bytes hashing to `oid`.
            StoreError: full or read-only store.
        """
        if self._exists(oid):
            return False
        content = codec.decompress(oid, payload, max_size=size) if compressed else payload
        if len(content) != size or hashing.hash_bytes(content) != oid:
            raise CorruptObject(oid, f"received bytes do not hash to its id ({len(content)} of "
                                     f"{size} bytes)")
        tmp = self.store.tmp_path()
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, OBJECT_MODE)
            try:
                write_all(fd, payload)
                self._seal(fd, tmp)
            finally:
                os.close(fd)
        except OSError as exc:
            unlink_quiet(tmp)
            raise from_os_error(exc, path=tmp, doing="writing an object") from None
        except BaseException:
            unlink_quiet(tmp)
            raise
        self._stage(oid, tmp, compressed)
        return True

    def adopt(self, oid: str, tmp: str, *, compressed: bool) -> bool:
        """Publish the file `tmp` (created by the caller with store.tmp_path(), mode
        OBJECT_MODE) as object `oid` in the given form, after checking that its content
        hashes to `oid`. The file is consumed either way.

        Returns False when the object was already present.
        Raises:
            CorruptObject: its content does not hash to `oid`.
        """
        if self._exists(oid):
            unlink_quiet(tmp)
            return False
        try:
            got = codec.hash_file(oid, tmp) if compressed else hashing.hash_file(tmp)
        except CorruptObject:
            got = None
        except BaseException:
            unlink_quiet(tmp)
            raise
        if got != oid:
            unlink_quiet(tmp)
            raise CorruptObject(oid, "received bytes do not hash to its id")
        if self.opts.fsync == "each":
            fsync_file(tmp)
        self._stage(oid, tmp, compressed)
        return True

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
                (only ever for ingest="copy": linked data must stay raw). A file of
                at most RAW_MAX bytes is stored raw whatever this says.
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
            # spec/store.md: under auto, and under zstd below MMAP_THRESHOLD (4 MiB), a
            # file in an already-compressed format is written raw.
            if compress is None and self.opts.compression != "none" and \
                    os.path.splitext(src)[1].lower() in COMPRESSED_SUFFIXES:
                compress = False
            return self._put_data(hashing.hash_bytes(data), data, compress)
        if st.st_size <= RAW_MAX:
            compress = False  # only with a lowered MMAP_THRESHOLD (tests); see RAW_MAX
        elif compress is None:
            compress = self._auto_compress(src, None)
        return self._put_copy(src, st, compress)

    def flush(self, *, also_sync: Sequence[str] = ()) -> None:
        """Make every pending temp file durable, then link each into place, in order.

        The in-flight file (if any) is written first: before anything is published.
        `also_sync`: other files (the staged temp files of what will name these
        objects: a ref, tally.lock) made durable in the same barrier, whatever
        `cache.fsync` says; they are only renamed into place after this returns, so
        sharing the barrier never lets them be durable before the objects they name.
        """
        self.sync_inflight()
        with self._lock:
            pending, self._pending = self._pending, []
            self._pending_oids = set()
        if not pending:
            fsync_all(list(also_sync))
            return
        if self.opts.fsync == "batch" and len(pending) <= SMALL_BATCH:
            fsync_all([tmp for tmp, _ in pending] + list(also_sync))
        else:
            if self.opts.fsync == "batch":
                syncfs(self.store.tmp)
            fsync_all(list(also_sync))  # another filesystem, perhaps; and fsync=each/off
        failpoint("store:temp-synced", group=True)
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
                    unlink_quiet(t)
                raise from_os_error(exc, path=final, doing="publishing an object") from None
            unlink_quiet(tmp)
            failpoint("store:linked", group=True)
        if self.opts.fsync != "off":
            fsync_all(sorted(touched_dirs), directories=True)
        failpoint("store:dirs-synced", group=True)

    def abort(self) -> None:
        """Drop every unpublished temp file (on error or interrupt)."""
        with self._lock:
            pending, self._pending = self._pending, []
            self._pending_oids = set()
        for tmp, _ in pending:
            unlink_quiet(tmp)

    # -- internals ---------------------------------------------------------------------
    def _exists(self, oid: str) -> bool:
        if oid in self._pending_oids:
            return True  # noted when it was staged
        if self._track:
            # Named before it is relied on; a present object is then a root of gc's
            # pass B, which cannot start before this burst ends (store lock).
            self._note(oid)
        raw = self.store.raw_path(oid)
        for p in (raw, self.store.zst_path(oid)):
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
        failpoint("store:temp-written", group=True)
        final = self.store.zst_path(oid) if compressed else self.store.raw_path(oid)
        with self._lock:
            if oid in self._pending_oids:
                unlink_quiet(tmp)
                return
            self._pending.append((tmp, final))
            self._pending_oids.add(oid)  # noted by the _exists() every put asks first
            full = len(self._pending) >= BATCH_LIMIT
        if full:
            self.flush()

    def _seal(self, fd: int, tmp: str) -> None:
        if self.opts.fsync == "each":
            os.fsync(fd)

    def _auto_compress(self, src: str | None, sample: memoryview | None) -> bool:
        """The policy's verdict for content of more than RAW_MAX bytes: the file `src`,
        or in memory (`sample`: its first SAMPLE_SIZE bytes)."""
        policy = self.opts.compression
        if policy != "auto":
            return policy == "zstd"
        if src is not None:
            if os.path.splitext(src)[1].lower() in COMPRESSED_SUFFIXES:
                return False
            with open(src, "rb") as f:
                sample = memoryview(f.read(SAMPLE_SIZE))
        assert sample is not None
        packed = codec.compress(sample, 1)
        return len(packed) <= len(sample) * (1 - AUTO_MIN_SAVING)

    def _put_copy(self, src: str, st: os.stat_result, compress: bool) -> str:
        tmp = self.store.tmp_path()
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, OBJECT_MODE)
            try:
                if compress:
                    oid = codec.compress_file(src, fd, st.st_size, self.opts.zstd_level)
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
            unlink_quiet(tmp)
            raise from_os_error(exc, path=src if exc.filename == src else tmp,
                                doing="storing a file") from None
        except BaseException:
            unlink_quiet(tmp)
            raise
        if self._exists(oid):
            unlink_quiet(tmp)
            return oid
        if compress and self.opts.verify:
            try:
                got = codec.hash_file(oid, tmp)
            except CorruptObject:
                got = None
            if got != oid:
                unlink_quiet(tmp)
                raise CorruptObject(oid, "compressed output failed verification", path=src)
        self._stage(oid, tmp, compress)
        return oid

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
                fsync_file(tmp)
        except OSError as exc:
            unlink_quiet(tmp)
            raise from_os_error(exc, path=src, doing="cloning a file into the store") from None
        if self._exists(oid):
            unlink_quiet(tmp)
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


def _freshen(path: str) -> None:
    """Move an existing object's mtime to now, so gc's grace period covers it again.

    Never an object with more than one link (spec/store.md): its other name is the
    user's hardlinked workspace file, whose mtime is theirs.
    """
    try:
        if os.stat(path).st_nlink == 1:
            os.utime(path)
    except OSError:
        pass  # a shared store we do not own: presence is what matters

