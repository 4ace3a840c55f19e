"""`tally remove`: experiments' refs now, their data at the next `tally gc`."""

from __future__ import annotations

from typing import Any

from ..flags import ALL, ALL_COMMITS, DRY_RUN, FAILED, FILTER, JSON, KEEP_BEST, OLDER_THAN, SORT_BY
from ..output import emit_json, err, out
from ..spec import ANY, Arg, Command


def body(a) -> int:
    from cas.experiments import removal
    from cas.workspace.project import open_project

    res = removal.remove(open_project(), names=a.names, everything=a.all, failed=a.failed,
                         filter=a.filter, older_than=a.older_than, keep_best=a.keep_best,
                         sort_by=a.sort_by, all_baselines=a.all_commits, dry_run=a.dry_run)
    if a.json:
        emit_json({"dry_run": res.dry_run, "removed": [_brief(e) for e in res.removed],
                   "failed": [dict(_brief(e), error=x.message) for e, x in res.failed],
                   "kept": res.kept})
    else:
        verb = "would remove" if res.dry_run else "removed"
        for e in res.removed:
            out(f"{verb} {e.name} ({e.baseline[:7]}, {e.status})")
        for e, x in res.failed:
            err(f"tally: error: {e.name}: {x.message}")
        err(f"{verb} {len(res.removed)} experiment(s), kept {res.kept}"
            + ("" if res.dry_run or not res.removed else "; `tally gc` frees their data"))
    return max((x.exit_code for _, x in res.failed), default=0)


def _brief(e: Any) -> dict[str, Any]:
    return {"name": e.name, "baseline": e.baseline, "record": e.oid, "status": e.status}


COMMAND = Command(
    "remove",
    "Remove experiments: their refs go now, their data at the next `tally gc`.\n\n"
    "Selectors combine with AND (--failed --older-than 30d: failed ones older than 30 "
    "days); --keep-best N then spares the best N of those. Scope: the current baseline, "
    "or every one with -A.",
    body,
    args=(Arg("names", "NAME", ANY, "Experiments (NAME or BASELINE/NAME)."),),
    opts=(ALL._replace(help="Every experiment in scope."),
          FAILED._replace(help="Failed and interrupted experiments."),
          FILTER, OLDER_THAN,
          KEEP_BEST._replace(help="Spare the best N by --sort-by."),
          SORT_BY._replace(help="Which end is best for --keep-best: KEY:desc (highest) or "
                                "KEY:asc (lowest); :max and :min are aliases."),
          ALL_COMMITS._replace(names=ALL_COMMITS.names + ("--all-baselines",)),
          DRY_RUN._replace(help="Only report what would be removed."),
          JSON),
    exits=((2, "bad usage: nothing selected, --keep-best without --sort-by, a bad filter or age"),
           (3, "no such experiment, or one vanished meanwhile (the others are still removed)"),
           (4, "an experiment changed meanwhile and was kept (the others are still removed)"),
           (7, "another tally process holds the experiment refs")))
