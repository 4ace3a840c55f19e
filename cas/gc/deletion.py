"""gc's deletion: the plan's levels unlinked in order with a barrier between them,
big levels in forked children, then stale temp files and the stat-cache entries of
what went (spec/gc.md, "The algorithm", pass B steps 4-6, and "Deletion order and the
crash argument").

Split from cas/gc/collect.py by noun: the algorithm (what may go) lives there, the inventory
in cas/gc/inventory.py, the deleting here. Nothing here decides reachability: `sweep`
is handed the plan and the live marks, and hands each object freshened meanwhile
back to its caller to keep.

gc calls these through the module (`gcsweep.barrier(...)`) and this module calls the
inventory's `restat` the same way, so a test's monkeypatch of a name here (or there)
reaches every caller, the forked children included (they inherit it).
"""

from __future__ import annotations

import os
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable

from cas.gc import inventory as gcinventory
from cas.core.failpoints import failpoint  # noqa: F401 - also gc's (collect.py calls gcsweep.failpoint)
from cas.core.fsops import syncfs
from cas.gc.inventory import Obj, RAW, ZST
from cas.gc.report import Deleted
from cas.workspace.project import Project

# Deleters (child processes, or threads where there is no fork) for a level of at least
# PARALLEL_MIN objects; smaller ones are deleted inline, in order. unlink(2) mostly
# waits: here (ext4 mounted with `discard`, 2 cores) each one frees its blocks with a
# synchronous discard, and 32 keep enough of them in flight (53,000 unlinks: 5.9 s on
# 8 threads, 2.2-3.4 s on 32).
DELETE_THREADS = 32
PARALLEL_MIN = 64
FORK = hasattr(os, "fork")  # big levels go to child processes (_delete_forked)
PER_CHILD = 256  # objects per child process at least, up to DELETE_THREADS children
# Temp files are removed only when older than max(grace, this): a process that does not
# take the store lock (status reads the filesystem clock through a marker file) keeps
# one for microseconds, and `--grace 0` must not pull it out from under it.
TMP_FLOOR_S = 60.0
# What the store's own processes leave in .tally/tmp/ when they die: Writer temp files
# (`<tag>-<pid>-<8 hex>-<n>`), stat-cache clock markers, reflink probes. Anything else
# there (run directories, run logs, a queue's files) belongs to its owner.
TMP_PATTERNS = (re.compile(r"\A[a-z]+-\d+-[0-9a-f]{8}-\d+\Z"),
                re.compile(r"\Aclock-\d+-\d+\Z"),
                re.compile(r"\A\.reflink-probe-\d+-[ab]\Z"))


# ------------------------------------------------------------------------- objects

def _paths(store, oid: str, forms: int) -> list[str]:
    return [p for bit, p in ((RAW, store.raw_path(oid)), (ZST, store.zst_path(oid))) if forms & bit]


def unlink_object(store, oid: str, forms: int) -> None:
    """Delete the object's files (the forms given); one already gone is not an error.

    Every deletion of a sweep goes through here, called through the module in this
    process and in its forked children: the seam a test wraps to see the deletion
    order or to make one deletion fail (tests/unit/test_gc.py).
    """
    for path in _paths(store, oid, forms):
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass


def barrier(store) -> None:
    """Make every unlink so far durable before the next level starts."""
    if store.options.fsync != "off":
        syncfs(store.root)


def _parts(items: list, n: int) -> list[list]:
    """`items` cut in at most `n` contiguous parts of (nearly) equal length."""
    size = -(-len(items) // n)
    return [items[i:i + size] for i in range(0, len(items), size)]


def _delete_forked(store, todo: list[str], kinds: dict[str, str], inv: dict[str, Obj],
                   cutoff: int, idle: Callable[[], None] | None = None
                   ) -> list[tuple[list[Deleted], list[str]]]:
    """_delete_some over DELETE_THREADS contiguous parts of `todo`, each in a forked
    child process: unlink(2) mostly waits (see DELETE_THREADS), and threads waiting
    in the kernel hand the GIL back and forth (15 futex calls per object, twice the
    kernel time of the unlinks themselves). A child reports only what is unusual (an
    object gone already, freshened, or changed in size or links) and how far it got.

    The children inherit the store lock's descriptor, so the lock is held until the
    last of them exits even if this process dies; and they are killed and reaped
    before this returns or raises, so none outlives the sweep. `idle` runs here while
    they work.
    """
    from functools import partial

    from cas.core import forked

    # A fork costs ~4 ms here (page tables of a process holding the whole plan): one
    # child per PER_CHILD objects, up to DELETE_THREADS of them.
    parts = _parts(todo, min(DELETE_THREADS, -(-len(todo) // PER_CHILD)))
    kids: list[tuple[forked.Child, list[str]]] = []
    try:
        for part in parts:
            kids.append((forked.start(partial(_delete_child, store, part, inv, cutoff)), part))
        if idle is not None:
            idle()  # our own work while the children's waits on the disk (no thread: fork)
        results = []
        error: BaseException | None = None
        for child, part in kids:
            # Each child writes its report as it exits: reading them one after the
            # other only keeps a finished child waiting on its pipe a little.
            report, status = child.result()
            gone, young = [], []
            odd: dict[str, tuple[str, ...]] = {}
            done = 0
            for line in report.decode("utf-8", "surrogateescape").splitlines():
                tag, _, rest = line.partition(" ")
                if tag == "N":
                    done = int(rest)
                elif tag == "E":
                    errno_, _, filename = rest.partition(" ")
                    error = error or OSError(int(errno_), os.strerror(int(errno_)), filename or None)
                else:
                    fields = rest.split(" ")
                    odd[fields[0]] = (tag, *fields[1:])
            for oid in part[:done]:
                o, x = inv[oid], odd.get(oid)
                if x is None:
                    gone.append(Deleted(oid, kinds[oid], o.size, o.nlink > 1))
                elif x[0] == "Y":
                    young.append(oid)
                elif x[0] == "S":
                    gone.append(Deleted(oid, kinds[oid], int(x[1]), int(x[2]) > 1))
            results.append((gone, young))
            code = os.waitstatus_to_exitcode(status)
            if code != 0 and error is None:
                # Killed, or an unexpected failure: what it deleted is unknown (a rerun
                # finds whatever is left), so stop rather than report a guess.
                how = f"died of signal {-code}" if code < 0 else f"failed (exit {code})"
                error = RuntimeError(f"a gc deletion process {how}; rerun gc to finish the sweep")
        if error is not None:
            raise error
        return results
    finally:
        forked.stop_all(child for child, _ in kids)


def _delete_child(store, part: list[str], inv: dict[str, Obj], cutoff: int) -> bytes:
    """A forked child's sweep of `part` (see _delete_forked): its report.

    One line per unusual object (G gone already, Y freshened, S size or links
    changed), `E errno filename` for an OSError that stopped it, and `N done`, how
    many of `part` it got through. Anything else it raises makes it exit 1 with an
    empty report (cas/core/forked.py), which the parent takes as "stop".
    """
    lines, done = [], 0
    try:
        for oid in part:
            o = inv[oid]
            now = gcinventory.restat(store, oid, o)
            if now is None:
                lines.append(f"G {oid}")
            elif now.newest_ns > cutoff:
                lines.append(f"Y {oid}")
            else:
                failpoint("gc:delete", parent=True)
                unlink_object(store, oid, now.forms)
                if now.size != o.size or now.nlink != o.nlink:
                    lines.append(f"S {oid} {now.size} {now.nlink}")
            done += 1
    except OSError as exc:
        lines.append(f"E {exc.errno or 0} {exc.filename or ''}")
    lines.append(f"N {done}")
    return ("\n".join(lines) + "\n").encode()


def _delete_some(store, oids: list[str], kinds: dict[str, str], inv: dict[str, Obj],
                 cutoff: int) -> tuple[list[Deleted], list[str]]:
    """Re-stat and delete each of `oids`; returns (deleted, freshened and so kept)."""
    gone: list[Deleted] = []
    fresh: list[str] = []
    for oid in oids:
        o = gcinventory.restat(store, oid, inv[oid])
        if o is None:
            continue  # gone already (fsck --repair, another gc before us)
        if o.newest_ns > cutoff:
            fresh.append(oid)
            continue
        failpoint("gc:delete")
        unlink_object(store, oid, o.forms)
        gone.append(Deleted(oid, kinds[oid], o.size, o.nlink > 1))
    return gone, fresh


def sweep(store, levels: list[list[str]], kinds: dict[str, str], inv: dict[str, Obj],
          marks: dict[str, int], cutoff: int, *, keep: Callable[[list[str]], None],
          idle: Callable[[], None] = lambda: None) -> list[Deleted]:
    """Delete the levels in order, each made durable before the next.

    Each object is re-statted right before its unlink. One that got younger than
    `cutoff` since the inventory (freshened by a writer that does not take the lock)
    is kept and passed to `keep` (gc walks it as a `grace` root, which marks it and
    all it reaches) before the next level starts; everything it reaches is in a later
    level (nothing in a level names anything in it or before it), so it is all still
    there and now kept too.

    Args:
        marks: the marker's live marks; an object marked when its level starts is kept.
        keep: called with a level's freshened objects, in order, once that level is done.
        idle: called once: while the children delete the last level, or at the end.
    Returns:
        What was deleted, level by level.
    """
    deleted: list[Deleted] = []
    pending = [idle]  # not called yet
    pool: ThreadPoolExecutor | None = None
    last = max((i for i, level in enumerate(levels) if level), default=-1)
    try:
        for i, level in enumerate(levels):
            todo = [oid for oid in level if oid not in marks]
            if not todo:
                continue
            # unlink(2) mostly waits (DELETE_THREADS): levels of PARALLEL_MIN objects or
            # more go to child processes (threads where there is no fork), each a
            # contiguous run of the sorted ids, so in its own shard directories.
            # Smaller ones are deleted inline, in order.
            if len(todo) < PARALLEL_MIN:
                results = [_delete_some(store, todo, kinds, inv, cutoff)]
            elif FORK:
                results = _delete_forked(store, todo, kinds, inv, cutoff,
                                         idle=pending.pop() if i == last else None)
            else:
                if pool is None:
                    pool = ThreadPoolExecutor(max_workers=DELETE_THREADS)
                results = list(pool.map(lambda part: _delete_some(store, part, kinds, inv, cutoff),
                                        _parts(todo, DELETE_THREADS)))
            fresh = []
            for gone, young in results:
                deleted.extend(gone)
                fresh.extend(young)
            if fresh:
                keep(fresh)
            if i != last:
                # The last level needs no barrier: no later deletion depends on it, and
                # what a crash brings back of it is garbage the next gc finds again.
                barrier(store)
            failpoint("gc:level")
    finally:
        if pool is not None:
            pool.shutdown()
    for call in pending:
        call()
    return deleted


# ------------------------------------------------------------------------- after the sweep

def _temp_entries(store, fs_now: int, grace_s: float) -> list[tuple[str, int]]:
    """(name, size) of each of the store's own temp files older than
    max(grace_s, TMP_FLOOR_S) by the filesystem clock `fs_now`, sorted by name."""
    cutoff = fs_now - int(max(grace_s, TMP_FLOOR_S) * 1e9)
    out = []
    try:
        it = os.scandir(store.tmp)
    except FileNotFoundError:
        return out
    with it:
        for ent in it:
            if not any(p.match(ent.name) for p in TMP_PATTERNS):
                continue
            try:
                st = ent.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue
            if not ent.is_file(follow_symlinks=False):
                continue
            if max(st.st_mtime_ns, st.st_ctime_ns) <= cutoff:
                out.append((ent.name, st.st_size))
    return sorted(out)


def stale_temp(store, fs_now: int, grace_s: float) -> tuple[list[str], int]:
    """The stale temp files' names and total size (a dry run's report)."""
    found = _temp_entries(store, fs_now, grace_s)
    return [n for n, _ in found], sum(s for _, s in found)


def remove_stale_temp(store, fs_now: int, grace_s: float) -> tuple[list[str], int]:
    """Remove the stale temp files; returns the names and total size of those removed."""
    names, total = [], 0
    for name, size in _temp_entries(store, fs_now, grace_s):
        try:
            os.unlink(Path(store.tmp, name))
        except FileNotFoundError:
            continue
        names.append(name)
        total += size
    return names, total


def forget(project: Project, oids: set[str]) -> None:
    """Drop the stat-cache entries naming `oids`; hygiene, never correctness: a stale
    entry still states a true fact (those bytes hash to that id), and a writer checks
    that the object exists before trusting an entry. An object the sweep then keeps
    (freshened meanwhile) loses its entries too: its file is hashed again next time.
    """
    if not oids or not (project.store_dir / "statcache.db").exists():
        return
    project.statcache.forget_oids(oids)
