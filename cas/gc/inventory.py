"""gc's picture of the store: every object file with its form and age, and the read
cache gc shares with the root providers (spec/gc.md, "The algorithm").

Split from cas/gc/collect.py by noun: the algorithm lives there, the deletion in
cas/gc/deletion.py, the inventory and the reads here. gc calls these through the module
(`gcinventory.inventory(...)`), so a test's monkeypatch of a name here reaches every
caller, the sweep's forked children included.
"""

from __future__ import annotations

import copy
import io
import os
import re
from dataclasses import dataclass
from typing import Callable

from cas.store import zstdframe as codec
from cas.objects import envelope
from cas.core import hashing
from cas.core.errors import CorruptObject, from_os_error
from cas.workspace.project import Project
from cas.store.writer import RAW_MAX

RAW, ZST = 1, 2  # Obj.forms bits: which files hold the object (spec/store.md, "Form")
# An object file's name inside its shard: the id's last 62 hex digits, `.zst` for the
# zstd form. Anything else there (a stray file, a temp name) is not an object.
_NAME_RE = re.compile(r"[0-9a-f]{62}(?:\.zst)?")
_SHARD_RE = re.compile(r"[0-9a-f]{2}")
_ZST_NAME_LEN = 62 + 4  # 62 hex digits + ".zst"


@dataclass(slots=True)
class Obj:
    """One object as the inventory (or a re-stat) found it."""

    size: int  # both forms
    newest_ns: int  # max over forms of max(mtime, ctime)
    nlink: int
    forms: int = RAW  # RAW | ZST


def inventory(store) -> dict[str, Obj]:
    """Every object file with its lstat: one listdir per shard and one lstat per file.

    A lean FileStore.scan: the form and the age are all gc needs, and at 50,000 objects
    the records and paths scan() builds (and os.scandir's entries) cost more than
    the lstat itself.
    """
    inv: dict[str, Obj] = {}
    objects = os.fspath(store.objects)
    try:
        shards = sorted(n for n in os.listdir(objects) if _SHARD_RE.fullmatch(n))
    except FileNotFoundError:
        return inv
    is_name, lstat = _NAME_RE.fullmatch, os.lstat
    for shard in shards:
        d = f"{objects}/{shard}/"
        try:
            names = os.listdir(d)
        except (FileNotFoundError, NotADirectoryError):
            continue  # emptied and removed meanwhile, or not a shard
        for name in names:
            if is_name(name) is None:
                continue
            try:
                st = lstat(d + name)
            except FileNotFoundError:
                continue  # deleted while we listed
            oid = shard + name[:62]
            form = ZST if len(name) == _ZST_NAME_LEN else RAW
            m, c = st.st_mtime_ns, st.st_ctime_ns
            o = inv.get(oid)
            if o is None:
                inv[oid] = Obj(st.st_size, m if m > c else c, st.st_nlink, form)
            else:  # both forms present (a crash between two publishes of one id)
                o.size += st.st_size
                o.newest_ns = max(o.newest_ns, m, c)
                o.nlink = max(o.nlink, st.st_nlink)
                o.forms |= form
    return inv


def restat(store, oid: str, o: Obj) -> Obj | None:
    """The object's files as they are now; only the forms the inventory saw.

    A writer never adds the other form of an object it finds present (it freshens the
    one there), so the inventory's forms are the ones that can still hold it.

    Returns:
        None when every file the inventory saw is gone.
    """
    size, newest, nlink, forms = 0, 0, 1, 0
    for bit, path in ((RAW, store.raw_path(oid)), (ZST, store.zst_path(oid))):
        if not o.forms & bit:
            continue
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            continue
        forms |= bit
        size += st.st_size
        newest = max(newest, st.st_mtime_ns, st.st_ctime_ns)
        nlink = max(nlink, st.st_nlink)
    return Obj(size, newest, nlink, forms) if forms else None


class ReadCache:
    """The store as gc reads it: each object opened where the inventory found it, and
    small records and entries read once per run.

    Root providers read the records and entries they name (cas/store/refs.py loads every
    experiment's record to list its outputs) and the walker then needs the same bytes;
    pass B asks the providers again. Keeping those verified bytes (trees are left out:
    only the walker reads them, once) makes each such object one read per gc.
    Everything but `get` is the store's own.
    """

    ITEM_MAX = 64 * 1024  # bytes: records and entries are ~1 KiB; bigger ones are re-read

    def __init__(self, store) -> None:
        self._store = store
        self._kept: dict[str, bytes] = {}
        self.inv: dict[str, Obj] = {}  # set once the inventory is taken
        # The whole file of the last small object whose header was read: the walker
        # reads a structured object right after its header, and needs no second open.
        self.stash: tuple[str, bytes] | None = None

    def __getattr__(self, name: str):
        return getattr(self._store, name)

    def get(self, oid: str, *, max_size: int | None = None) -> bytes:
        """FileStore.get, without probing for the form when the inventory knows it."""
        data = self._kept.get(oid)
        if data is not None and (max_size is None or len(data) <= max_size):
            return data
        o = self.inv.get(oid)
        data = self._store.get(oid, max_size=max_size) if o is None else self._read(oid, o, max_size)
        if len(data) <= self.ITEM_MAX and data[:3] == envelope.MAGIC \
                and data[3:4] != envelope.KIND_TREE:
            self._kept[oid] = data
        return data

    def _read(self, oid: str, o: Obj, max_size: int | None) -> bytes:
        # The checks FileStore.get makes, in its order: size bound, then the hash.
        compressed = not o.forms & RAW
        path = self._store.zst_path(oid) if compressed else self._store.raw_path(oid)
        stash, self.stash = self.stash, None
        if stash is not None and stash[0] == oid:
            data = stash[1]
        else:
            try:
                with open(path, "rb", buffering=0) as f:
                    data = f.readall()
            except FileNotFoundError:
                return self._store.get(oid, max_size=max_size)  # gone since: the store says how
            except OSError as exc:
                raise from_os_error(exc, path=path, doing="reading an object") from None
        if compressed:
            data = codec.decompress(oid, data, max_size=max_size, path=path)
        elif max_size is not None and len(data) > max_size:
            raise CorruptObject(oid, f"{len(data)} bytes exceeds the expected {max_size}", path=path)
        if hashing.hash_bytes(data) != oid:
            raise CorruptObject(oid, "content does not hash to its id", path=path)
        return data

    def cached(self, oid: str) -> bytes | None:
        return self._kept.get(oid)


# First bytes read to find a zstd-form object's kind: a frame header (<= 18 bytes), a
# block header (3) and one whole block (<= 128 KiB), so that one read yields content.
HEAD_READ = 18 + 3 + 128 * 1024
# A raw object of at most this size is read whole to find its kind: it may be a
# structured object (stored raw up to writer.RAW_MAX), which the walker reads next,
# and one read of a block costs what a read of its first bytes does.
RAW_HEAD_READ = RAW_MAX


def head_reader(store, rstore: ReadCache, inv: dict[str, Obj]) -> Callable[[str], bytes]:
    """An object's envelope header, read from the form the inventory found (one open,
    no path probing), or taken from bytes already read.

    A structured object read whole on the way (a zstd form whose content fits in
    HEAD_READ, a raw one of at most RAW_HEAD_READ bytes) is stashed in `rstore`, so
    the read of its content that follows needs no second open."""
    size = envelope.HEADER_SIZE

    def head(oid: str) -> bytes:
        data = rstore.cached(oid)
        if data is not None:
            return data[:size]
        o = inv.get(oid)
        if o is None:  # published after the inventory
            return store.read_head(oid, size)
        compressed = not o.forms & RAW
        path = store.zst_path(oid) if compressed else store.raw_path(oid)
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            return store.read_head(oid, size)  # raises ObjectMissing when truly gone
        whole = not compressed and o.size <= RAW_HEAD_READ
        try:
            # One more byte than a small raw object has: a short read proves it whole.
            chunk = os.read(fd, HEAD_READ if compressed else RAW_HEAD_READ + 1 if whole else size)
        finally:
            os.close(fd)
        if not compressed:
            if whole and len(chunk) <= RAW_HEAD_READ and chunk[:3] == envelope.MAGIC:
                rstore.stash = (oid, chunk)
            return chunk[:size]
        got = codec.read_head(oid, io.BytesIO(chunk), size, path=path)
        if len(got) < size and len(chunk) == HEAD_READ:
            return store.read_head(oid, size)  # an odd frame: let the store stream it
        if len(chunk) < HEAD_READ and got[:3] == envelope.MAGIC:
            rstore.stash = (oid, chunk)  # the whole file, and the walker reads it next
        return got

    return head


def view(project: Project, rstore: ReadCache) -> Project:
    """`project` with gc's read cache as its store, for root providers and retention."""
    # A shallow copy, not dataclasses.replace: it works whether or not Project is a
    # dataclass, and it carries the cached properties already computed (the stat
    # cache among them: one SQLite connection per process) to the view.
    v = copy.copy(project)
    v.store = rstore  # shadows the cached property on this copy only
    return v
