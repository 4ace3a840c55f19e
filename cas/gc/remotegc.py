"""gc on a remote: `tally gc --remote NAME` (spec/remote.md, "Remote gc").

The same shape as local gc (cas/gc/collect.py): roots, a grace period, a dry run
and a JSON report; the unit of deletion is a remote file (a pack or a large object)
instead of an object file.

Roots: the remote's refs (records and everything they need), the queue entries
pushed to it (their workspace snapshots), the pointers and tally.lock of this work
tree, and with `--all-branches`, `--all-tags`, `--all-commits` those of Git
history, as local gc's. Structured objects are read from the local store when it
has them, else from the remote (verified, in memory, nothing published).

Protocol: the exclusive remote lock (cas/remote/locking.py) is held from the
listing to the last deletion, so no push is in flight: a push holds the shared
lock from its listing to its last ref. gc fails with LockBusy while one runs.
Nothing younger than the grace period is deleted (a pack or large object's own
modification time, by the remote's clock), which protects data pushed by clones
whose commits this one has not seen yet.

Order, so that at every instant every object a ref or an index needs is present
and indexed:

1. repack: the live objects of packs that are mostly garbage go into new packs;
2. one new index naming every kept object is written;
3. every old index is deleted;
4. the garbage is deleted: dead packs, repacked packs, dead large objects, and
   files no index names that are older than the grace period (left by killed pushes).

A crash between 2 and 3 leaves objects named by two indexes (readers take either),
between 3 and 4 unindexed files, which the next gc deletes.

A root that names an object neither side has stops gc before anything is deleted
(GcRefused, exit 5), unless `force`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from cas.core import hashing
from cas.core.durations import parse_duration
from cas.core.errors import Corruption, TallyError
from cas.objects import envelope
from cas.objects import queue_entry
from cas.remote import layout, locking, packfile, refstore
from cas.remote.connect import Remote, open_remote
from cas.remote.download import RECORD, children, read_structured
from cas.remote.packfile import Large, PackBuilder, Small
from cas.sync import selection
from cas.sync.selection import BLOB, TREE

REPACK_MIN_DEAD = 0.5  # repack a pack when at least this share of its bytes is garbage
CONSOLIDATE_MIN = 8  # indexes: rewrite them as one, even with nothing to delete, from this many


class RemoteGcRefused(Corruption):
    """A root names an object neither the local store nor the remote has: gc cannot
    prove what is garbage, and deletes nothing."""


@dataclass
class RemoteGcReport:
    remote: str
    dry_run: bool
    grace_s: float
    scope: list[str] = field(default_factory=list)
    objects: int = 0
    bytes: int = 0
    kept_objects: int = 0
    kept_bytes: int = 0
    young_objects: int = 0
    young_bytes: int = 0
    deleted_objects: int = 0
    deleted_bytes: int = 0
    deleted_list: list[dict[str, Any]] = field(default_factory=list)
    packs_deleted: int = 0
    packs_repacked: int = 0
    packs_written: int = 0
    large_deleted: int = 0
    orphans_deleted: int = 0  # unindexed files (killed pushes)
    indexes_before: int = 0
    indexes_after: int = 0
    roots: dict[str, dict[str, int]] = field(default_factory=dict)
    problems: list[dict[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {"remote": self.remote, "dry_run": self.dry_run, "grace_seconds": self.grace_s,
                "scope": self.scope,
                "store": {"objects": self.objects, "bytes": self.bytes},
                "kept": {"objects": self.kept_objects, "bytes": self.kept_bytes},
                "young": {"objects": self.young_objects, "bytes": self.young_bytes},
                "deleted": {"objects": self.deleted_objects, "bytes": self.deleted_bytes,
                            "packs": self.packs_deleted, "repacked": self.packs_repacked,
                            "packs_written": self.packs_written, "large": self.large_deleted,
                            "orphans": self.orphans_deleted, "list": self.deleted_list},
                "indexes": {"before": self.indexes_before, "after": self.indexes_after},
                "roots": self.roots, "problems": self.problems, "notes": self.notes,
                "seconds": round(self.seconds, 3)}


def gc_remote(project, *, remote: str | Remote | None = None, grace: str | float | None = None,
              dry_run: bool = False, force: bool = False, all_branches: bool = False,
              all_tags: bool = False, all_commits: bool = False, workspace: bool = True,
              verbose: bool = False) -> RemoteGcReport:
    """Delete what no root needs from a remote (see the module docstring).

    Args:
        grace: a duration ("24h", "0") or seconds; default the config's gc.grace.
        workspace: count this work tree's pointers and tally.lock as roots.
        verbose: list each deleted object in the report.
    Raises:
        LockBusy: a push (or another gc) holds the remote.
        RemoteGcRefused: a root names an object nobody has (not `force`).
        RemoteError: the remote failed; what was deleted before is garbage only.
    """
    t0 = time.monotonic()
    if grace is None:
        grace = project.config.get("gc.grace")
    grace_s = float(parse_duration(grace)) if isinstance(grace, str) else float(grace)
    r = remote if isinstance(remote, Remote) else open_remote(project, remote)
    report = RemoteGcReport(r.name, dry_run, grace_s)
    if not r.exists():
        report.notes.append("the remote is empty: nothing was ever pushed to it")
        return report
    lock = None if dry_run else locking.RemoteLock(r.backend, exclusive=True, purpose="tally gc --remote")
    if lock is not None:
        lock.acquire()
    try:
        _run(project, r, report, lock, force=force, all_branches=all_branches, all_tags=all_tags,
             all_commits=all_commits, workspace=workspace, verbose=verbose)
    finally:
        if lock is not None:
            lock.release()
    report.seconds = time.monotonic() - t0
    return report


def _roots(project, r: Remote, report: RemoteGcReport, *, all_branches: bool, all_tags: bool,
           all_commits: bool, workspace: bool) -> list[tuple[str, str, str]]:
    """(kind of root, oid, object kind) of every root."""
    out: list[tuple[str, str, str]] = []
    refs = refstore.list_refs(r.backend)
    report.scope.append("experiments")
    out += [("experiments", x.oid, RECORD) for x in refs]
    report.scope.append("queue")
    for entry_id in refstore.list_queue(r.backend):
        e = queue_entry.decode(refstore.read_queue_entry(r.backend, entry_id))
        out.append(("queue", e.workspace, TREE))
        if e.checkpoint:
            out.append(("queue", e.checkpoint, TREE))
    if workspace:
        report.scope.append("workspace")
        out += [("workspace", x.oid, x.kind) for x in selection.workspace_roots(project)]
    if all_branches or all_tags or all_commits:
        report.scope += [s for s, on in (("branches", all_branches), ("tags", all_tags),
                                         ("commits", all_commits)) if on]
        commits = selection.commits_of(project, all_branches=all_branches, all_tags=all_tags,
                                       all_commits=all_commits)
        out += [("history", x.oid, x.kind) for x in selection.history_roots(project, commits)]
    return out


def _mark(project, r: Remote, roots: list[tuple[str, str, str]], report: RemoteGcReport
          ) -> set[str]:
    """Everything the roots reach, walking structured objects level by level."""
    cat = r.catalog()
    marked: set[str] = set()
    per_kind: dict[str, set[str]] = {}
    frontier: list[tuple[str, str, str]] = [(o, k, rk) for rk, o, k in roots]
    for rk, _, _ in roots:
        report.roots.setdefault(rk, {"roots": 0, "objects": 0})["roots"] += 1
    while frontier:
        nxt: list[tuple[str, str, str]] = []
        remote_needed: dict[str, str] = {}
        contents: dict[str, bytes] = {}
        kinds: dict[str, tuple[str, str]] = {}
        for oid, kind, rk in frontier:
            per_kind.setdefault(rk, set()).add(oid)
            if oid in marked:
                continue
            marked.add(oid)
            kinds[oid] = (kind, rk)
            if not cat.has(oid) and not project.store.has(oid):
                report.problems.append({"kind": "missing", "oid": oid,
                                        "detail": f"named by a {rk} root, on neither side"})
                continue
            if kind == BLOB:
                continue
            if project.store.has(oid):
                try:
                    contents[oid] = project.store.get(oid, max_size=envelope.MAX_STRUCT_SIZE)
                    continue
                except TallyError:
                    pass  # damaged here: the remote's copy may be sound
            remote_needed[oid] = kind
        if remote_needed:
            got, failed = read_structured(r, sorted(remote_needed.items()), tmp_store=project.store)
            contents.update(got)
            for oid, err in failed.items():
                report.problems.append({"kind": "unreadable", "oid": oid, "detail": err.message})
        for oid, content in contents.items():
            kind, rk = kinds[oid]
            try:
                nxt += [(c, ck, rk) for c, ck in children(kind, content)]
            except TallyError as exc:
                report.problems.append({"kind": "unreadable", "oid": oid, "detail": exc.message})
        frontier = [x for x in nxt if x[0] not in marked]
    for rk, oids in per_kind.items():
        report.roots[rk]["objects"] = len(oids)
    return marked


def _run(project, r: Remote, report: RemoteGcReport, lock, *, force: bool, all_branches: bool,
         all_tags: bool, all_commits: bool, workspace: bool, verbose: bool) -> None:
    cat = r.catalog(refresh=True)
    roots = _roots(project, r, report, all_branches=all_branches, all_tags=all_tags,
                   all_commits=all_commits, workspace=workspace)
    live = _mark(project, r, roots, report)
    if report.problems and not force:
        raise RemoteGcRefused(f"gc --remote refused: {len(report.problems)} root problem(s), "
                              f"first: {report.problems[0]['detail']} ({report.problems[0]['oid'][:16]})",
                              hint="fix or remove the ref (or push the missing data), or rerun "
                                   "with --force to keep only what can be read")
    files = {e.key: e for e in r.backend.list(layout.PACKS)}
    files.update({e.key: e for e in r.backend.list(layout.OBJECTS)})
    now = lock.remote_now if lock is not None else time.time()
    cutoff = now - report.grace_s
    report.indexes_before = len(cat.indexes)

    def young(key: str) -> bool:
        e = files.get(key)
        return e is not None and e.mtime > cutoff

    # Objects by pack; the verdict is per file.
    rows_of: dict[str, list[tuple[str, Small]]] = {}
    for oid, s in cat.small.items():
        rows_of.setdefault(s.pack, []).append((oid, s))
    keep_small: dict[str, Small] = {}
    keep_large: dict[str, Large] = {}
    doomed: list[str] = []  # keys to delete
    repack: list[tuple[str, list[tuple[str, Small]]]] = []
    counted: set[str] = set()

    def dead(oid: str, nbytes: int, where: str) -> None:
        report.deleted_objects += 1
        report.deleted_bytes += nbytes
        if verbose:
            report.deleted_list.append({"oid": oid, "bytes": nbytes, "in": where})

    for pack, rows in rows_of.items():
        key = packfile.pack_key(pack)
        alive = [(o, s) for o, s in rows if o in live]
        for o, s in rows:
            if o not in counted:
                counted.add(o)
                report.objects += 1
                report.bytes += s.length
        if key not in files:
            report.notes.append(f"pack {pack[:16]} is indexed but missing on the remote")
            continue
        if young(key) or len(alive) == len(rows):
            for o, s in rows:
                if o in live:
                    report.kept_objects += 1
                    report.kept_bytes += s.length
                else:
                    report.young_objects += 1
                    report.young_bytes += s.length
                keep_small.setdefault(o, s)
            continue
        dead_bytes = sum(s.length for o, s in rows if o not in live)
        if not alive:
            doomed.append(key)
            report.packs_deleted += 1
            for o, s in rows:
                dead(o, s.length, key)
            continue
        if dead_bytes >= REPACK_MIN_DEAD * files[key].size:
            repack.append((pack, alive))
            report.packs_repacked += 1
            doomed.append(key)
            for o, s in rows:
                if o in live:
                    report.kept_objects += 1
                    report.kept_bytes += s.length
                else:
                    dead(o, s.length, key)
            continue
        for o, s in rows:  # mostly live: kept whole until more of it is garbage
            report.kept_objects += 1
            report.kept_bytes += s.length
            keep_small.setdefault(o, s)
    for oid, g in cat.large.items():
        key = packfile.large_key(oid, g.form)
        if oid not in counted:
            counted.add(oid)
            report.objects += 1
            report.bytes += g.length
        if key not in files:
            report.notes.append(f"large object {oid[:16]} is indexed but missing on the remote")
            continue
        if oid in live or young(key):
            keep_large[oid] = g
            if oid in live:
                report.kept_objects += 1
                report.kept_bytes += g.length
            else:
                report.young_objects += 1
                report.young_bytes += g.length
            continue
        doomed.append(key)
        report.large_deleted += 1
        dead(oid, g.length, key)
    indexed = {packfile.pack_key(p) for p in cat.packs} | \
        {packfile.large_key(o, g.form) for o, g in cat.large.items()}
    for key, e in files.items():
        if key not in indexed and e.mtime <= cutoff:
            doomed.append(key)
            report.orphans_deleted += 1
    rewrite = bool(doomed) or len(cat.indexes) >= CONSOLIDATE_MIN
    report.indexes_after = (1 if (keep_small or keep_large or repack) else 0) if rewrite \
        else len(cat.indexes)
    if report.dry_run:
        return
    # 1. repack
    new_packs: dict[str, int] = {}
    if repack:
        builder = PackBuilder()
        for pack, alive in repack:
            key = packfile.pack_key(pack)
            for oid, s in alive:
                payload = r.backend.read_range(key, s.offset, s.length)
                _check(oid, payload, s)
                builder.add(oid, payload, form=s.form, size=s.size)
        pid, data = builder.finish()
        r.backend.write(packfile.pack_key(pid), data, durable=False)
        r.backend.barrier()
        report.packs_written += 1
        new_packs[pid] = len(data)
        for oid, offset, length, form, size in builder.rows:
            keep_small[oid] = Small(pid, offset, length, form, size)
    if not rewrite:
        return
    # 2. one index for everything kept, 3. the old ones go
    packs = {s.pack: (new_packs.get(s.pack) or cat.packs[s.pack]) for s in keep_small.values()}
    new_index = None
    if keep_small or keep_large:
        data = packfile.encode_index(packs, keep_small, keep_large)
        new_index = hashing.hash_bytes(data)
        r.backend.write(packfile.index_key(new_index), data)
    for iid in cat.indexes:
        if iid != new_index:
            r.backend.delete(packfile.index_key(iid))
    # 4. the garbage
    for key in doomed:
        r.backend.delete(key)
    r.forget_catalog()


def _check(oid: str, payload: bytes, s: Small) -> None:
    from cas.store import zstdframe as codec
    content = codec.decompress(oid, payload, max_size=s.size) if s.form == packfile.ZSTD else payload
    if len(content) != s.size or hashing.hash_bytes(content) != oid:
        raise Corruption(f"object {oid[:16]} is damaged in its pack on the remote; gc stopped "
                         "before deleting anything", hint="push it again from a store that has it")


__all__ = ["gc_remote", "RemoteGcReport", "RemoteGcRefused"]

