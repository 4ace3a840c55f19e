"""gc: delete the objects no root needs, and never one that a root needs (spec/gc.md).

Mark, then sweep, in two passes so the store lock is held only briefly:

A. unlocked (the long part): take the inventory (every object file, its form and its
   age), list the roots, walk everything they reach (cas/gc/reachability.py), then keep
   also what any object younger than the grace period reaches. The unmarked rest is
   the plan, put in deletion order (_order). A dry run stops here and reports it.
B. under the `store` lock, exclusive (writers hold it shared from their first put
   until the root naming what they wrote is on disk): drop the refs a retention
   policy chose, read every root again and walk only what pass A has not walked (an
   unchanged root costs a set lookup; nothing marked is re-read), then delete level
   by level: records and entries, then trees, then blobs (the reverse of the write
   order), with a syncfs barrier between levels, so at every instant and after any
   crash every object still present names only present objects. Each object is
   re-statted right before its unlink; one freshened meanwhile is kept with all it
   reaches. Last, stale temp files and the stat-cache entries of deleted objects go.

Only objects in pass A's inventory can be deleted, so anything published during the
run is out of reach by construction; the lock is what makes `--grace 0` safe for
writers that follow the protocol, and the grace period is what protects any that do
not (tests/test_gc_concurrency.py removes each in turn and shows the loss).

A root that names a missing or undecodable object stops gc before it deletes
anything (GcRefused, exit 5): reachability can no longer be proven. `force=True`
sweeps anyway, keeping what the readable part of the graph reaches.

This module is the use case: the policy, the two passes and the report. The
inventory and the read cache are in cas/gc/inventory.py, the deletion (levels, forked
children, barriers, temp files, the stat cache) in cas/gc/deletion.py, the roots in
cas/gc/roots.py and the report's types in cas/gc/report.py.
"""

from __future__ import annotations

import json
import os
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterable, NamedTuple

# The inventory and reads (gcinventory) and the deletion (gcsweep): their functions are
# called through the module, so a test's monkeypatch there reaches the calls here too.
from cas.workspace import git
from cas.gc import inventory as gcinventory
from cas.gc import deletion as gcsweep
from cas.core.durations import parse_duration
from cas.core.errors import Conflict, LockBusy, NotFound, TallyError, UsageError
from cas.gc.inventory import ZST, Obj
from cas.workspace.project import Project
from cas.gc.reachability import BLOB, Walker, deletion_order
from cas.store.writer import RAW_MAX
from cas.gc.retention import Candidate, Drop, Keep, Policy, judge, list_experiments
# Split by noun: results and roots live in their own modules; the names stay importable here.
from cas.gc.report import GRACE, ROOT_KINDS, Deleted, GcRefused, GcReport, RootStats  # noqa: F401
from cas.gc.roots import History, Problem, Root, inflight_roots, promoted_records, provider_roots, workspace_lock_roots

LOCK_WAIT_S = 60.0  # seconds gc waits for writers to finish before giving up (exit 7)


# ------------------------------------------------------------------------- gc

class Marker:
    """Walker + root bookkeeping: one bit per root kind, problems routed by phase.

    gc makes one per run, through this module's name: the seam a test subclasses to
    see which kinds of root kept each object (`bits`, `marks`; spec/gc.md's worked
    examples) and how much the walker read (`walker.structured_read`).
    """

    def __init__(self, store, inv: dict[str, Obj], *, head: Callable[[str], bytes] | None = None,
                 problems: list[Problem] | None = None) -> None:
        self.problems: list[Problem] = problems if problems is not None else []
        self.notes: list[str] = []
        self._in_grace = False
        self.walker = Walker(store, self._report, present=inv.__contains__, head=head)
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
        """Walk every root not walked before (pass B's second look is incremental: a
        ref or pointer unchanged since pass A costs a set lookup)."""
        walked = self.walked
        for r in roots:
            key = (r.kind, r.oid)
            if key in walked:
                continue
            walked.add(key)
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


def fs_now_ns(project: Project) -> int:
    """Now, by the store filesystem's clock: ages compare like with like (NFS skew).

    gc's clock, read through this module's name: the seam tests move (with the
    inventory's ages) to age objects without waiting (tests/conftest.py `clock`).
    """
    return project.statcache.now_ns()


def _grace_roots(inv: dict[str, Obj], marks: dict[str, int], cutoff_ns: int) -> list[Root]:
    return [Root(GRACE, f"young object {oid[:12]}", oid, None, required=False)
            for oid, o in inv.items() if o.newest_ns > cutoff_ns and oid not in marks]


def _scope(all_branches: bool, all_tags: bool, all_commits: bool, kinds: set[str],
           drop_run_cache: bool) -> list[str]:
    scope = [k for k in ROOT_KINDS[:4] if k in kinds and not (drop_run_cache and k == "run-cache")]
    scope += sorted(k for k in kinds if k not in ROOT_KINDS)
    scope += [n for n, on in (("branches", all_branches), ("tags", all_tags),
                              ("all commits", all_commits)) if on]
    return scope


def _promoted(project: Project) -> Callable[[Candidate], bool]:
    """An experiment is promoted when a commit of any ref names its own record
    (`Tally-Record:`, spec/promote.md); what its record names being in a committed
    `tally.lock` or pointer is not enough (spec/gc.md, "Retention")."""
    named = promoted_records(project)
    return lambda e: e.record in named


def _drop_run_cache(project: Project) -> int:
    """Remove every run-cache index entry (their entries then become garbage)."""
    try:
        from cas.pipeline import runcache
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


class GcOptions(NamedTuple):
    """What one gc does (see gc() for each field); a plan carries the resolved copy."""

    grace_s: float = 0.0
    dry_run: bool = False
    all_branches: bool = False
    all_tags: bool = False
    all_commits: bool = False
    drop_run_cache: bool = False
    policy: Policy = Policy()
    force: bool = False
    lock_wait: float = LOCK_WAIT_S
    now_ns: int = 0


class Plan:
    """Pass A's result: the report of what would go, and what pass B continues from.

    `report` is a dry-run report (deleted = the plan, in deletion order); the other
    fields are the walk pass B extends instead of redoing: the inventory, the marks,
    the deletion levels, the experiments the policy drops.
    """

    def __init__(self, project: Project, options: GcOptions, started: float) -> None:
        self.project = project
        self.options = options
        self.started = started
        self.report = GcReport(dry_run=options.dry_run, grace_s=options.grace_s,
                               forced=options.force,
                               policy=options.policy if options.policy.active else None)
        self.history = History(project)
        self.problems: list[Problem] = []
        self.commits: list[str] = []
        self.rstore = gcinventory.ReadCache(project.store)
        # Providers and retention read through the cache.
        self.view = gcinventory.view(project, self.rstore)
        self.skip = {"run-cache"} if options.drop_run_cache else set()
        self.drops: list[Drop] = []
        self.keeps: list[Keep] = []  # what the policy keeps, and why
        self.fs_now = 0
        self.inv: dict[str, Obj] = {}
        self.marker: Marker | None = None
        self.kinds: dict[str, str] = {}
        self.levels: list[list[str]] = []
        self.noted = 0

    def roots(self, experiments: list[Candidate] | None, inflight: list[Root]) -> list[Root]:
        """Every root. With `experiments`, those stand in for the experiments provider
        (the plan: refs a policy drops are left out). `inflight`: the in-flight roots."""
        o = self.options
        skip = self.skip | ({"experiments"} if experiments is not None else set())
        roots, kinds = provider_roots(self.view, self.problems, skip=skip)
        if experiments is not None:
            roots += [Root("experiments", f"experiment {e.label}", e.record, "record")
                      for e in experiments]
        self.report.scope = _scope(o.all_branches, o.all_tags, o.all_commits, kinds, o.drop_run_cache)
        roots += workspace_lock_roots(self.project)
        roots += self.history.roots(self.commits, self.problems)
        roots += inflight
        return roots

    def rev_list(self) -> None:
        o = self.options
        self.commits = git.rev_list(self.project.root, all_branches=o.all_branches,
                                    all_tags=o.all_tags, all_commits=o.all_commits)

    @property
    def refused(self) -> bool:
        return bool(self.problems) and not self.options.force

    def close(self) -> None:
        self.history.close()


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
    if grace_s is None:
        grace_s = parse_duration(str(project.config.get("gc.grace")))
    if grace_s < 0:
        raise UsageError("the grace period cannot be negative")
    options = GcOptions(grace_s=grace_s, dry_run=dry_run, all_branches=all_branches,
                        all_tags=all_tags, all_commits=all_commits, drop_run_cache=drop_run_cache,
                        policy=policy if policy is not None else Policy.from_config(project.config),
                        force=force, lock_wait=lock_wait,
                        now_ns=now_ns if now_ns is not None else time.time_ns())
    the_plan = plan(project, options, started=started, describe=dry_run or confirm is not None)
    try:
        report = the_plan.report
        if the_plan.refused:
            report.seconds = time.monotonic() - started
            raise GcRefused(report)
        if dry_run:
            report.seconds = time.monotonic() - started
            return report
        if confirm is not None and not confirm(report):
            report.cancelled = True
            report.deleted = []
            report.dropped = []
            report.seconds = time.monotonic() - started
            return report
        return sweep(the_plan)
    finally:
        the_plan.close()


def plan(project: Project, options: GcOptions, *, started: float | None = None,
         describe: bool = True) -> Plan:
    """Pass A, without any lock: the inventory, the roots, the walk, the deletion levels.

    With `describe` (or a root problem that will refuse the sweep: `plan.refused`),
    the plan's report lists what would go, with per-root statistics and the stale
    temp files; without, only the levels are computed (a sweep follows and reports
    what it did). The experiments the policy drops are listed either way. Nothing is
    changed on disk.
    """
    p = Plan(project, options, started if started is not None else time.monotonic())
    store = project.store
    store.ensure_dirs()
    p.fs_now = fs_now_ns(project)
    cutoff = p.fs_now - int(options.grace_s * 1e9)  # newer than this is young
    # The inventory (one lstat per object, half of it in the kernel) is taken on a
    # thread while the roots are listed (ref and record reads, git subprocesses):
    # neither needs the other, and the walk below waits for both.
    with ThreadPoolExecutor(max_workers=1) as one:
        taking = one.submit(gcinventory.inventory, store)
        kept_exps: list[Candidate] | None = None
        if options.policy.active:
            exps = list_experiments(p.view)
            p.drops, p.keeps = judge(exps, options.policy, now_ns=options.now_ns,
                                     promoted=_promoted(project))
            dropped = {id(d.exp) for d in p.drops}
            kept_exps = [e for e in exps if id(e) not in dropped]
        p.rev_list()
        # Live writers' in-flight files, read unlocked: a file may be mid-append (a
        # partial last line is skipped); pass B reads them again, complete, under the
        # lock. A dead owner's file is no root here and is deleted in pass B.
        roots = p.roots(kept_exps, inflight_roots(project, remove_dead=False)[0])
        inv = p.inv = p.rstore.inv = taking.result()
    marker = p.marker = Marker(p.rstore, inv, head=gcinventory.head_reader(store, p.rstore, inv),
                                problems=p.problems)
    # The plan leaves out the experiments a policy drops. Pass B does not: it drops
    # those refs first and then asks the providers for the refs that remain, so a ref
    # renamed or re-pointed meanwhile is a root again whatever it names.
    marker.walk(roots)
    marker.walk(_grace_roots(inv, marker.marks, cutoff))
    # Unmarked now means old too: every young object was just walked as a root.
    p.kinds, p.levels = _order([oid for oid in inv if oid not in marker.marks], inv, marker.walker)
    report = p.report
    report.dropped = p.drops
    report.kept_experiments = list(p.keeps)
    report.problems = list(p.problems)
    report.notes.extend(marker.notes)
    p.noted = len(marker.notes)
    if describe or p.refused:
        _fill_plan(report, inv, marker, p.kinds, p.levels)
        report.temp_files, report.temp_bytes = gcsweep.stale_temp(store, p.fs_now, options.grace_s)
    return p


def sweep(p: Plan) -> GcReport:
    """Pass B, under the exclusive store lock: drop the planned refs, walk every root
    again (only what pass A did not), delete the plan's levels in order, then stale
    temp files. Deletes at most what `p` planned.

    Raises:
        GcRefused: a root problem found by the second walk, and not `force`.
        LockBusy: writers held the store lock for more than `lock_wait` seconds.
    """
    project, options, report, marker = p.project, p.options, p.report, p.marker
    assert marker is not None, "sweep() takes a plan() result"
    store = project.store
    report.dry_run = False
    report.temp_files, report.temp_bytes = 0, 0
    try:
        lock = project.lock("store", shared=False, timeout=options.lock_wait,
                            purpose="tally gc").acquire()
    except LockBusy:
        raise _lock_busy(project, options.lock_wait) from None
    try:
        gcsweep.failpoint("gc:locked")
        # Drop what the policy chose: refs first (they name records), each only if it
        # still names the record judged (compare-and-swap), durably before any object.
        report.dropped = _drop_refs(project, p.drops, report)
        if options.drop_run_cache:
            report.run_cache_dropped = _drop_run_cache(project)
        if report.dropped or report.run_cache_dropped:
            gcsweep.barrier(store)
        gcsweep.failpoint("gc:refs-dropped")
        # In-flight files: under the lock no writer is inside a burst, so each live
        # one is complete and names everything its writer relies on; a dead owner's
        # (its flock is free) goes now, and what only it named is garbage.
        fs_now = fs_now_ns(project)
        live_inflight, scan = inflight_roots(project, remove_dead=True, now_s=fs_now / 1e9)
        report.inflight_live, report.inflight_removed = len(scan.live), scan.dead

        report.deleted = []
        if p.levels:
            # Every root again, walking only what pass A did not (a new or moved ref, a
            # new pointer): what is marked already, and its subgraph, is not re-read.
            p.rev_list()
            marker.walk(p.roots(None, live_inflight))
            report.problems = list(p.problems)
            if p.refused:
                raise GcRefused(report)
            fs_now = fs_now_ns(project)
            cutoff = fs_now - int(options.grace_s * 1e9)
            # The stat cache forgets the doomed objects while the children unlink the
            # last level (one SQLite pass, ~0.25 s for 50,000 ids, in the disk's shadow).
            doomed = {o for level in p.levels for o in level if o not in marker.marks}

            def keep(fresh: list[str]) -> None:  # freshened during the sweep: young, so a grace root
                report.notes.extend(f"{oid} was freshened during gc; kept" for oid in fresh)
                marker.walk(Root(GRACE, f"young object {oid[:12]}", oid, None, required=False)
                            for oid in fresh)

            report.deleted = gcsweep.sweep(store, p.levels, p.kinds, p.inv, marker.marks, cutoff,
                                           keep=keep, idle=lambda: gcsweep.forget(project, doomed))
        report.temp_files, report.temp_bytes = gcsweep.remove_stale_temp(store, fs_now, options.grace_s)
        gcsweep.failpoint("gc:swept")
    finally:
        lock.release()
    report.notes.extend(marker.notes[p.noted:])
    _fill_stats(report, p.inv, marker, {d.oid for d in report.deleted})
    report.seconds = time.monotonic() - p.started
    return report


def _order(garbage: list[str], inv: dict[str, Obj], walker: Walker
           ) -> tuple[dict[str, str], list[list[str]]]:
    """Kinds and deletion levels of the plan (reachability.deletion_order).

    Classified first, the objects that may be structured: those with a zstd form
    (every structured object of a store written before tally stored small objects
    raw, and any above RAW_MAX since), then the raw ones of at most RAW_MAX bytes
    (a structured object that small is stored raw: spec/store.md, "Compression
    policy"). A bigger raw object is a blob or linked data, read only if nothing
    names it. Within each, newest first: a referrer is published after what it
    names, so a tree tends to come before its small blobs and spare their reads."""

    def rank(oid: str) -> tuple[int, int]:
        o = inv[oid]
        form = 0 if o.forms & ZST else 1 if o.size <= RAW_MAX else 2
        return form, -o.newest_ns

    return deletion_order(garbage, walker, first=rank)


def _fill_plan(report: GcReport, inv: dict[str, Obj], marker: Marker,
               kinds: dict[str, str], levels: list[list[str]]) -> None:
    deleted = []
    for level in levels:  # in deletion order, as the sweep reports what it deleted
        for oid in level:
            o = inv[oid]
            deleted.append(Deleted(oid, kinds[oid], o.size, o.nlink > 1))
    report.deleted = deleted
    _fill_stats(report, inv, marker, {d.oid for d in deleted})


def _fill_stats(report: GcReport, inv: dict[str, Obj], marker: Marker, gone: set[str]) -> None:
    marks = marker.marks
    # Objects grouped by their mark (the set of root kinds reaching them): a handful of
    # distinct values, so the per-kind sums below cost nothing per object.
    counts: dict[int, int] = {}
    sizes: dict[int, int] = {}
    mark, count, size = marks.get, counts.get, sizes.get
    total = 0
    for oid, o in inv.items():
        total += o.size
        if gone and oid in gone:
            continue
        m = mark(oid, 0)
        counts[m] = count(m, 0) + 1
        sizes[m] = size(m, 0) + o.size
    groups = {m: (n, sizes[m]) for m, n in counts.items()}
    report.objects = len(inv)
    report.bytes = total
    report.kept_objects = report.kept_bytes = report.young_objects = report.young_bytes = 0
    stats = {k: RootStats(k, roots=marker.roots.get(k, 0)) for k in marker.bits}
    grace_bit = marker.bits.get(GRACE, 0)
    for m, (n, size) in groups.items():
        if m & ~grace_bit:
            report.kept_objects += n
            report.kept_bytes += size
        else:
            report.young_objects += n
            report.young_bytes += size
        for kind, b in marker.bits.items():
            if m & b:
                s = stats[kind]
                s.objects += n
                s.bytes += size
                if m == b:
                    s.exclusive_objects += n
                    s.exclusive_bytes += size
    order = {k: i for i, k in enumerate(ROOT_KINDS)}
    report.roots = sorted(stats.values(), key=lambda s: (order.get(s.kind, len(order)), s.kind))


def _kind(walker: Walker, oid: str) -> str:
    try:
        return walker.kind(oid)
    except TallyError:
        return BLOB  # unreadable garbage: no edges, deleted with the blobs


def _drop_refs(project: Project, drops: list[Drop], report: GcReport) -> list[Drop]:
    """Delete the refs a policy chose, each only if it still names the record judged.

    One batch (removal.delete_refs: the `refs` lock taken once); the caller's barrier
    (one syncfs) then makes every removal durable before any object goes.
    """
    if not drops:
        return []
    from cas.experiments.removal import delete_refs

    done = []
    errors = delete_refs(project, [(d.exp.baseline, d.exp.name, d.exp.record) for d in drops],
                         sync=False)
    for d, exc in zip(drops, errors):
        if exc is None:
            done.append(d)
        elif isinstance(exc, (Conflict, NotFound)):
            report.notes.append(f"experiment {d.exp.label} changed meanwhile; not dropped")
            report.kept_experiments.append(Keep(d.exp, "changed after gc judged it"))
        else:
            report.notes.append(f"experiment {d.exp.label}: {exc.message}; not dropped")
            report.kept_experiments.append(Keep(d.exp, f"its ref could not be dropped: {exc.message}"))
    return done


__all__ = ["gc", "plan", "sweep", "Plan", "GcOptions", "GcReport", "GcRefused", "Deleted", "RootStats", "Root", "Policy",
           "LOCK_WAIT_S"]
