"""gc: delete the objects no root needs, and never one that a root needs (spec/gc.md).

Mark, then sweep, in two passes so the store lock is held only briefly:

A. unlocked (the long part): take the inventory (every object file and its age), list
   the roots, walk everything they reach (cas/reachability.py), then keep also what
   any object younger than the grace period reaches. The unmarked rest, minus the
   young, is the plan. A dry run stops here and reports it.
B. under the `store` lock, exclusive (writers hold it shared from their first put
   until the root naming what they wrote is on disk): read every root again and walk
   what pass A has not walked (cheap: trees already marked are never re-read), re-stat
   the plan and keep whatever got younger, then drop the refs a retention policy
   chose, then delete: records and entries, then trees, then blobs (the reverse of
   the write order), with a syncfs barrier between layers, so at every instant and
   after any crash every object still present names only present objects. Last,
   stale temp files and the stat-cache entries of deleted objects go.

Only objects in pass A's inventory can be deleted, so anything published during the
run is out of reach by construction; the lock is what makes `--grace 0` safe for
writers that follow the protocol, and the grace period is what protects any that do
not (tests/test_gc_concurrency.py removes each in turn and shows the loss).

A root that names a missing or undecodable object stops gc before it deletes
anything (GcRefused, exit 5): reachability can no longer be proven. `force=True`
sweeps anyway, keeping what the readable part of the graph reaches.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

from . import git
from .duration import parse_duration
from .errors import LockBusy, NotFound, TallyError, UsageError
from .fsops import syncfs
from .project import Project
from .reachability import BLOB, LAYER, Walker
from .retention import Drop, Experiment, Policy, list_experiments, select
# Split by noun: results and roots live in their own modules; the names stay importable here.
from .gcreport import GRACE, ROOT_KINDS, Deleted, GcRefused, GcReport, RootStats  # noqa: F401
from .gcroots import History, Problem, Root, _commit_message_ids, provider_roots, workspace_lock_roots

LOCK_WAIT_S = 60.0  # seconds gc waits for writers to finish before giving up (exit 7)
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
DELETE_THREADS = 8


# ------------------------------------------------------------------------- inventory

@dataclass(slots=True)
class _Obj:
    size: int  # both forms
    newest_ns: int  # max over forms of max(mtime, ctime)
    nlink: int


def _inventory(store) -> dict[str, _Obj]:
    inv: dict[str, _Obj] = {}
    for so in store.scan():
        t = max(so.mtime_ns, so.ctime_ns)
        o = inv.get(so.oid)
        if o is None:
            inv[so.oid] = _Obj(so.size, t, so.nlink)
        else:  # both forms present (a crash between two publishes of one id)
            o.size += so.size
            o.newest_ns = max(o.newest_ns, t)
            o.nlink = max(o.nlink, so.nlink)
    return inv


def _restat(store, oid: str) -> _Obj | None:
    size, newest, nlink, found = 0, 0, 1, False
    for path in (store.raw_path(oid), store.zst_path(oid)):
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            continue
        found = True
        size += st.st_size
        newest = max(newest, st.st_mtime_ns, st.st_ctime_ns)
        nlink = max(nlink, st.st_nlink)
    return _Obj(size, newest, nlink) if found else None


# ------------------------------------------------------------------------- failpoints

_FAILPOINT = os.environ.get("TALLY_FAILPOINT", "")
_fail_hits: dict[str, int] = {}


def _failpoint(name: str) -> None:
    """Crash-injection hook for tests: TALLY_FAILPOINT=`name` or `name:N` SIGKILLs this
    process at the N-th time (default 1st) execution reaches `name`."""
    if not _FAILPOINT:
        return
    want, _, nth = _FAILPOINT.rpartition(":")
    if not nth.isdigit():
        want, nth = _FAILPOINT, "1"
    if want != name:
        return
    _fail_hits[name] = _fail_hits.get(name, 0) + 1
    if _fail_hits[name] == int(nth or 1):
        os.kill(os.getpid(), signal.SIGKILL)


# ------------------------------------------------------------------------- gc

class _Marker:
    """Walker + root bookkeeping: one bit per root kind, problems routed by phase."""

    def __init__(self, store, inv: dict[str, _Obj]) -> None:
        self.problems: list[Problem] = []
        self.notes: list[str] = []
        self._in_grace = False
        self.walker = Walker(store, self._report, present=inv.__contains__)
        self.bits: dict[str, int] = {}
        self.roots: dict[str, int] = {}
        self.walked: set[tuple[str, str]] = set()  # (kind, oid) roots already walked

    def _report(self, kind: str, where: str, detail: str) -> None:
        if self._in_grace:
            # Garbage younger than the grace period that names a missing object: worth
            # a note, but it cannot make a root's data unreachable.
            self.notes.append(f"young unreferenced {kind} {where}: {detail}")
        else:
            self.problems.append(Problem(kind, where, detail))

    def bit(self, kind: str) -> int:
        b = self.bits.get(kind)
        if b is None:
            b = self.bits[kind] = 1 << len(self.bits)
        return b

    def walk(self, roots: Iterable[Root]) -> None:
        for r in roots:
            if (r.kind, r.oid) in self.walked:
                continue
            self.walked.add((r.kind, r.oid))
            self.roots[r.kind] = self.roots.get(r.kind, 0) + 1
            self._in_grace = r.kind == GRACE
            try:
                self.walker.walk(r.oid, r.hint, bit=self.bit(r.kind), label=r.label,
                                 required=r.required)
            finally:
                self._in_grace = False

    @property
    def marks(self) -> dict[str, int]:
        return self.walker.marks


def _fs_now_ns(project: Project) -> int:
    """Now, by the store filesystem's clock: ages compare like with like (NFS skew)."""
    return project.statcache.now_ns()


def _grace_roots(inv: dict[str, _Obj], marks: dict[str, int], cutoff_ns: int) -> list[Root]:
    return [Root(GRACE, f"young object {oid[:12]}", oid, None, required=False)
            for oid, o in inv.items() if o.newest_ns > cutoff_ns and oid not in marks]


def _scope(all_branches: bool, all_tags: bool, all_commits: bool, kinds: set[str],
           drop_run_cache: bool) -> list[str]:
    scope = [k for k in ROOT_KINDS[:4] if k in kinds and not (drop_run_cache and k == "run-cache")]
    scope += sorted(k for k in kinds if k not in ROOT_KINDS)
    scope += [n for n, on in (("branches", all_branches), ("tags", all_tags),
                              ("all commits", all_commits)) if on]
    return scope


def _promoted(project: Project, history: History) -> Callable[[Experiment], bool]:
    """An experiment is promoted when Git history names its record or what it made."""
    try:
        commits = git.rev_list(project.root, all_commits=True)
    except TallyError:
        commits = []
    named = history.named_ids(commits) | _commit_message_ids(project)
    try:  # E2's books, when present, know what `tally promote` wrote
        from . import books  # type: ignore[attr-defined]
        named |= set(getattr(books, "promoted_records", lambda p: ())(project))
    except ImportError:
        pass
    return lambda e: e.record in named or not named.isdisjoint(e.names)


def _drop_run_cache(project: Project) -> int:
    """Remove every run-cache index entry (their entries then become garbage)."""
    try:
        from . import runcache
    except ImportError:
        return 0
    clear = getattr(runcache, "clear", None)
    if clear is not None:
        return int(clear(project) or 0)
    n = 0
    dirs = set()
    for k, _ in list(runcache.iter_index(project)):
        p = runcache._index_path(project, k)  # noqa: SLF001
        try:
            os.unlink(p)
            n += 1
            dirs.add(p.parent)
        except FileNotFoundError:
            pass
    return n


def _lock_busy(project: Project, waited: float) -> LockBusy:
    """LockBusy naming a live exclusive holder if one is recorded, else the writers."""
    who = "a tally add, checkout, run or save (writers hold it shared while they write)"
    try:
        info = json.loads((project.store_dir / "locks" / "store.holder").read_text())
        pid, host = int(info["pid"]), str(info["host"])
        if host == socket.gethostname() and pid != os.getpid():
            os.kill(pid, 0)  # raises if no such process: the record is stale
            who = f"pid {pid} ({info.get('command', '?')})"
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return LockBusy(f"the store is busy: gc waited {waited:.0f} s for {who}",
                    path=project.store_dir / "locks" / "store",
                    hint="rerun when it finishes, or wait longer with --wait SECONDS")


def gc(project: Project, *, grace_s: float | None = None, dry_run: bool = False,
       all_branches: bool = False, all_tags: bool = False, all_commits: bool = False,
       drop_run_cache: bool = False, policy: Policy | None = None, force: bool = False,
       confirm: Callable[[GcReport], bool] | None = None, lock_wait: float = LOCK_WAIT_S,
       now_ns: int | None = None) -> GcReport:
    """Delete every object no root reaches and no younger than the grace period.

    Args:
        grace_s: keep unreachable objects younger than this (seconds); None reads
            `gc.grace` from the store config (default 24 h). 0 is allowed.
        dry_run: plan only; nothing is locked or deleted.
        all_branches, all_tags, all_commits: also keep what the pointers and
            tally.lock files of those Git commits name.
        drop_run_cache: remove the run-cache (index and, once unreferenced, entries).
        policy: retention policy for experiments; None reads `gc.*` from the config,
            Policy() keeps every experiment.
        force: sweep even when a root names a missing or undecodable object.
        confirm: called with the plan (a dry-run report) before anything is locked or
            deleted; returning False cancels. The real sweep deletes at most the plan.
        lock_wait: seconds to wait for the exclusive store lock.
        now_ns: "now" for the retention policy's ages (tests); default the wall clock.
    Returns:
        The report: deleted objects (or, dry run, those that would be), per-root-kind
        statistics, dropped experiments, removed temp files, notes.
    Raises:
        GcRefused: a root problem and not `force` (nothing was deleted).
        LockBusy: writers held the store lock for more than `lock_wait` seconds.
        UsageError: a bad grace or policy setting.
    """
    started = time.monotonic()
    store = project.store
    if grace_s is None:
        grace_s = parse_duration(str(project.config.get("gc.grace")))
    if grace_s < 0:
        raise UsageError("the grace period cannot be negative")
    if policy is None:
        policy = Policy.from_config(project.config)
    report = GcReport(dry_run=dry_run, grace_s=grace_s, forced=force,
                      policy=policy if policy.active else None)
    history = History(project)
    try:
        return _gc(project, store, report, history, policy=policy, all_branches=all_branches,
                   all_tags=all_tags, all_commits=all_commits, drop_run_cache=drop_run_cache,
                   confirm=confirm, lock_wait=lock_wait, started=started,
                   now_ns=now_ns if now_ns is not None else time.time_ns())
    finally:
        history.close()


def _gc(project: Project, store, report: GcReport, history: History, *, policy: Policy,
        all_branches: bool, all_tags: bool, all_commits: bool, drop_run_cache: bool,
        confirm, lock_wait: float, started: float, now_ns: int) -> GcReport:
    dry_run, force = report.dry_run, report.forced
    store.ensure_dirs()

    # ---- pass A: no lock ---------------------------------------------------------
    fs_now = _fs_now_ns(project)
    cutoff = fs_now - int(report.grace_s * 1e9)  # newer than this is young
    drops: list[Drop] = []
    kept_exps: list[Experiment] | None = None
    if policy.active:
        exps = list_experiments(project)
        drops = select(exps, policy, now_ns=now_ns, promoted=_promoted(project, history))
        dropped = {id(d.exp) for d in drops}
        kept_exps = [e for e in exps if id(e) not in dropped]

    inv = _inventory(store)
    marker = _Marker(store, inv)
    problems = marker.problems
    commits = git.rev_list(project.root, all_branches=all_branches, all_tags=all_tags,
                           all_commits=all_commits)

    skip = {"run-cache"} if drop_run_cache else set()

    def collect(experiments: list[Experiment] | None) -> list[Root]:
        """Every root. With `experiments`, those stand in for the experiments provider
        (the plan: refs a policy drops are left out)."""
        roots, kinds = provider_roots(project, problems,
                                      skip=skip | ({"experiments"} if experiments is not None else set()))
        if experiments is not None:
            roots += [Root("experiments", f"experiment {e.label}", e.record, "record")
                      for e in experiments]
        report.scope = _scope(all_branches, all_tags, all_commits, kinds, drop_run_cache)
        roots += workspace_lock_roots(project)
        roots += history.roots(commits, problems)
        return roots

    # The plan leaves out the experiments a policy drops. Pass B does not: it drops
    # those refs first and then asks the providers for the refs that remain, so a ref
    # renamed or re-pointed meanwhile is a root again whatever it names.
    marker.walk(collect(kept_exps))
    marker.walk(_grace_roots(inv, marker.marks, cutoff))
    candidates = [oid for oid in inv if oid not in marker.marks]
    _fill_plan(report, store, inv, marker, candidates, cutoff, drops)
    if problems and not force:
        report.problems = list(problems)
        report.seconds = time.monotonic() - started
        raise GcRefused(report)
    report.problems = list(problems)
    if dry_run:
        report.temp_files, report.temp_bytes = _stale_temp(store, fs_now, report.grace_s)
        report.seconds = time.monotonic() - started
        return report
    if confirm is not None and not confirm(report):
        report.cancelled = True
        report.deleted = []
        report.dropped = []
        report.seconds = time.monotonic() - started
        return report
    plan = {d.oid for d in report.deleted}
    planned_drops = drops

    # ---- pass B: exclusive store lock -----------------------------------------------
    try:
        lock = project.lock("store", shared=False, timeout=lock_wait, purpose="tally gc").acquire()
    except LockBusy:
        raise _lock_busy(project, lock_wait) from None
    try:
        _failpoint("gc:locked")
        # Drop what the policy chose: refs first (they name records), each only if it
        # still names the record judged (compare-and-swap), durably before any object.
        report.dropped = _drop_refs(project, planned_drops, report)
        if drop_run_cache:
            report.run_cache_dropped = _drop_run_cache(project)
        if report.dropped or report.run_cache_dropped:
            _barrier(store)
        _failpoint("gc:refs-dropped")

        commits = git.rev_list(project.root, all_branches=all_branches, all_tags=all_tags,
                               all_commits=all_commits)
        marker.walk(collect(None))
        fs_now = _fs_now_ns(project)
        cutoff = fs_now - int(report.grace_s * 1e9)
        # Whatever got younger since pass A (freshened by a writer that does not take
        # the lock) is kept, and so is everything it reaches.
        fresh = {}
        for oid in plan:
            if oid in marker.marks:
                continue
            o = _restat(store, oid)
            if o is not None and o.newest_ns > cutoff:
                fresh[oid] = o
        marker.walk(_grace_roots(fresh, marker.marks, cutoff))
        report.problems = list(problems)
        if problems and not force:
            report.deleted = []
            raise GcRefused(report)

        final = [oid for oid in plan if oid not in marker.marks]
        report.deleted = _sweep(store, final, marker.walker, inv, cutoff, report)
        report.temp_files, report.temp_bytes = _remove_stale_temp(store, fs_now, report.grace_s)
        _failpoint("gc:swept")
        _forget(project, {d.oid for d in report.deleted}, report)
    finally:
        lock.release()
    _fill_stats(report, inv, marker, {d.oid for d in report.deleted})
    report.seconds = time.monotonic() - started
    return report


def _fill_plan(report: GcReport, store, inv: dict[str, _Obj], marker: _Marker,
               candidates: list[str], cutoff: int, drops: list[Drop]) -> None:
    report.dropped = drops
    report.notes.extend(marker.notes)
    deleted = []
    for oid in candidates:
        o = inv[oid]
        if o.newest_ns > cutoff:
            continue
        deleted.append(Deleted(oid, _kind(marker.walker, oid), o.size, o.nlink > 1))
    deleted.sort(key=lambda d: (LAYER.get(d.kind, 0), d.oid))
    report.deleted = deleted
    _fill_stats(report, inv, marker, {d.oid for d in deleted})


def _fill_stats(report: GcReport, inv: dict[str, _Obj], marker: _Marker, gone: set[str]) -> None:
    marks = marker.marks
    report.objects = len(inv)
    report.bytes = sum(o.size for o in inv.values())
    report.kept_objects = report.kept_bytes = report.young_objects = report.young_bytes = 0
    stats = {k: RootStats(k, roots=marker.roots.get(k, 0)) for k in marker.bits}
    grace_bit = marker.bits.get(GRACE, 0)
    for oid, o in inv.items():
        if oid in gone:
            continue
        m = marks.get(oid, 0)
        if m & ~grace_bit:
            report.kept_objects += 1
            report.kept_bytes += o.size
        else:
            report.young_objects += 1
            report.young_bytes += o.size
        for kind, b in marker.bits.items():
            if m & b:
                s = stats[kind]
                s.objects += 1
                s.bytes += o.size
                if m == b:
                    s.exclusive_objects += 1
                    s.exclusive_bytes += o.size
    order = {k: i for i, k in enumerate(ROOT_KINDS)}
    report.roots = sorted(stats.values(), key=lambda s: (order.get(s.kind, len(order)), s.kind))


def _kind(walker: Walker, oid: str) -> str:
    try:
        return walker.kind(oid)
    except TallyError:
        return BLOB  # unreadable garbage: no edges, deleted with the blobs


def _drop_refs(project: Project, drops: list[Drop], report: GcReport) -> list[Drop]:
    from . import refs
    from .errors import Conflict

    done = []
    for d in drops:
        try:
            refs.delete(project, d.exp.baseline, d.exp.name, d.exp.record)
        except (Conflict, NotFound):
            report.notes.append(f"experiment {d.exp.label} changed meanwhile; not dropped")
            continue
        done.append(d)
    return done


def _barrier(store) -> None:
    """Make every unlink so far durable before the next layer starts."""
    if store.options.fsync != "off":
        syncfs(store.root)


def _sweep(store, oids: list[str], walker: Walker, inv: dict[str, _Obj], cutoff: int,
           report: GcReport) -> list[Deleted]:
    """Delete `oids` parents-first: by layer, and within a layer by topological level."""
    kinds = {oid: _kind(walker, oid) for oid in oids}
    layers: dict[int, list[str]] = {}
    for oid, k in kinds.items():
        layers.setdefault(LAYER.get(k, 0), []).append(oid)
    deleted: list[Deleted] = []

    def one(oid: str) -> Deleted | None:
        o = _restat(store, oid)
        if o is None:
            return None  # gone already (fsck --repair, another gc before us)
        if o.newest_ns > cutoff:
            report.notes.append(f"{oid} was freshened during gc; kept")
            return None
        _failpoint("gc:delete")
        store.delete(oid)
        return Deleted(oid, kinds[oid], o.size, o.nlink > 1)

    # Within one level the order does not matter, and unlink(2) waits on the journal
    # (1-2 ms each on a busy ext4): a few threads keep it busy. Levels stay sequential.
    with ThreadPoolExecutor(max_workers=DELETE_THREADS) as pool:
        for layer in sorted(layers):
            for level in _levels(layers[layer], kinds, walker):
                if len(level) < 64:
                    results = map(one, level)
                else:
                    results = pool.map(one, level, chunksize=64)
                deleted.extend(d for d in results if d is not None)
                _barrier(store)
                _failpoint("gc:level")
    return deleted


def _levels(oids: list[str], kinds: dict[str, str], walker: Walker) -> list[list[str]]:
    """Group structured garbage so each object comes before everything it names."""
    if all(kinds[o] == BLOB for o in oids):
        return [sorted(oids)]
    members = set(oids)
    children: dict[str, list[str]] = {}
    indeg = {o: 0 for o in oids}
    for o in oids:
        if kinds[o] == BLOB:
            continue
        try:
            e = walker.edges(o, kinds[o])
        except TallyError:
            continue  # undecodable garbage names nothing we can see
        kids = [c for c, _ in e.required if c in members] + [c for c in e.optional if c in members]
        children[o] = kids
        for c in kids:
            indeg[c] += 1
    levels = []
    ready = sorted(o for o, d in indeg.items() if d == 0)
    while ready:
        levels.append(ready)
        nxt = []
        for o in ready:
            for c in children.get(o, ()):
                indeg[c] -= 1
                if indeg[c] == 0:
                    nxt.append(c)
        ready = sorted(nxt)
    left = sorted(o for o, d in indeg.items() if d > 0)  # a cycle cannot happen; be total
    if left:
        levels.append(left)
    return levels


def _temp_entries(store, fs_now: int, grace_s: float) -> list[tuple[str, int]]:
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


def _stale_temp(store, fs_now: int, grace_s: float) -> tuple[list[str], int]:
    found = _temp_entries(store, fs_now, grace_s)
    return [n for n, _ in found], sum(s for _, s in found)


def _remove_stale_temp(store, fs_now: int, grace_s: float) -> tuple[list[str], int]:
    names, total = [], 0
    for name, size in _temp_entries(store, fs_now, grace_s):
        try:
            os.unlink(Path(store.tmp, name))
        except FileNotFoundError:
            continue
        names.append(name)
        total += size
    return names, total


# StatCache.forget_oids deletes row by row on a table keyed by inode (no index on
# the oid): ~13 ms per id on a 50k-entry cache. Above this many ids gc leaves the rows:
# a stale entry still states a true fact (those bytes hash to that id), and every
# writer checks that the object exists before trusting an entry.


def _forget(project: Project, oids: set[str], report: GcReport) -> None:
    """Drop stat-cache entries naming deleted objects (hygiene, never correctness).

    One pass over the cache table whatever the number of ids (StatCache.forget_oids).
    """
    if not oids or not (project.store_dir / "statcache.db").exists():
        return
    project.statcache.forget_oids(oids)


__all__ = ["gc", "GcReport", "GcRefused", "Deleted", "RootStats", "Root", "Policy",
           "LOCK_WAIT_S", "TMP_FLOOR_S"]
