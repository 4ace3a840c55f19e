"""Experiments to and from a remote: `push --exp`, `pull --exp`, `show --remote`,
`diff` of remote experiments, and fetching on demand for restore and promote.

Push order (spec/remote.md): every object an experiment needs (its record, the
workspace tree with all it names, outputs, logs, checkpoint trees), then the index
naming them, then its remote ref. An experiment whose objects could not all be sent
gets no ref. Pull order mirrors it locally: objects (verified, published bottom-up),
then the local ref, created with compare-and-swap (cas/store/refs.py).

Names: the same name with the same record on both sides is a no-op; with a
different record it is refused for that experiment (Conflict, exit 4) and the others
go on; each one's outcome is in the report.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

from cas.core.errors import Conflict, NotFound, ObjectMissing, TallyError, UsageError
from cas.experiments import compare, filterexpr, listing, lookup
from cas.experiments import table as query
from cas.experiments.index import summarize
from cas.objects import record as record_mod
from cas.remote import locking, refstore
from cas.remote.connect import Remote, open_remote
from cas.remote.download import RECORD, read_structured
from cas.remote.progress import Callback, Meter
from cas.remote.upload import push_objects
from cas.store import refs
from cas.sync import selection
from cas.sync.data import STORE_LOCK_WAIT_S, fetch_roots
from cas.sync.selection import BLOB, TREE

PUSHED, PULLED, UP_TO_DATE, CONFLICT, FAILED = "pushed", "pulled", "up-to-date", "conflict", "failed"


@dataclass
class Moved:
    """What happened to one experiment."""

    name: str
    baseline: str
    record: str
    status: str  # pushed | pulled | up-to-date | conflict | failed
    error: str | None = None
    exit_code: int = 0

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "baseline": self.baseline, "record": self.record,
                "status": self.status, "error": self.error}


@dataclass
class ExpReport:
    action: str
    remote: str
    results: list[Moved] = field(default_factory=list)
    objects: int = 0
    transferred: int = 0
    transferred_bytes: int = 0
    queued: list[str] = field(default_factory=list)  # queue entries moved

    @property
    def exit_code(self) -> int:
        return next((m.exit_code for m in self.results if m.exit_code), 0)

    def to_json(self) -> dict[str, Any]:
        return {"action": self.action, "remote": self.remote,
                "experiments": [m.to_json() for m in self.results], "objects": self.objects,
                "transferred": self.transferred, "transferred_bytes": self.transferred_bytes,
                "queued": self.queued}


def _open(project, remote: str | Remote | None, jobs: int | None = None) -> Remote:
    return remote if isinstance(remote, Remote) else open_remote(project, remote, jobs=jobs)


# ---------------------------------------------------------------- choosing

def select_local(project, *, names: Sequence[str] = (), everything: bool = False,
                 filter: str | None = None, top: int | None = None, sort_by: str | None = None,
                 all_baselines: bool = True) -> list[tuple[str, str, str]]:
    """(baseline, name, record id) of local experiments: by name, all, or a selector."""
    if everything:
        if names or filter is not None or top is not None:
            raise UsageError("--all selects every experiment: give no names, --filter or --top")
        return [(e.baseline, e.name, e.oid) for e in listing.list_experiments(project, all_baselines=True)
                if e.oid]
    from cas.experiments import promote
    return promote.select(project, names=names, filter=filter, top=top, sort_by=sort_by,
                          all_baselines=all_baselines)


def _record_roots(project, oid: str) -> list[tuple[str, str]]:
    rec = record_mod.load(project.store, oid)
    roots = [(oid, BLOB)]  # the record itself; its edges below
    if rec.workspace:
        roots.append((rec.workspace, TREE))
    roots += [(o, TREE if d else BLOB) for o, d in rec.outs.values()]
    if rec.logs:
        roots.append((rec.logs, BLOB))
    roots += [(t, TREE) for _, t in rec.checkpoints]
    return roots


# ---------------------------------------------------------------- push

def push(project, *, remote: str | Remote | None = None, names: Sequence[str] = (),
         everything: bool = False, filter: str | None = None, top: int | None = None,
         sort_by: str | None = None, queued: bool = False, jobs: int | None = None,
         progress: Callback | None = None) -> ExpReport:
    """Send experiments (records, every object they need, refs), and with `queued`
    the pending queue entries too.

    Raises (before anything is sent): UsageError, NotFound as select_local;
    LockBusy: a remote gc holds the remote. Per-experiment failures are in the report.
    """
    chosen = select_local(project, names=names, everything=everything, filter=filter, top=top,
                          sort_by=sort_by) if (names or everything or filter is not None or
                                               top is not None) else []
    if not chosen and not queued:
        raise UsageError("nothing selected", hint="name experiments, or --all, --filter EXPR, "
                                                  "--top N --sort-by KEY, or --queued")
    r = _open(project, remote, jobs)
    report = ExpReport("push", r.name)
    meter = Meter(f"push {r.name}", progress)
    with project.lock("store", shared=True, timeout=STORE_LOCK_WAIT_S, purpose="tally push --exp"):
        r.prepare_for_writing()
        with locking.RemoteLock(r.backend, exclusive=False, purpose="tally push --exp"):
            r.catalog(refresh=True)
            remote_refs = refstore.list_refs(r.backend)
            held = {}
            for ref in remote_refs:
                held.setdefault((ref.baseline, ref.name), set()).add(ref.oid)
            todo: list[tuple[str, str, str, list[str]]] = []
            all_oids: list[str] = []
            for baseline, name, oid in chosen:
                there = held.get((baseline, name), set())
                if there == {oid}:
                    report.results.append(Moved(name, baseline, oid, UP_TO_DATE))
                    continue
                if there:
                    err = Conflict(f"experiment {name!r} ({baseline[:7]}) exists on the remote "
                                   f"with another record ({sorted(there)[0][:12]})",
                                   hint="rename yours (`tally exp rename OLD NEW`) and push it again")
                    report.results.append(Moved(name, baseline, oid, CONFLICT, err.message, err.exit_code))
                    continue
                try:
                    c = selection.local_closure(project.store, _record_roots(project, oid))
                except TallyError as exc:
                    report.results.append(Moved(name, baseline, oid, FAILED, exc.message, exc.exit_code))
                    continue
                todo.append((baseline, name, oid, c.oids))
                all_oids.extend(c.oids)
            entries = _queued_entries(project) if queued else []
            for _, _, ws_roots in entries:
                all_oids.extend(selection.local_closure(project.store, ws_roots).oids)
            pushed = push_objects(project.store, r, all_oids, meter=meter)
            report.objects = len(set(all_oids))
            report.transferred, report.transferred_bytes = pushed.sent, pushed.sent_bytes
            cat = r.catalog()
            from cas.core.failpoints import failpoint
            for baseline, name, oid, oids in todo:
                lacking = [o for o in oids if not cat.has(o)]
                if lacking:
                    err = pushed.failed.get(lacking[0]) or ObjectMissing(lacking[0])
                    report.results.append(Moved(name, baseline, oid, FAILED,
                                                f"{len(lacking)} object(s) could not be sent; "
                                                f"first: {err.message}", err.exit_code))
                    continue
                try:
                    failpoint("push:before-ref")
                    created = refstore.push_ref(r.backend, baseline, name, oid)
                    failpoint("push:after-ref")
                except Conflict as exc:
                    report.results.append(Moved(name, baseline, oid, CONFLICT, exc.message, exc.exit_code))
                    continue
                report.results.append(Moved(name, baseline, oid, PUSHED if created else UP_TO_DATE))
            for entry_id, data, ws_roots in entries:
                if all(cat.has(o) for o, _ in ws_roots):
                    refstore.push_queue_entry(r.backend, entry_id, data)
                    report.queued.append(entry_id)
    return report


def _queued_entries(project) -> list[tuple[str, bytes, list[tuple[str, str]]]]:
    """(id, bytes, roots) of every pending queue entry."""
    from cas.queue import directory as queue

    out = []
    for it in queue.items(project, states=("pending",)):
        if it.error:
            continue
        data = it.path.read_bytes()
        roots = [(it.entry.workspace, TREE)]
        if it.entry.checkpoint:
            roots.append((it.entry.checkpoint, TREE))
        out.append((it.id, data, roots))
    return out


# ---------------------------------------------------------------- reading the remote

def remote_experiments(project, r: Remote, *, baseline: str | None = None
                       ) -> tuple[list[listing.ExperimentRow], list[refstore.RemoteRef]]:
    """The remote's experiments as `show` lists them, read without any data: one LIST
    of refs, then the records (ranged reads from packs, verified, kept in memory)."""
    found = refstore.list_refs(r.backend, baseline) if r.exists() else []
    if not found:
        return [], found
    r.catalog(refresh=True)
    records, failed = read_structured(r, sorted({(x.oid, RECORD) for x in found}),
                                      tmp_store=project.store)
    clashing = refstore.clashes(found)
    out = []
    for ref in found:
        content = records.get(ref.oid)
        problem = None
        if (ref.baseline, ref.name) in clashing:
            problem = refstore.clash_error(ref.baseline, ref.name,
                                           clashing[(ref.baseline, ref.name)]).message
        if content is None:
            err = failed.get(ref.oid)
            out.append(listing.ExperimentRow(ref.name, ref.baseline, ref.oid, 0, listing.UNREADABLE,
                                        problem=err.message if err else "record not on the remote"))
            continue
        try:
            s = summarize(record_mod.decode(content))
        except TallyError as exc:
            out.append(listing.ExperimentRow(ref.name, ref.baseline, ref.oid, 0, listing.UNREADABLE,
                                        problem=exc.message))
            continue
        out.append(listing.ExperimentRow(ref.name, ref.baseline, ref.oid, s.created, s.status,
                                    s.exit_code, s.values, None, s.message, s.steps, problem))
    out.sort(key=lambda e: (-e.created, e.name))
    return out, found


def show(project, *, remote: str | Remote | None = None, all_baselines: bool = False,
         filter: str | None = None, sort_by: str | None = None, keep: Sequence[str] = (),
         drop: Sequence[str] = (), only_changed: bool = False, limit: int | None = None
         ) -> listing.Table:
    """`tally show --remote`: the remote's experiments (of HEAD's baseline, or all),
    filtered, sorted and cut as `show` does, without downloading any data."""
    if limit is not None and limit < 0:
        raise UsageError("-n must be 0 or more")
    r = _open(project, remote)
    head = lookup.current_baseline(project)
    if not all_baselines and head is None:
        return listing.Table([], [], [], 0, None)
    exps, _ = remote_experiments(project, r, baseline=None if all_baselines else head)
    return _table(exps, all_baselines=all_baselines, filter=filter, sort_by=sort_by, keep=keep,
                  drop=drop, only_changed=only_changed, limit=limit, head=head)


def _table(exps: list[listing.ExperimentRow], *, all_baselines: bool, filter: str | None,
           sort_by: str | None, keep: Sequence[str] = (), drop: Sequence[str] = (),
           only_changed: bool = False, limit: int | None = None, head: str | None = None,
           top: int | None = None) -> listing.Table:
    """books.show's filtering, sorting and column choice, over a given list."""
    with listing.paused_gc():
        shown, extra = listing.columns_of(exps, with_baseline=all_baselines)
        known = shown + extra if exps else None
        pred = filterexpr.compile_filter(filter, known) if filter else None
        if sort_by and not exps:
            query.split_sort(sort_by)
        sort = query.parse_sort(sort_by, known) if sort_by and known else None
        pairs = [(e, e.row()) for e in exps]
        if pred is not None:
            pairs = [(e, row) for e, row in pairs if pred(row)]
        if sort is not None:
            if top is not None:  # never "top" without a value to rank by
                pairs = [(e, row) for e, row in pairs if row.get(sort.column.id) is not None]
            by_id = {id(row): e for e, row in pairs}
            rows = query.sort_rows([row for _, row in pairs], sort)
            pairs = [(by_id[id(row)], row) for row in rows]
        if limit is not None:
            pairs = pairs[:limit]
        rows = [row for _, row in pairs]
        columns = query.select_columns(shown, rows, keep=keep, drop=drop, only_changed=only_changed)
        return listing.Table(columns, [e for e, _ in pairs], rows, len(exps),
                           None if all_baselines else head)


def select_remote(project, r: Remote, *, names: Sequence[str] = (), everything: bool = False,
                  filter: str | None = None, top: int | None = None, sort_by: str | None = None
                  ) -> list[refstore.RemoteRef]:
    """The remote experiments to pull: by name, all, or a selector over their records."""
    if names and (everything or filter is not None or top is not None):
        raise UsageError("give experiment names, or --all / --filter / --top, not several")
    if not (names or everything or filter is not None or top is not None):
        raise UsageError("nothing selected", hint="name experiments, or --all, --filter EXPR, "
                                                  "--top N --sort-by KEY")
    found = refstore.list_refs(r.backend) if r.exists() else []
    if names:
        head = lookup.current_baseline(project)
        return list(dict.fromkeys(refstore.find(found, n, head=head) for n in names))
    if everything and filter is None and top is None:
        return found
    if top is not None:
        listing.check_best(top, sort_by, "--top")
    exps, _ = remote_experiments(project, r)
    table = _table([e for e in exps if e.status != listing.UNREADABLE], all_baselines=True,
                   filter=filter, sort_by=sort_by, limit=top, top=top)
    wanted = {(e.baseline, e.name, e.oid) for e in table.experiments}
    return [x for x in found if (x.baseline, x.name, x.oid) in wanted]


# ---------------------------------------------------------------- pull

def pull(project, *, remote: str | Remote | None = None, names: Sequence[str] = (),
         everything: bool = False, filter: str | None = None, top: int | None = None,
         sort_by: str | None = None, queued: bool = False, jobs: int | None = None,
         progress: Callback | None = None) -> ExpReport:
    """Bring experiments (and with `queued`, the remote's queue entries) here."""
    r = _open(project, remote, jobs)
    report = ExpReport("pull", r.name)
    chosen = select_remote(project, r, names=names, everything=everything, filter=filter,
                           top=top, sort_by=sort_by) \
        if (names or everything or filter is not None or top is not None) or not queued else []
    clashing = refstore.clashes(refstore.list_refs(r.backend)) if chosen else {}
    ok: list[refstore.RemoteRef] = []
    for ref in chosen:
        if (ref.baseline, ref.name) in clashing:
            err = refstore.clash_error(ref.baseline, ref.name, clashing[(ref.baseline, ref.name)])
            report.results.append(Moved(ref.name, ref.baseline, ref.oid, CONFLICT, err.message,
                                        err.exit_code))
            continue
        local = refs.read(project, ref.baseline, ref.name)
        if local is not None and local != ref.oid:
            err = Conflict(f"experiment {ref.name!r} ({ref.baseline[:7]}) exists here with another "
                           f"record ({local[:12]}; the remote's is {ref.oid[:12]})",
                           hint="rename yours (`tally exp rename OLD NEW`) and pull again")
            report.results.append(Moved(ref.name, ref.baseline, ref.oid, CONFLICT, err.message,
                                        err.exit_code))
            continue
        ok.append(ref)
    roots = [(x.oid, RECORD) for x in ok]
    entries: list[tuple[str, Any]] = []
    if queued:
        entries = _remote_queue(project, r)
        for _, e in entries:
            roots.append((e.workspace, TREE))
            if e.checkpoint:
                roots.append((e.checkpoint, TREE))
    got = fetch_roots(project, r, roots, progress=progress) if roots else None
    if got is not None:
        report.objects = got.received + got.present
        report.transferred, report.transferred_bytes = got.received, got.received_bytes
    for ref in ok:
        if got is not None and ref.oid in got.incomplete:
            err = got.failed.get(ref.oid) or next(iter(got.failed.values()), None) or \
                ObjectMissing(ref.oid)
            report.results.append(Moved(ref.name, ref.baseline, ref.oid, FAILED,
                                        f"its objects could not all be fetched: {err.message}",
                                        err.exit_code))
            continue
        try:
            refs.update(project, ref.baseline, ref.name, ref.oid, None)
            status = PULLED
        except Conflict:
            if refs.read(project, ref.baseline, ref.name) != ref.oid:
                raise
            status = UP_TO_DATE
        report.results.append(Moved(ref.name, ref.baseline, ref.oid, status))
    if entries:
        report.queued = _enqueue_pulled(project, entries, got)
    return report


def _remote_queue(project, r: Remote) -> list[tuple[str, Any]]:
    from cas.objects import queue_entry
    from cas.queue import directory as queue

    have = {it.id for it in queue.items(project)}
    out = []
    for entry_id in refstore.list_queue(r.backend) if r.exists() else []:
        if entry_id in have:
            continue
        out.append((entry_id, queue_entry.decode(refstore.read_queue_entry(r.backend, entry_id))))
    return out


def _enqueue_pulled(project, entries: list[tuple[str, Any]], got) -> list[str]:
    from cas.queue import directory as queue

    ready = [e for _, e in entries if got is None or
             (e.workspace not in got.incomplete and (not e.checkpoint or e.checkpoint not in got.incomplete))]
    return [it.id for it in queue.enqueue(project, ready)] if ready else []


# ---------------------------------------------------------------- on demand

def ensure_local(project, spec: str, *, remote: str | Remote | None = None,
                 progress: Callback | None = None) -> tuple[str, str, str]:
    """Make experiment `spec` usable here: when its ref is unknown locally, or its
    record or something it needs is missing, fetch it from the remote (the default
    one unless named). Returns (baseline, name, record id).

    Raises:
        NotFound: neither here nor on the remote. Conflict: a clash on the remote.
    """
    try:
        baseline, name, oid = lookup.find(project, spec)
    except NotFound:
        try:
            r = _open(project, remote)
        except NotFound:
            raise NotFound(f"no experiment named {spec!r}",
                           hint="no remote is configured to fetch it from") from None
        ref = refstore.find(refstore.list_refs(r.backend) if r.exists() else [], spec,
                            head=lookup.current_baseline(project))
        rep = pull(project, remote=r, names=[f"{ref.baseline}/{ref.name}"], progress=progress)
        _raise_first(rep)
        return ref.baseline, ref.name, ref.oid
    try:
        c = selection.local_closure(project.store, _record_roots(project, oid))
        complete = not c.missing
    except ObjectMissing:
        complete = False
    if not complete:
        r = _open(project, remote)
        got = fetch_roots(project, r, [(oid, RECORD)], progress=progress)
        if got.failed:
            raise next(iter(got.failed.values()))
    return baseline, name, oid


def _raise_first(rep: ExpReport) -> None:
    for m in rep.results:
        if m.status == CONFLICT:
            raise Conflict(m.error or f"could not pull {m.name}")
        if m.status == FAILED:
            raise NotFound(m.error or f"could not pull {m.name}")


def restore(project, spec: str, *, remote: str | Remote | None = None, **kwargs: Any):
    """`tally restore` that fetches what is missing from the remote first."""
    from cas.experiments import restore as restore_mod
    baseline, name, _ = ensure_local(project, spec, remote=remote)
    return restore_mod.restore(project, f"{baseline}/{name}", **kwargs)


def promote(project, *, names: Sequence[str] = (), remote: str | Remote | None = None,
            **kwargs: Any):
    """`tally promote NAME...` that fetches what is missing from the remote first."""
    from cas.experiments import promote as promote_mod
    full = [("/".join(ensure_local(project, n, remote=remote)[:2])) for n in names]
    return promote_mod.promote(project, names=full, **kwargs)


# ---------------------------------------------------------------- diff

def diff(project, a: str, b: str | None = None, *, remote: str | Remote | None = None) -> compare.Diff:
    """Params and metrics of `a` against `b`, each an experiment here or on the remote
    (here first); with `b` None, against `a`'s baseline commit, as `tally diff` does.
    Remote records are read into memory, verified; nothing is published."""
    r = _open(project, remote)
    found = refstore.list_refs(r.backend) if r.exists() else []
    head = lookup.current_baseline(project)

    def load(spec: str) -> tuple[str, record_mod.Record]:
        try:
            base, name, rec = lookup.load(project, spec)
            return f"{base[:7]}/{name}", rec
        except (NotFound, ObjectMissing):
            ref = refstore.find(found, spec, head=head)
            r.catalog(refresh=True)
            got, failed = read_structured(r, [(ref.oid, RECORD)], tmp_store=project.store)
            if ref.oid not in got:
                raise failed.get(ref.oid) or ObjectMissing(ref.oid)
            return f"{ref.baseline[:7]}/{ref.name} (remote)", record_mod.decode(got[ref.oid])

    alabel, arec = load(a)
    if b is None:
        notes: list[str] = []
        bparams, bmetrics = compare.files_at(project, arec.baseline, arec, notes)
        blabel = f"baseline {arec.baseline[:7]}"
    else:
        notes = []
        blabel, brec = load(b)
        bparams, bmetrics = brec.flat_params(), brec.flat_metrics()
    rows = compare.diff_rows("params", arec.flat_params(), bparams) + \
        compare.diff_rows("metrics", arec.flat_metrics(), bmetrics)
    return compare.Diff(alabel, blabel, rows, notes)


__all__ = ["push", "pull", "show", "diff", "ensure_local", "restore", "promote",
           "remote_experiments", "select_remote", "select_local", "ExpReport", "Moved"]
