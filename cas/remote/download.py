"""Receiving objects: ranged reads from packs, large objects in parallel parts, every
byte verified against its id before it is published in the local store.

`fetch_closure` brings whatever a set of roots reaches (records -> workspace trees,
outputs, logs, checkpoints; trees -> entries) and is missing locally. It walks
breadth-first, one round of requests per level of the graph, because a tree's
entries are known only once the tree is read. Objects present locally are still
opened and walked (spec/store.md, write-ordering invariant 5: presence says nothing
about children), so a rerun after a killed fetch completes exactly what is missing.

Publishing keeps the local store's order, blobs before the trees that name them and
trees before records: blobs are staged on the Writer as they arrive (leaves name
nothing), structured objects are held in memory (verified) and staged at the end,
deepest level first. One Writer flush then publishes them in that order.

A pack's objects are read with as few requests as possible: the wanted rows of one
pack are sorted by offset and cut into spans, merging neighbours less than GAP_MAX
apart, each span at most SPAN_MAX: one request per span, `jobs` in flight. What a
span holds is sliced by the index's offsets (checked in packfile.decode_index to lie
inside the pack) and each object is verified alone: one damaged object fails only
itself; a truncated pack or a missing one fails what it should have held, naming
the pack and the remote. Nothing unverified is ever published.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Iterable, NamedTuple

from cas.core import hashing
from cas.core.fsops import unlink_quiet
from cas.core.errors import Corruption, CorruptObject, NotFound, ObjectMissing, TallyError
from cas.objects import envelope, record as record_mod, tree as tree_mod
from cas.remote import packfile
from cas.remote.connect import Remote
from cas.remote.progress import Meter
from cas.store import zstdframe as codec

TREE, BLOB, RECORD = "tree", "blob", "record"
GAP_MAX = 1024 * 1024  # bytes of unwanted objects a span may read through
SPAN_MAX = 8 * 1024 * 1024  # bytes: one ranged read at most (jobs in flight: bounds memory)


class Fetched(NamedTuple):
    received: int  # objects published
    received_bytes: int  # stored bytes downloaded for them
    present: int  # already local
    failed: dict[str, TallyError]  # oid -> why it could not be fetched
    incomplete: set[str]  # failed ones, and every structured object above one


def missing_on_remote(remote: Remote, oid: str) -> ObjectMissing:
    return ObjectMissing(oid, hint=f"the remote {remote.name or remote.url} does not have it "
                                   "either: push it from a store that does")


def children(kind: str, content: bytes) -> list[tuple[str, str]]:
    """What a verified structured object names, with kinds (required edges only)."""
    if kind == TREE:
        t = tree_mod.decode(content)
        return [(e.oid, TREE if e.kind == tree_mod.DIR else BLOB) for e in t.entries]
    if kind == RECORD:
        rec = record_mod.decode(content)
        out = [(rec.workspace, TREE)] if rec.workspace else []
        out += [(o, TREE if d else BLOB) for o, d in rec.outs.values()]
        if rec.logs:
            out.append((rec.logs, BLOB))
        out += [(t, TREE) for _, t in rec.checkpoints]
        return out
    return []


def fetch_closure(store, remote: Remote, roots: Iterable[tuple[str, str]], writer, *,
                  meter: Meter | None = None) -> Fetched:
    """Fetch everything `roots` ((oid, kind) with kind tree, blob or record) reach that
    the local store lacks, staging it on `writer` (the caller flushes it, then
    writes the refs or pointers that name it).

    The caller holds the local store lock shared. An object missing on the remote,
    damaged there, or in a pack the remote lost is in `failed`, with everything
    below it that could not be reached; the rest is fetched.
    Raises:
        RemoteError and subclasses: the remote itself failed (after retries).
    """
    meter = meter or Meter("fetch")
    failed: dict[str, TallyError] = {}
    seen: set[str] = set()
    levels: list[list[str]] = []  # structured objects expanded, per level
    children_of: dict[str, list[str]] = {}
    held: dict[str, tuple[bytes, bool, int]] = {}  # fetched structured: payload, zstd, size
    frontier = []
    for oid, kind in roots:
        if oid not in seen:
            seen.add(oid)
            frontier.append((oid, kind))
    received = received_bytes = present = 0
    cat = None
    while frontier:
        level: list[str] = []
        want: list[tuple[str, str]] = []

        def expand(oid: str, kind: str, content: bytes) -> None:
            try:
                kids = children(kind, content)
            except TallyError as exc:
                failed[oid] = exc
                return
            children_of[oid] = [o for o, _ in kids]
            level.append(oid)
            nxt.extend(kids)

        nxt: list[tuple[str, str]] = []
        for oid, kind in frontier:
            if store.has(oid):
                present += 1
                if kind != BLOB:
                    try:
                        expand(oid, kind, store.get(oid, max_size=envelope.MAX_STRUCT_SIZE))
                    except TallyError as exc:
                        failed[oid] = exc
            else:
                want.append((oid, kind))
        if want:
            if cat is None:
                cat = remote.catalog()
            before = meter.bytes
            for oid, kind, payload, compressed, size, content in \
                    _download(remote, cat, want, writer, meter, failed):
                held[oid] = (payload, compressed, size)
                expand(oid, kind, content)
            received += sum(1 for o, _ in want if o not in failed)
            received_bytes += meter.bytes - before
        levels.append(level)
        frontier = []
        for oid, kind in nxt:
            if oid not in seen:
                seen.add(oid)
                frontier.append((oid, kind))
    # A structured object is published only when everything below it is there: a
    # tree whose blob could not be fetched stays out, as does every tree above it.
    incomplete = set(failed)
    for level in reversed(levels):
        for oid in level:
            if any(c in incomplete for c in children_of.get(oid, ())):
                incomplete.add(oid)
    for level in reversed(levels):  # deepest trees first, records last
        for oid in level:
            if oid in held and oid not in incomplete:
                payload, compressed, size = held[oid]
                writer.put_stored(oid, payload, compressed=compressed, size=size)
    meter.finish()
    return Fetched(received, received_bytes, present, failed, incomplete)


def fetch_objects(store, remote: Remote, oids: Iterable[str], writer, *,
                  meter: Meter | None = None) -> Fetched:
    """Fetch these objects themselves (as blobs: nothing below them is followed)."""
    return fetch_closure(store, remote, [(o, BLOB) for o in oids], writer, meter=meter)


def read_structured(remote: Remote, oids: list[tuple[str, str]], tmp_store
                    ) -> tuple[dict[str, bytes], dict[str, TallyError]]:
    """Download structured objects ((oid, kind), kind not blob) into memory, verified,
    publishing nothing (`show --remote` reads records this way). `tmp_store` gives
    temp files for the rare one stored alone. Returns (oid -> content, failures)."""
    failed: dict[str, TallyError] = {}
    got = _download(remote, remote.catalog(), oids, None, Meter("read"), failed,
                    tmp_store=tmp_store)
    return {oid: content for oid, _, _, _, _, content in got}, failed


def _download(remote: Remote, cat, want: list[tuple[str, str]], writer, meter: Meter,
              failed: dict[str, TallyError], *, tmp_store=None
              ) -> list[tuple[str, str, bytes, bool, int, bytes]]:
    """Download `want`; blobs are staged on `writer` at once, structured objects are
    returned verified (oid, kind, payload, zstd?, size, content). Failures go to `failed`."""
    by_pack: dict[str, list[tuple[str, str, packfile.Small]]] = {}
    large: list[tuple[str, str, packfile.Large]] = []
    total = 0
    for oid, kind in want:
        s = cat.small.get(oid)
        if s is not None:
            by_pack.setdefault(s.pack, []).append((oid, kind, s))
            total += s.length
            continue
        g = cat.large.get(oid)
        if g is not None:
            large.append((oid, kind, g))
            total += g.length
            continue
        failed[oid] = missing_on_remote(remote, oid)
    meter.plan(len(want) - len(failed.keys() & {o for o, _ in want}), total)
    out: list[tuple[str, str, bytes, bool, int, bytes]] = []
    lock = threading.Lock()
    store = tmp_store if tmp_store is not None else writer.store

    def accept(oid: str, kind: str, payload: bytes, compressed: bool, size: int) -> None:
        try:
            if kind == BLOB:
                writer.put_stored(oid, payload, compressed=compressed, size=size)
            else:
                content = _verify(remote, oid, payload, compressed, size)
                with lock:
                    out.append((oid, kind, payload, compressed, size, content))
        except CorruptObject as exc:
            failed[oid] = CorruptObject(oid, f"{exc.message.split(': ', 1)[-1]} (received from "
                                             f"the remote {remote.name or remote.url})")
        meter.advance(1, len(payload))

    def span_task(pack: str, rows: list[tuple[str, str, packfile.Small]]) -> None:
        start = rows[0][2].offset
        end = max(s.offset + s.length for _, _, s in rows)
        key = packfile.pack_key(pack)
        try:
            data = remote.backend.read_range(key, start, end - start)
        except NotFound:
            err = Corruption(f"the remote {remote.name or remote.url} lost pack {pack[:16]} "
                             f"(an index names it, the pack is missing)", path=remote.backend.where(key),
                             hint="push the objects again from a store that has them")
            for oid, _, _ in rows:
                failed[oid] = err
            return
        except Corruption as exc:  # truncated
            for oid, _, _ in rows:
                failed[oid] = exc
            return
        for oid, kind, s in rows:
            payload = data[s.offset - start:s.offset - start + s.length]
            accept(oid, kind, payload, s.form == packfile.ZSTD, s.size)

    def large_task(oid: str, kind: str, g: packfile.Large) -> None:
        key = packfile.large_key(oid, g.form)
        tmp = store.tmp_path("rx")
        compressed = g.form == packfile.ZSTD
        try:
            remote.backend.download(key, tmp, size=g.length, jobs=remote.jobs)
        except NotFound:
            unlink_quiet(tmp)
            failed[oid] = Corruption(f"the remote {remote.name or remote.url} lost object "
                                     f"{oid[:16]} (an index names it, the file is missing)",
                                     path=remote.backend.where(key))
            return
        except BaseException as exc:
            unlink_quiet(tmp)
            if isinstance(exc, Corruption):
                failed[oid] = exc
                return
            raise
        if kind == BLOB:
            try:
                writer.adopt(oid, tmp, compressed=compressed)
            except CorruptObject:
                failed[oid] = CorruptObject(oid, "received bytes do not hash to its id (from the "
                                                 f"remote {remote.name or remote.url})")
            meter.advance(1, g.length)
            return
        with open(tmp, "rb") as f:
            payload = f.read(envelope.MAX_STRUCT_SIZE + 1)
        unlink_quiet(tmp)
        accept(oid, kind, payload, compressed, g.size)

    tasks = []
    for pack, rows in by_pack.items():
        rows.sort(key=lambda r: r[2].offset)
        span: list[tuple[str, str, packfile.Small]] = []
        first = last_end = 0
        for row in rows:
            s = row[2]
            if span and (s.offset - last_end > GAP_MAX or s.offset + s.length - first > SPAN_MAX):
                tasks.append((span_task, (pack, span)))
                span = []
            if not span:
                first = last_end = s.offset
            span.append(row)
            last_end = max(last_end, s.offset + s.length)
        if span:
            tasks.append((span_task, (pack, span)))
    tasks += [(large_task, item) for item in large]
    if not tasks:
        return out
    with ThreadPoolExecutor(max(1, min(remote.jobs, len(tasks)))) as pool:
        for f in [pool.submit(fn, *args) for fn, args in tasks]:
            f.result()
    return out


def _verify(remote: Remote, oid: str, payload: bytes, compressed: bool, size: int) -> bytes:
    if size > envelope.MAX_STRUCT_SIZE:
        raise CorruptObject(oid, f"a structured object of {size} bytes is over the limit")
    content = codec.decompress(oid, payload, max_size=size) if compressed else payload
    if len(content) != size or hashing.hash_bytes(content) != oid:
        raise CorruptObject(oid, "received bytes do not hash to its id")
    return content



__all__ = ["fetch_closure", "fetch_objects", "read_structured", "Fetched", "TREE", "BLOB", "RECORD"]
