"""Sending objects: small ones in packs, large ones alone, then one index naming them.

Order on the remote (spec/remote.md, "Read and write ordering"): every pack and
large object of a push is written and acknowledged before the index that names
them, so an index never names a key that is not there; refs come after the index
(cas/sync/). A push killed anywhere leaves packs no index names (garbage for remote
gc after the grace period) and nothing a reader would trust; the next push sends
again exactly what no index names.

What is read locally is checked before it leaves: a small object is re-hashed (and
a zstd one decompressed) as it is packed, which costs little next to the I/O; a
large object is re-hashed only when it has more than one link (a hardlink checkout
made it also a workspace file, which a user may have edited in place). The remote
never receives bytes that do not hash to the id they are sent under, except from a
large store object damaged on disk, which fsck finds and every reader's check
refuses.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Iterable, NamedTuple

from cas.core import hashing
from cas.core.errors import CorruptObject, ObjectMissing, TallyError
from cas.core.failpoints import failpoint
from cas.remote import packfile
from cas.remote.connect import Remote
from cas.remote.packfile import Large, PackBuilder, Small
from cas.remote.progress import Meter
from cas.store import zstdframe as codec

# Objects whose stored form is at most this go in packs; bigger ones travel alone
# (and in parallel parts). 4 MiB: a part is 8 MiB, so nothing packed would gain from
# parts, and a large file is never copied into memory.
SMALL_MAX = 4 * 1024 * 1024  # bytes
# Target pack size: restic's default; a 50,000-file push of 125 MiB is ~8 requests.
PACK_TARGET = 16 * 1024 * 1024  # bytes
PACKS_IN_FLIGHT = 4  # packs built but not yet sent, at most: bounds memory
INDEX_PACKS_MAX = 4096  # packs one index names before a push writes it and starts another


class Pushed(NamedTuple):
    """What push_objects did."""

    sent: int  # objects sent
    sent_bytes: int  # their stored bytes
    packs: int
    large: int
    present: int  # already on the remote: not sent
    indexes: list[str]  # index ids written
    failed: dict[str, TallyError]  # oid -> why it could not be sent (missing or damaged here)


def push_objects(store, remote: Remote, oids: Iterable[str], *, meter: Meter | None = None,
                 verify: bool = True) -> Pushed:
    """Send every object of `oids` that the remote's catalog lacks.

    The caller holds the remote's shared lock (cas/remote/locking.py) from before the
    catalog was listed until the refs naming these objects are written.
    Objects missing or damaged locally are not sent; they are in `failed`.
    Raises:
        RemoteError and subclasses: the remote failed (nothing is indexed then).
    """
    meter = meter or Meter("push")
    remote.prepare_for_writing()
    cat = remote.catalog()
    todo: list[str] = []
    present = 0
    seen: set[str] = set()
    for oid in oids:
        if oid in seen:
            continue
        seen.add(oid)
        if cat.has(oid):
            present += 1
        else:
            todo.append(oid)
    failed: dict[str, TallyError] = {}
    small: list[tuple[str, str, bool, int]] = []  # oid, path, compressed, stored size
    large: list[tuple[str, str, bool, int, int]] = []  # + nlink
    for oid in todo:
        try:
            info = store.info(oid)
            st = os.stat(info.path)
        except (ObjectMissing, FileNotFoundError):
            failed[oid] = ObjectMissing(oid, hint="it is not in the local store: fetch or "
                                                  "re-create it, then push again")
            continue
        if st.st_size <= SMALL_MAX:
            small.append((oid, os.fspath(info.path), info.compressed, st.st_size))
        else:
            large.append((oid, os.fspath(info.path), info.compressed, st.st_size, st.st_nlink))
    meter.plan(len(small) + len(large), sum(s[3] for s in small) + sum(g[3] for g in large))
    session = _Session(remote, meter)
    try:
        with ThreadPoolExecutor(remote.jobs) as pool:
            session.pool = pool
            for oid, path, compressed, nbytes, nlink in large:
                session.send_large(oid, path, compressed, nbytes, verify and nlink > 1, failed)
            builder = PackBuilder()
            for oid, compressed, got in _read_all(small, verify, remote.jobs):
                if isinstance(got, TallyError):
                    failed[oid] = got
                    continue
                payload, size = got
                builder.add(oid, payload, form=packfile.ZSTD if compressed else packfile.RAW,
                            size=size)
                if builder.size >= PACK_TARGET:
                    session.send_pack(builder)
                    builder = PackBuilder()
            if len(builder):
                session.send_pack(builder)
            session.wait_all()
        if session.packs or session.large:
            session.write_index()
    finally:
        session.pool = None
    meter.finish()
    return Pushed(session.sent, session.sent_bytes, session.pack_count, session.large_count,
                  present, session.indexes, failed)


READ_BATCH = 512  # small objects read ahead at a time, on READ_THREADS threads
READ_THREADS = 8  # reads of cold small files wait on the disk: several in flight


def _read_all(small: list[tuple[str, str, bool, int]], verify: bool, jobs: int):
    """(oid, compressed, (payload, size) or the TallyError) for each small object, in
    order, read and checked READ_BATCH at a time on threads (a cold 2 KiB file costs
    a disk read; one at a time, 50,000 of them were most of a push)."""
    def one(item: tuple[str, str, bool, int]):
        oid, path, compressed, _ = item
        try:
            return oid, compressed, _read_checked(oid, path, compressed, verify)
        except TallyError as exc:
            return oid, compressed, exc

    if len(small) <= READ_BATCH:
        yield from map(one, small)
        return
    with ThreadPoolExecutor(max(READ_THREADS, jobs)) as pool:
        ahead = pool.map(one, small[:READ_BATCH])
        for start in range(READ_BATCH, len(small) + READ_BATCH, READ_BATCH):
            nxt = pool.map(one, small[start:start + READ_BATCH]) if start < len(small) else None
            yield from ahead
            ahead = nxt


def _read_checked(oid: str, path: str, compressed: bool, verify: bool) -> tuple[bytes, int]:
    """(stored bytes, content size) of a local object file, verified against `oid`."""
    try:
        with open(path, "rb", buffering=0) as f:
            payload = f.read()
    except FileNotFoundError:
        raise ObjectMissing(oid) from None
    if not compressed:
        if verify and hashing.hash_bytes(payload) != oid:
            raise CorruptObject(oid, "content does not hash to its id (not pushed)", path=path)
        return payload, len(payload)
    content = codec.decompress(oid, payload, max_size=packfile.MAX_SMALL_SIZE, path=path)
    if verify and hashing.hash_bytes(content) != oid:
        raise CorruptObject(oid, "content does not hash to its id (not pushed)", path=path)
    return payload, len(content)


class _Session:
    """The packs and large objects of one push, sent on a pool, indexed at the end."""

    def __init__(self, remote: Remote, meter: Meter) -> None:
        self.remote = remote
        self.meter = meter
        self.pool: ThreadPoolExecutor | None = None
        self.futures: list[Future] = []
        self.packs: dict[str, int] = {}
        self.small: dict[str, Small] = {}
        self.large: dict[str, Large] = {}
        self.indexes: list[str] = []
        self.sent = self.sent_bytes = self.pack_count = self.large_count = 0
        self._slots = threading.Semaphore(PACKS_IN_FLIGHT)
        self._lock = threading.Lock()

    def _done(self, objects: int, nbytes: int) -> None:
        with self._lock:
            self.sent += objects
            self.sent_bytes += nbytes
        self.meter.advance(objects, nbytes)

    def send_pack(self, builder: PackBuilder) -> None:
        rows = builder.rows
        pack_id, data = builder.finish()
        failpoint("push:before-pack")
        self._slots.acquire()  # released when sent: at most PACKS_IN_FLIGHT in memory

        def send() -> None:
            try:
                self.remote.backend.write(packfile.pack_key(pack_id), data, durable=False)
            finally:
                self._slots.release()
            failpoint("push:after-pack")
            self._done(len(rows), sum(r[2] for r in rows))  # objects' bytes: as planned

        self.futures.append(self.pool.submit(send))
        with self._lock:
            self.packs[pack_id] = len(data)
            self.pack_count += 1
            for oid, offset, length, form, size in rows:
                self.small[oid] = Small(pack_id, offset, length, form, size)
        if len(self.packs) >= INDEX_PACKS_MAX:
            self.wait_all()
            self.write_index()

    def send_large(self, oid: str, path: str, compressed: bool, nbytes: int, check: bool,
                   failed: dict[str, TallyError]) -> None:
        form = packfile.ZSTD if compressed else packfile.RAW

        def send() -> None:
            if check:
                got = codec.hash_file(oid, path) if compressed else hashing.hash_file(path)
                if got != oid:
                    failed[oid] = CorruptObject(oid, "content does not hash to its id "
                                                     "(not pushed)", path=path)
                    return
            size = nbytes if not compressed else _frame_size(oid, path)
            failpoint("push:before-large")
            self.remote.backend.upload(packfile.large_key(oid, form), path, jobs=self.remote.jobs,
                                       durable=False)
            failpoint("push:after-large")
            with self._lock:
                self.large[oid] = Large(form, nbytes, size)
                self.large_count += 1
            self._done(1, nbytes)

        self.futures.append(self.pool.submit(send))

    def wait_all(self) -> None:
        """Wait for every transfer; raise the first failure (after all have ended)."""
        futures, self.futures = self.futures, []
        first: BaseException | None = None
        for f in futures:
            try:
                f.result()
            except BaseException as exc:  # noqa: BLE001 - re-raised below
                first = first or exc
        if first is not None:
            raise first

    def write_index(self) -> None:
        """Write the index naming everything sent so far (all acknowledged)."""
        failpoint("push:before-index")
        self.remote.backend.barrier()  # what the index names is durable before it
        data = packfile.encode_index(self.packs, self.small, self.large)
        index_id = hashing.hash_bytes(data)
        self.remote.backend.write(packfile.index_key(index_id), data)
        failpoint("push:after-index")
        idx = packfile.Index(dict(self.packs), dict(self.small), dict(self.large))
        cat = self.remote.catalog()
        cat.add(index_id, idx)
        if self.remote.cache_dir is not None:
            from cas.core.fsops import atomic_write
            d = self.remote.cache_dir / "index"
            d.mkdir(parents=True, exist_ok=True)
            atomic_write(d / f"{index_id}.idx", data, durable=False)
        self.indexes.append(index_id)
        self.packs, self.small, self.large = {}, {}, {}


def _frame_size(oid: str, path: str) -> int:
    """The content size a zstd object file declares (its frame header)."""
    import zstandard
    with open(path, "rb") as f:
        head = f.read(18)  # a frame header is at most 18 bytes
    try:
        size = zstandard.get_frame_parameters(head).content_size
    except zstandard.ZstdError as exc:
        raise CorruptObject(oid, f"bad zstd frame: {exc}", path=path) from None
    if size in (zstandard.CONTENTSIZE_UNKNOWN, zstandard.CONTENTSIZE_ERROR):
        raise CorruptObject(oid, "zstd frame without a content size", path=path)
    return size


__all__ = ["push_objects", "Pushed", "SMALL_MAX", "PACK_TARGET"]
