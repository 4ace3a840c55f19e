"""Remove experiments: by name, or by selectors (all, failed, a filter, an age, all but
the best N). Only refs are deleted; the objects they alone kept go at the next gc.

Each ref is deleted by compare-and-swap, so an experiment re-recorded or renamed
since it was listed is left alone (and reported), never deleted by mistake.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Sequence

from . import books, query, refs
from .errors import NotFound, TallyError, UsageError


@dataclass
class Removal:
    """What remove did (or, with dry_run, would do)."""

    removed: list[books.Experiment]
    failed: list[tuple[books.Experiment, TallyError]]  # refs that moved or vanished meanwhile
    kept: int  # experiments in scope left alone
    dry_run: bool


def select(project: Any, *, names: Sequence[str] = (), everything: bool = False,
           failed: bool = False, filter: str | None = None, older_than: str | None = None,
           keep_best: int | None = None, sort_by: str | None = None,
           all_baselines: bool = False, now_ns: int | None = None) -> tuple[list[books.Experiment], int]:
    """The experiments the selectors pick, and how many in scope they leave out.

    Names pick exactly those experiments and combine with nothing else. The other
    selectors combine with AND: `--failed --older-than 30d` picks failed experiments
    older than 30 days; `--keep-best N --sort-by KEY:desc` then spares the first N of
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
        books.check_best(keep_best, sort_by, "--keep-best")
    if names:
        picked: dict[tuple[str, str], books.Experiment] = {}
        listed = {(e.baseline, e.name): e for e in books.list_experiments(project, all_baselines=True)}
        for spec in names:
            b, n, _ = books.find(project, spec)
            picked[(b, n)] = listed[(b, n)]
        head = books.current_baseline(project)
        scope = [e for e in listed.values() if all_baselines or e.baseline == head]
        return list(picked.values()), max(0, len(scope) - len(picked))
    scope = books.list_experiments(project, all_baselines=all_baselines)
    chosen = _pick(scope, failed=failed, filter=filter, older_than=older_than, keep_best=keep_best,
                   sort_by=sort_by, with_baseline=all_baselines, now_ns=now_ns)
    return chosen, len(scope) - len(chosen)


def _pick(scope: list[books.Experiment], *, failed: bool, filter: str | None, older_than: str | None,
          keep_best: int | None, sort_by: str | None, with_baseline: bool,
          now_ns: int | None) -> list[books.Experiment]:
    from .duration import parse_duration

    with books.paused_gc():
        shown, extra = books.columns_of(scope, with_baseline=with_baseline)
        pred = query.compile_filter(filter, shown + extra if scope else None) if filter else None
        cutoff = None
        if older_than is not None:
            now = time.time_ns() if now_ns is None else now_ns
            cutoff = now - int(parse_duration(older_than) * 1e9)
        rows = []
        for e in scope:
            if failed and e.status != "failed":
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


def remove(project: Any, *, dry_run: bool = False, **selectors: Any) -> Removal:
    """Delete the refs of the selected experiments (see select()); objects stay until gc.

    Each ref is deleted by compare-and-swap, so one that moved since it was listed is
    left alone and reported in `failed`; the others are still removed.
    """
    chosen, kept = select(project, **selectors)
    if dry_run:
        return Removal(chosen, [], kept, True)
    removed, failed = [], []
    for e in chosen:
        try:
            refs.delete(project, e.baseline, e.name, e.oid)
            removed.append(e)
        except (NotFound, TallyError) as exc:
            failed.append((e, exc))
    return Removal(removed, failed, kept, False)
