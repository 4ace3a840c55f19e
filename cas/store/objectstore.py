"""The object store: put, get, has, open, verify by id, on disk and in memory.

On disk (`.tally/objects/`), an object lives in one of two physical forms under one
namespace, and a reader accepts either:

    objects/<aa>/<rest>        raw: exactly the content, so a workspace file can be a
                               reflink or hardlink of it
    objects/<aa>/<rest>.zst    one zstd frame whose decompressed bytes are the content

where <aa> is the first two hex digits of the id and <rest> the other 62 (sharding
keeps directories to ~1/256 of the objects). Which form a put writes is the writer's
policy (content of at most writer.RAW_MAX bytes is always raw, trees included); a
reader never infers anything from the form, least of all the kind.

Writing goes through a Writer (cas/store/writer.py: temp file, hash, durable, link(2) in
order); the zstd form's rules live in cas/store/zstdframe.py. This module is the layout and the
read side: paths, lookups, verified reads, the inventory gc and fsck walk.
"""

import itertools
import os
import threading
from abc import ABC, abstractmethod
from pathlib import Path
from typing import BinaryIO, Iterator, NamedTuple

from cas.store import zstdframe as codec
from cas.core import hashing
from cas.core.errors import CorruptObject, ObjectMissing, from_os_error
from cas.store.writer import StoreOptions, Writer

ZST_SUFFIX = ".zst"


class StoredObject(NamedTuple):
    """One object file as found on disk by FileStore.scan (one lstat, no read)."""

    oid: str
    path: str
    compressed: bool
    size: int  # bytes on disk
    mtime_ns: int
    ctime_ns: int  # link(2), chmod and utime all move it: the object's last publish/freshen
    nlink: int  # > 1: a workspace hardlink shares the bytes, deleting frees nothing


class ObjectInfo(NamedTuple):
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
        self._tmp_prefix = f"{os.getpid()}-{os.urandom(4).hex()}"
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
        # Opened directly, each form in turn: no stat first, no file object and no
        # pathlib (`show` reads every new record this way; ~10 us of ~25 a record).
        for path, compressed in ((self.raw_path(oid), False), (self.zst_path(oid), True)):
            try:
                raw = _read_whole(path)
            except FileNotFoundError:
                continue
            except OSError as exc:
                raise from_os_error(exc, path=Path(path), doing="reading an object") from None
            if compressed:
                raw = codec.decompress(oid, raw, max_size=max_size, path=Path(path))
            elif max_size is not None and len(raw) > max_size:
                raise CorruptObject(oid, f"{len(raw)} bytes exceeds the expected {max_size}",
                                    path=Path(path))
            if hashing.hash_bytes(raw) != oid:
                raise CorruptObject(oid, "content does not hash to its id", path=Path(path))
            return raw
        raise ObjectMissing(oid)

    def open(self, oid: str) -> BinaryIO:
        info = self.info(oid)
        f = open(info.path, "rb")
        if not info.compressed:
            return f
        return codec.reader(f)

    def verify(self, oid: str) -> None:
        info = self.info(oid)
        self.verify_file(oid, info.path, info.compressed)

    def verify_file(self, oid: str, path: str | os.PathLike[str], compressed: bool) -> None:
        """Re-hash one file of the object: `path` in the given form (fsck checks each
        form of an id stored in both). Raises ObjectMissing or CorruptObject."""
        try:
            got = codec.hash_file(oid, path) if compressed else hashing.hash_file(path)
        except FileNotFoundError:
            raise ObjectMissing(oid) from None
        except OSError as exc:
            raise CorruptObject(oid, f"unreadable: {exc.strerror}", path=path) from None
        if got != oid:
            raise CorruptObject(oid, "content does not hash to its id", path=path)

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
                return codec.read_head(oid, f, n, path=info.path)
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

    def writer(self, *, inflight=False) -> Writer:
        """A batch of puts published together; use as a context manager.

        `inflight`: name every object put or reused in an in-flight file of this
        process (spec/gc.md, "In-flight roots"), for callers that let go of the
        store lock before a root names what they wrote; an InFlight (cas/store/inflight.py)
        to append to that one instead."""
        return Writer(self, inflight=inflight)

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


def _read_whole(path: str) -> bytes:
    """The bytes of the file at `path`, read at the os level (FileNotFoundError if absent)."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        size = os.fstat(fd).st_size
        data = os.read(fd, size)
        if len(data) < size:  # a short read (huge files, some filesystems): go on to EOF
            parts = [data]
            while chunk := os.read(fd, 1 << 24):
                parts.append(chunk)
            data = b"".join(parts)
        return data
    finally:
        os.close(fd)
