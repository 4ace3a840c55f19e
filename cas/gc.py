"""gc: delete the objects no root needs, and never one that a root needs (spec/gc.md).

Mark, then sweep, in two passes so the store lock is held only briefly:

A. unlocked (the long part): take the inventory (every object file, its form and its
   age), list the roots, walk everything they reach (cas/reachability.py), then keep
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
"""

from __future__ import annotations

import copy
import io
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

from . import codec, envelope, git, hashing
from .duration import parse_duration
from .errors import Conflict, CorruptObject, LockBusy, NotFound, TallyError, UsageError, from_os_error
from .fsops import syncfs
from .project import Project
from .reachability import BLOB, Walker, deletion_order
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
# Deleters (child processes, or threads where there is no fork) for a level of at least
# PARALLEL_MIN objects; smaller ones are deleted inline, in order. unlink(2) mostly
# waits: here (ext4 mounted with `discard`, 2 cores) each one frees its blocks with a
# synchronous discard, and 32 keep enough of them in flight (53,000 unlinks: 5.9 s on
# 8 threads, 2.2-3.4 s on 32).
DELETE_THREADS = 32
PARALLEL_MIN = 64
FORK = hasattr(os, "fork")  # big levels go to child processes (_delete_forked)
PER_CHILD = 256  # objects per child process at least, up to DELETE_THREADS children


# ------------------------------------------------------------------------- inventory

RAW, ZST = 1, 2  # _Obj.forms bits: which files hold the object (spec/store.md, "Form")
# An object file's name inside its shard: the id's last 62 hex digits, `.zst` for the
# zstd form. Anything else there (a stray file, a temp name) is not an object.
_NAME_RE = re.compile(r"[0-9a-f]{62}(?:\.zst)?")
_SHARD_RE = re.compile(r"[0-9a-f]{2}")
_ZST_NAME_LEN = 62 + 4


@dataclass(slots=True)
class _Obj:
    size: int  # both forms
    newest_ns: int  # max over forms of max(mtime, ctime)
    nlink: int
    forms: int = RAW  # RAW | ZST


def _inventory(store) -> dict[str, _Obj]:
    """Every object file with its lstat: one listdir per shard and one lstat per file.

    A lean FileStore.scan: the form and the age are all gc needs, and at 50,000 objects
    the records and paths scan() builds (and os.scandir's entries) cost more than
    the lstat itself.
    """
    inv: dict[str, _Obj] = {}
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
                inv[oid] = _Obj(st.st_size, m if m > c else c, st.st_nlink, form)
            else:  # both forms present (a crash between two publishes of one id)
                o.size += st.st_size
                o.newest_ns = max(o.newest_ns, m, c)
                o.nlink = max(o.nlink, st.st_nlink)
                o.forms |= form
    return inv


def _paths(store, oid: str, forms: int) -> list[str]:
    return [p for bit, p in ((RAW, store.raw_path(oid)), (ZST, store.zst_path(oid))) if forms & bit]


def _restat(store, oid: str, o: _Obj) -> _Obj | None:
    """The object's files as they are now; only the forms the inventory saw.

    A writer never adds the other form of an object it finds present (it freshens the
    one there), so the inventory's forms are the ones that can still hold it.
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
    return _Obj(size, newest, nlink, forms) if forms else None


def _unlink(store, oid: str, forms: int) -> None:
    """Delete the object's files (the forms given); one already gone is not an error."""
    for path in _paths(store, oid, forms):
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass


class _ReadCache:
    """The store as gc reads it: each object opened where the inventory found it, and
    small records and entries read once per run.

    Root providers read the records and entries they name (cas/refs.py loads every
    experiment's record to list its outputs) and the walker then needs the same bytes;
    pass B asks the providers again. Keeping those verified bytes (trees are left out:
    only the walker reads them, once) makes each such object one read per gc.
    Everything but `get` is the store's own.
    """

    ITEM_MAX = 64 * 1024  # bytes: records and entries are ~1 KiB; bigger ones are re-read

    def __init__(self, store) -> None:
        self._store = store
        self._kept: dict[str, bytes] = {}
        self.inv: dict[str, _Obj] = {}  # set once the inventory is taken
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

    def _read(self, oid: str, o: _Obj, max_size: int | None) -> bytes:
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


def _head_reader(store, rstore: _ReadCache, inv: dict[str, _Obj]) -> Callable[[str], bytes]:
    """An object's envelope header, read from the form the inventory found (one open,
    no path probing), or taken from bytes already read."""
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
        try:
            chunk = os.read(fd, HEAD_READ if compressed else size)
        finally:
            os.close(fd)
        if not compressed:
            return chunk
        got = codec.read_head(oid, io.BytesIO(chunk), size, path=path)
        if len(got) < size and len(chunk) == HEAD_READ:
            return store.read_head(oid, size)  # an odd frame: let the store stream it
        if len(chunk) < HEAD_READ and got[:3] == envelope.MAGIC:
            rstore.stash = (oid, chunk)  # the whole file, and the walker reads it next
        return got

    return head


def _view(project: Project, rstore: _ReadCache) -> Project:
    """`project` with gc's read cache as its store, for root providers and retention."""
    view = copy.copy(project)  # shares root and config; the cached store is replaced below
    view.__dict__["store"] = rstore
    if "statcache" in project.__dict__:
        view.__dict__["statcache"] = project.statcache
    return view


# ------------------------------------------------------------------------- failpoints

_FAILPOINT = os.environ.get("TALLY_FAILPOINT", "")
_fail_hits: dict[str, int] = {}


def _failpoint(name: str, *, whole_group: bool = False) -> None:
    """Crash-injection hook for tests: TALLY_FAILPOINT=`name` or `name:N` SIGKILLs this
    process at the N-th time (default 1st) execution reaches `name`. In a sweep's
    child (`whole_group`), its parent goes too, and N counts that child's deletions."""
    if not _FAILPOINT:
        return
    want, _, nth = _FAILPOINT.rpartition(":")
    if not nth.isdigit():
        want, nth = _FAILPOINT, "1"
    if want != name:
        return
    _fail_hits[name] = _fail_hits.get(name, 0) + 1
    if _fail_hits[name] == int(nth or 1):
        if whole_group:
            os.kill(os.getppid(), signal.SIGKILL)
        os.kill(os.getpid(), signal.SIGKILL)


# ------------------------------------------------------------------------- gc

class _Marker:
    """Walker + root bookkeeping: one bit per root kind, problems routed by phase."""

    def __init__(self, store, inv: dict[str, _Obj], *, head: Callable[[str], bytes] | None = None,
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
    rstore = _ReadCache(store)
    view = _view(project, rstore)  # providers and retention read through the cache
    problems: list[Problem] = []
    skip = {"run-cache"} if drop_run_cache else set()
    commits: list[str] = []

    def collect(experiments: list[Experiment] | None) -> list[Root]:
        """Every root. With `experiments`, those stand in for the experiments provider
        (the plan: refs a policy drops are left out)."""
        roots, kinds = provider_roots(view, problems,
                                      skip=skip | ({"experiments"} if experiments is not None else set()))
        if experiments is not None:
            roots += [Root("experiments", f"experiment {e.label}", e.record, "record")
                      for e in experiments]
        report.scope = _scope(all_branches, all_tags, all_commits, kinds, drop_run_cache)
        roots += workspace_lock_roots(project)
        roots += history.roots(commits, problems)
        return roots

    # The inventory (one lstat per object, half of it in the kernel) is taken on a
    # thread while the roots are listed (ref and record reads, git subprocesses):
    # neither needs the other, and the walk below waits for both.
    with ThreadPoolExecutor(max_workers=1) as one:
        taking = one.submit(_inventory, store)
        drops: list[Drop] = []
        kept_exps: list[Experiment] | None = None
        if policy.active:
            exps = list_experiments(view)
            drops = select(exps, policy, now_ns=now_ns, promoted=_promoted(project, history))
            dropped = {id(d.exp) for d in drops}
            kept_exps = [e for e in exps if id(e) not in dropped]
        commits = git.rev_list(project.root, all_branches=all_branches, all_tags=all_tags,
                               all_commits=all_commits)
        roots = collect(kept_exps)
        inv = rstore.inv = taking.result()
    marker = _Marker(rstore, inv, head=_head_reader(store, rstore, inv), problems=problems)

    # The plan leaves out the experiments a policy drops. Pass B does not: it drops
    # those refs first and then asks the providers for the refs that remain, so a ref
    # renamed or re-pointed meanwhile is a root again whatever it names.
    marker.walk(roots)
    marker.walk(_grace_roots(inv, marker.marks, cutoff))
    # Unmarked now means old too: every young object was just walked as a root.
    marks = marker.marks
    kinds, levels = _order([oid for oid in inv if oid not in marks], inv, marker.walker)
    report.dropped = drops
    report.problems = list(problems)
    report.notes.extend(marker.notes)
    noted = len(marker.notes)
    refused = bool(problems) and not force
    if dry_run or refused or confirm is not None:
        _fill_plan(report, inv, marker, kinds, levels)
    if refused:
        report.seconds = time.monotonic() - started
        raise GcRefused(report)
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

        report.deleted = []
        if levels:
            # Every root again, walking only what pass A did not (a new or moved ref, a
            # new pointer): what is marked already, and its subgraph, is not re-read.
            commits = git.rev_list(project.root, all_branches=all_branches, all_tags=all_tags,
                                   all_commits=all_commits)
            marker.walk(collect(None))
            report.problems = list(problems)
            if problems and not force:
                raise GcRefused(report)
            fs_now = _fs_now_ns(project)
            cutoff = fs_now - int(report.grace_s * 1e9)
            # The stat cache forgets the doomed objects while the children unlink the
            # last level (one SQLite pass, ~0.25 s for 50,000 ids, in the disk's shadow).
            doomed = {o for level in levels for o in level if o not in marker.marks}
            report.deleted = _sweep(store, levels, kinds, inv, marker, cutoff, report,
                                    idle=lambda: _forget(project, doomed))
        report.temp_files, report.temp_bytes = _remove_stale_temp(store, fs_now, report.grace_s)
        _failpoint("gc:swept")
    finally:
        lock.release()
    report.notes.extend(marker.notes[noted:])
    _fill_stats(report, inv, marker, {d.oid for d in report.deleted})
    report.seconds = time.monotonic() - started
    return report


def _order(garbage: list[str], inv: dict[str, _Obj], walker: Walker
           ) -> tuple[dict[str, str], list[list[str]]]:
    """Kinds and deletion levels of the plan (reachability.deletion_order); the
    zstd-form objects first: every structured object is one (spec/store.md)."""
    return deletion_order(garbage, walker, first=lambda o: not inv[o].forms & RAW)


def _fill_plan(report: GcReport, inv: dict[str, _Obj], marker: _Marker,
               kinds: dict[str, str], levels: list[list[str]]) -> None:
    deleted = []
    for level in levels:  # in deletion order, as the sweep reports what it deleted
        for oid in level:
            o = inv[oid]
            deleted.append(Deleted(oid, kinds[oid], o.size, o.nlink > 1))
    report.deleted = deleted
    _fill_stats(report, inv, marker, {d.oid for d in deleted})


def _fill_stats(report: GcReport, inv: dict[str, _Obj], marker: _Marker, gone: set[str]) -> None:
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
    from .removal import delete_refs

    done = []
    errors = delete_refs(project, [(d.exp.baseline, d.exp.name, d.exp.record) for d in drops],
                         sync=False)
    for d, exc in zip(drops, errors):
        if exc is None:
            done.append(d)
        elif isinstance(exc, (Conflict, NotFound)):
            report.notes.append(f"experiment {d.exp.label} changed meanwhile; not dropped")
        else:
            report.notes.append(f"experiment {d.exp.label}: {exc.message}; not dropped")
    return done


def _parts(items: list, n: int) -> list[list]:
    """`items` cut in at most `n` contiguous parts of (nearly) equal length."""
    size = -(-len(items) // n)
    return [items[i:i + size] for i in range(0, len(items), size)]


def _delete_forked(store, todo: list[str], kinds: dict[str, str], inv: dict[str, _Obj],
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
    import selectors

    # A fork costs ~4 ms here (page tables of a process holding the whole plan): one
    # child per PER_CHILD objects, up to DELETE_THREADS of them.
    parts = _parts(todo, min(DELETE_THREADS, -(-len(todo) // PER_CHILD)))
    kids: list[tuple[int, int, list[str]]] = []
    out: dict[int, list[bytes]] = {}
    statuses: dict[int, int] = {}  # reaped children's wait statuses
    try:
        for part in parts:
            r, w = os.pipe()
            try:
                pid = os.fork()
            except OSError:
                os.close(r)
                os.close(w)
                raise
            if pid == 0:  # the child: never returns
                os.close(r)
                _delete_child(store, part, inv, cutoff, w)
            os.close(w)
            kids.append((pid, r, part))
            out[r] = []
        if idle is not None:
            idle()  # our own work while the children's waits on the disk (no thread: fork)
        with selectors.DefaultSelector() as sel:
            for _, r, _ in kids:
                sel.register(r, selectors.EVENT_READ)
            while sel.get_map():
                for key, _ in sel.select():
                    chunk = os.read(key.fd, 1 << 16)
                    if chunk:
                        out[key.fd].append(chunk)
                    else:
                        sel.unregister(key.fd)
        for pid, _, _ in kids:  # each closed its pipe on exit: reaping does not wait long
            statuses[pid] = os.waitpid(pid, 0)[1]
        results = []
        error: BaseException | None = None
        for pid, r, part in kids:
            gone, young = [], []
            odd: dict[str, tuple[str, ...]] = {}
            done = 0
            for line in b"".join(out[r]).decode("utf-8", "surrogateescape").splitlines():
                tag, _, rest = line.partition(" ")
                if tag == "N":
                    done = int(rest)
                elif tag == "E":
                    errno_, _, filename = rest.partition(" ")
                    error = OSError(int(errno_), os.strerror(int(errno_)), filename or None)
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
            code = os.waitstatus_to_exitcode(statuses[pid])
            if code not in (0, 1) and error is None:
                # Killed, or an unexpected failure: what it deleted is unknown (a rerun
                # finds whatever is left), so stop rather than report a guess.
                how = f"died of signal {-code}" if code < 0 else f"failed (exit {code})"
                error = RuntimeError(f"a gc deletion process {how}; rerun gc to finish the sweep")
        if error is not None:
            raise error
        return results
    finally:
        for pid, r, _ in kids:
            if pid not in statuses:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                os.waitpid(pid, 0)
            os.close(r)


def _delete_child(store, part: list[str], inv: dict[str, _Obj], cutoff: int, w: int) -> None:
    """A forked child's sweep of `part` (see _delete_forked); writes its report to `w`."""
    lines, done, code = [], 0, 0
    try:
        for oid in part:
            o = inv[oid]
            now = _restat(store, oid, o)
            if now is None:
                lines.append(f"G {oid}")
            elif now.newest_ns > cutoff:
                lines.append(f"Y {oid}")
            else:
                _failpoint("gc:delete", whole_group=True)
                _unlink(store, oid, now.forms)
                if now.size != o.size or now.nlink != o.nlink:
                    lines.append(f"S {oid} {now.size} {now.nlink}")
            done += 1
    except OSError as exc:
        lines.append(f"E {exc.errno or 0} {exc.filename or ''}")
        code = 1
    except BaseException:  # noqa: BLE001 - a child reports and exits, never unwinds
        code = 2
    lines.append(f"N {done}")
    data = ("\n".join(lines) + "\n").encode()
    try:
        while data:
            data = data[os.write(w, data):]
    finally:
        os._exit(code)


def _barrier(store) -> None:
    """Make every unlink so far durable before the next level starts."""
    if store.options.fsync != "off":
        syncfs(store.root)


def _delete_some(store, oids: list[str], kinds: dict[str, str], inv: dict[str, _Obj],
                 cutoff: int) -> tuple[list[Deleted], list[str]]:
    """Re-stat and delete each of `oids`; returns (deleted, freshened and so kept)."""
    gone: list[Deleted] = []
    fresh: list[str] = []
    for oid in oids:
        o = _restat(store, oid, inv[oid])
        if o is None:
            continue  # gone already (fsck --repair, another gc before us)
        if o.newest_ns > cutoff:
            fresh.append(oid)
            continue
        _failpoint("gc:delete")
        _unlink(store, oid, o.forms)
        gone.append(Deleted(oid, kinds[oid], o.size, o.nlink > 1))
    return gone, fresh


def _sweep(store, levels: list[list[str]], kinds: dict[str, str], inv: dict[str, _Obj],
           marker: _Marker, cutoff: int, report: GcReport,
           idle: Callable[[], None] = lambda: None) -> list[Deleted]:
    """Delete the levels in order, each made durable before the next.

    Each object is re-statted right before its unlink. One that got younger since the
    inventory (freshened by a writer that does not take the lock) is kept and walked
    as a `grace` root before the next level starts; everything it reaches is in a
    later level (nothing in a level names anything in it or before it), so it is all
    still there and now kept too.

    `idle` is called once: while the children delete the last level, or at the end.
    """
    deleted: list[Deleted] = []
    pending = [idle]  # not called yet
    marks = marker.marks
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
                report.notes.extend(f"{oid} was freshened during gc; kept" for oid in fresh)
                marker.walk(Root(GRACE, f"young object {oid[:12]}", oid, None, required=False)
                            for oid in fresh)
            if i != last:
                # The last level needs no barrier: no later deletion depends on it, and
                # what a crash brings back of it is garbage the next gc finds again.
                _barrier(store)
            _failpoint("gc:level")
    finally:
        if pool is not None:
            pool.shutdown()
    for call in pending:
        call()
    return deleted


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


def _forget(project: Project, oids: set[str]) -> None:
    """Drop the stat-cache entries naming `oids`; hygiene, never correctness: a stale
    entry still states a true fact (those bytes hash to that id), and a writer checks
    that the object exists before trusting an entry. An object the sweep then keeps
    (freshened meanwhile) loses its entries too: its file is hashed again next time.
    """
    if not oids or not (project.store_dir / "statcache.db").exists():
        return
    project.statcache.forget_oids(oids)


__all__ = ["gc", "GcReport", "GcRefused", "Deleted", "RootStats", "Root", "Policy",
           "LOCK_WAIT_S", "TMP_FLOOR_S"]
