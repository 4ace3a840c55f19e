"""What the remote has: every index merged into one lookup, in a few requests.

One LIST of `index/` names the indexes; each one not already in the local cache is
fetched (in parallel), checked against its name and decoded, then kept in

    .tally/remotes/<remote key>/index/<64 hex>.idx

Indexes are immutable and named by their own hash, so a cached copy is valid for as
long as the remote lists its name: a no-op push of 50,000 files costs one LIST and
reading local files. Cached files of indexes the remote no longer lists (remote gc
consolidated them) are deleted when seen. The cache is checked again on every load
(the BLAKE3 of ~2 MiB is ~1 ms), so a damaged cache file is re-fetched, not trusted.

An object named by two indexes (two pushers sent it at once, or gc wrote its
consolidated index before deleting the old ones) has two places; any is good, and
the first seen is used.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from cas.core.errors import FormatError, NotFound
from cas.core.fsops import atomic_write, unlink_quiet
from cas.remote import layout, packfile
from cas.remote.backend import Backend, Entry
from cas.remote.packfile import Large, Small


class Catalog:
    """The merged indexes of one remote (as of one listing)."""

    def __init__(self) -> None:
        self.indexes: dict[str, Entry] = {}  # index id -> its listing entry
        self.packs: dict[str, int] = {}  # pack id -> size
        self.small: dict[str, Small] = {}
        self.large: dict[str, Large] = {}
        self.index_of_pack: dict[str, str] = {}  # pack id -> an index naming it

    def has(self, oid: str) -> bool:
        return oid in self.small or oid in self.large

    def __len__(self) -> int:
        return len(self.small) + len(self.large.keys() - self.small.keys())

    def add(self, index_id: str, idx: packfile.Index) -> None:
        for p, size in idx.packs.items():
            self.packs.setdefault(p, size)
            self.index_of_pack.setdefault(p, index_id)
        for oid, s in idx.small.items():
            self.small.setdefault(oid, s)
        for oid, g in idx.large.items():
            self.large.setdefault(oid, g)

    def stored_bytes(self, oid: str) -> int:
        s = self.small.get(oid)
        if s is not None:
            return s.length
        return self.large[oid].length


def load(backend: Backend, cache_dir: Path | None, *, jobs: int = 8) -> Catalog:
    """List and read every index of the remote (cached ones from `cache_dir`).

    Raises:
        FormatError: an index that does not decode or hash to its name.
        RemoteError: the remote cannot be listed or read.
    """
    cat = Catalog()
    listed = {layout.parse_index_key(e.key): e for e in backend.list(layout.INDEX)}
    cat.indexes = listed
    cdir = None if cache_dir is None else cache_dir / "index"
    cached: dict[str, packfile.Index] = {}
    if cdir is not None:
        try:
            names = os.listdir(cdir)
        except FileNotFoundError:
            names = []
        for name in names:
            iid = name[:-4] if name.endswith(".idx") else None
            path = cdir / name
            if iid is None or iid not in listed:
                unlink_quiet(path)  # consolidated away by gc, or not ours
                continue
            try:
                cached[iid] = packfile.decode_index(path.read_bytes(), index_id=iid)
            except (OSError, FormatError):
                unlink_quiet(path)  # fetch it again
    todo = [iid for iid in sorted(listed) if iid not in cached]

    def fetch(iid: str) -> tuple[str, packfile.Index | None]:
        key = packfile.index_key(iid)
        try:
            data = backend.read(key, max_size=packfile.MAX_INDEX_SIZE)
        except NotFound:
            return iid, None  # deleted by a gc since the listing: it named nothing we need
        idx = packfile.decode_index(data, index_id=iid)
        if cdir is not None:
            cdir.mkdir(parents=True, exist_ok=True)
            atomic_write(cdir / f"{iid}.idx", data, durable=False)
        return iid, idx

    if todo:
        with ThreadPoolExecutor(max(1, min(jobs, len(todo)))) as pool:
            for iid, idx in pool.map(fetch, todo):
                if idx is None:
                    del cat.indexes[iid]
                else:
                    cached[iid] = idx
    for iid in sorted(cached):
        cat.add(iid, cached[iid])
    return cat



__all__ = ["Catalog", "load"]
