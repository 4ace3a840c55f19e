"""Remove experiments: by name, or by selectors (all, failed, a filter, an age, all but
the best N). Only refs are deleted; the objects they alone kept go at the next gc.

Each ref is deleted by compare-and-swap, so an experiment re-recorded or renamed
since it was listed is left alone (and reported), never deleted by mistake. Many refs
go in one batch (delete_refs): one lock, and one directory sync per baseline rather
than per ref (950 refs: ~10 s -> well under a second on ext4 here).
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from cas.experiments import listing
from cas.experiments import lookup
from cas.experiments import filterexpr
from cas.experiments import table as query
from cas.store import refs
from cas.core.errors import Conflict, NotFound, TallyError, UsageError
from cas.core.fsops import fsync_dir
from cas.core.fsops import unlink_quiet

if TYPE_CHECKING:
    from cas.workspace.project import Project

# Unlinks of at least this many refs go to threads: each frees a block, and where the
# filesystem discards synchronously (ext4 with `discard`) an unlink waits on the disk.
PARALLEL_MIN = 64
UNLINK_THREADS = 32


@dataclass
class Removal:
    """What remove did (or, with dry_run, would do)."""

    removed: list[listing.ExperimentRow]
    failed: list[tuple[listing.ExperimentRow, TallyError]]  # refs that moved or vanished meanwhile
    kept: int  # experiments in scope left alone
    dry_run: bool


def select(project: Project, *, names: Sequence[str] = (), everything: bool = False,
           failed: bool = False, filter: str | None = None, older_than: str | None = None,
           keep_best: int | None = None, sort_by: str | None = None,
           all_baselines: bool = False, now_ns: int | None = None) -> tuple[list[listing.ExperimentRow], int]:
    """The experiments the selectors pick, and how many in scope they leave out.

    Names pick exactly those experiments and combine with nothing else. The other
    selectors combine with AND: `--failed --older-than 30d` picks failed (or
    interrupted: a run that did not finish, as gc's --drop-failed) experiments older
    than 30 days; `--keep-best N --sort-by KEY:desc` then spares the first N of
    those in that order (missing values count as worst). `everything` picks every
    experiment in scope (the current baseline, or all with `all_baselines`).

    Raises:
        UsageError: no selector, names mixed with selectors, --keep-best without a
            --sort-by that says asc or desc, a bad filter or duration.
        NotFound: a name that does not exist (nothing is selected then).
    """
    predicates = failed or filter is not None or older_than is not None or keep_best is not None
    if sort_by is not None and keep_best is None:
        raise UsageError("--sort-by only makes sense with --keep-best (or --top)")
    if names and (predicates or everything):
        raise UsageError("give experiment names or selectors (--all, --failed, --filter, "
                         "--older-than, --keep-best), not both")
    if not names and not predicates and not everything:
        raise UsageError("nothing selected", hint="name experiments, or use --all, --failed, "
                         "--filter EXPR, --older-than AGE or --keep-best N --sort-by KEY:desc")
    if keep_best is not None:
        listing.check_best(keep_best, sort_by, "--keep-best")
    if names:
        picked: dict[tuple[str, str], listing.ExperimentRow] = {}
        listed = {(e.baseline, e.name): e for e in listing.list_experiments(project, all_baselines=True)}
        for spec in names:
            b, n, _ = lookup.find(project, spec)
            picked[(b, n)] = listed[(b, n)]
        head = lookup.current_baseline(project)
        scope = [e for e in listed.values() if all_baselines or e.baseline == head]
        return list(picked.values()), max(0, len(scope) - len(picked))
    scope = listing.list_experiments(project, all_baselines=all_baselines)
    chosen = _pick(scope, failed=failed, filter=filter, older_than=older_than, keep_best=keep_best,
                   sort_by=sort_by, with_baseline=all_baselines, now_ns=now_ns)
    return chosen, len(scope) - len(chosen)


def _pick(scope: list[listing.ExperimentRow], *, failed: bool, filter: str | None, older_than: str | None,
          keep_best: int | None, sort_by: str | None, with_baseline: bool,
          now_ns: int | None) -> list[listing.ExperimentRow]:
    from cas.core.durations import parse_duration

    with listing.paused_gc():
        shown, extra = listing.columns_of(scope, with_baseline=with_baseline)
        pred = filterexpr.compile_filter(filter, shown + extra if scope else None) if filter else None
        cutoff = None
        if older_than is not None:
            now = time.time_ns() if now_ns is None else now_ns
            cutoff = now - int(parse_duration(older_than) * 1e9)
        rows = []
        for e in scope:
            if failed and e.status not in ("failed", "interrupted"):  # as gc's --drop-failed
                continue
            if cutoff is not None and not (e.created and e.created < cutoff):
                continue
            r = e.row()
            if pred is not None and not pred(r):
                continue
            rows.append((e, r))
        if keep_best is not None and rows:
            sort = query.parse_sort(sort_by, shown + extra)  # type: ignore[arg-type]
            ordered = query.sort_rows([r for _, r in rows], sort)
            best = {id(r) for r in ordered[:keep_best]}
            rows = [(e, r) for e, r in rows if id(r) not in best]
        return [e for e, _ in rows]


def remove(project: Project, *, dry_run: bool = False, **selectors: Any) -> Removal:
    """Delete the refs of the selected experiments (see select()); objects stay until gc.

    Each ref is deleted by compare-and-swap, so one that moved since it was listed is
    left alone and reported in `failed`; the others are still removed.
    """
    chosen, kept = select(project, **selectors)
    if dry_run:
        return Removal(chosen, [], kept, True)
    removed, failed = [], []
    for e, exc in zip(chosen, delete_refs(project, [(e.baseline, e.name, e.oid) for e in chosen])):
        if exc is None:
            removed.append(e)
        else:
            failed.append((e, exc))
    return Removal(removed, failed, kept, False)


def delete_refs(project: Project, items: Sequence[tuple[str, str, str]], *,
                sync: bool = True) -> list[TallyError | None]:
    """Delete many refs, each only if it still names the record given: refs.delete's
    compare-and-swap, in one batch.

    The `refs` lock is taken once; each ref is read and compared, then the matching
    ones are unlinked (on threads when there are many) and each directory they were
    in is synced once, or left to the caller with `sync=False` (gc makes them durable
    with its own barrier). A baseline directory left empty is removed.

    Args:
        items: (baseline, name, expected record id) per ref.
    Returns:
        Per item, None when deleted, else the error refs.delete would have raised
        (NotFound: no such ref; Conflict: it names another record; FormatError: a
        damaged ref file; UsageError: a bad name).
    """
    results: list[TallyError | None] = [None] * len(items)
    doomed: list[tuple[int, Path]] = []
    if not items:
        return results
    with project.lock("refs", timeout=refs.LOCK_TIMEOUT, purpose="removing experiment refs"):
        for i, (baseline, name, old) in enumerate(items):
            try:
                p = refs.ref_path(project, baseline, name)
                current = refs.read(project, baseline, name)
            except TallyError as exc:
                results[i] = exc
                continue
            if current is None:
                results[i] = NotFound(f"experiment {name!r} does not exist for baseline {baseline[:12]}",
                                      path=p)
            elif current != old:
                results[i] = Conflict(f"experiment {name!r} changed meanwhile: expected {old[:12]}, "
                                      f"found {current[:12]}", path=p,
                                      hint="another process updated it; re-read and retry")
            else:
                doomed.append((i, p))
        # Nobody changes a ref while we hold the lock: the comparisons above still hold.
        if len(doomed) < PARALLEL_MIN:
            gone = [unlink_quiet(p) for _, p in doomed]
        else:
            with ThreadPoolExecutor(max_workers=UNLINK_THREADS) as pool:
                gone = list(pool.map(unlink_quiet, [p for _, p in doomed], chunksize=16))
        for (i, p), ok in zip(doomed, gone):
            if not ok:
                results[i] = NotFound(f"experiment {items[i][1]!r} does not exist for baseline "
                                      f"{items[i][0][:12]}", path=p)
        for parent in {p.parent for _, p in doomed}:
            if sync:
                fsync_dir(parent)
            try:
                parent.rmdir()  # the last ref of a baseline takes its directory with it
            except OSError:
                pass
    return results

