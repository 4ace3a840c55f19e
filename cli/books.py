"""Experiment books: show, diff, restore, promote, remove, rename."""

from __future__ import annotations

from typing import Any, List, Optional

import typer

from .main import app
from . import showcmd
from .output import EXIT_CODES, emit_json, err, out, table
from .showcmd import DEFAULT_PRECISION, SHOW_HELP, _project

JSON = typer.Option(False, "--json", help="Machine-readable output on stdout.")
ALL_BASELINES = typer.Option(False, "--all-baselines", "-A",
                             help="Every baseline, not only the current commit's experiments.")
FILTER_HELP = ("Only experiments matching EXPR, e.g. 'metrics.acc > 0.9 and params.train.lr <= 0.01'; "
               "== != < <= > >= ~ (glob) !~, and/or/not, parentheses, \"strings\", numbers, "
               "true/false/null. Keys: metrics.json:acc, metrics.acc or acc; name, status, created.")
# Arguments are parsed with argparse in cli/showcmd.py, not Typer: Typer coerces every
# non-bool value through pydantic, whose import alone costs ~100 ms, a tenth of show's
# 1 s budget at 10,000 experiments. cli/entry.py calls showcmd directly, skipping Typer.
@app.command(epilog=EXIT_CODES, help=SHOW_HELP, add_help_option=True,
             context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
def show(ctx: typer.Context) -> None:
    showcmd.main(list(ctx.args))


@app.command(epilog=EXIT_CODES)
def diff(
    a: str = typer.Argument(..., help="An experiment (NAME or BASELINE/NAME)."),
    b: Optional[str] = typer.Argument(None, help="Another experiment or a Git revision "
                                                 "(default: A's baseline commit)."),
    show_all: bool = typer.Option(False, "--all", help="Also list unchanged params and metrics."),
    precision: Optional[int] = typer.Option(None, "--precision", metavar="N",
                                            help=f"Significant digits of floats (default {DEFAULT_PRECISION})."),
    json_out: bool = JSON,
) -> None:
    """Params and metrics of A and B side by side; the change is A - B for numbers."""
    from cas.experiments import compare
    from cas.experiments.table import format_value

    d = compare.diff(_project(), a, b)
    for note in d.notes:
        err(f"note: {note}")
    if json_out:
        emit_json({"a": d.a, "b": d.b, "rows": [r.to_json() for r in d.rows
                                                 if show_all or r.changed]})
        return
    rows = [r for r in d.rows if show_all or r.changed]
    if not rows:
        err(f"No params or metrics differ between {d.a} and {d.b}.")
        return
    p = DEFAULT_PRECISION if precision is None else precision
    cells = [[r.group, r.key, format_value(r.a, p), format_value(r.b, p),
              "-" if r.delta is None else (("+" if r.delta > 0 else "") + format_value(r.delta, p))]
             for r in rows]
    out(table(["", "key", d.a, d.b, "change"], cells))


@app.command(epilog=EXIT_CODES)
def restore(
    name: str = typer.Argument(..., help="The experiment (NAME or BASELINE/NAME)."),
    force: bool = typer.Option(False, "--force", "-f",
                               help="Overwrite uncommitted changes that are not in the store."),
    step: Optional[int] = typer.Option(None, "--step", metavar="K",
                                       help="Restore the checkpoint taken at step K."),
    json_out: bool = JSON,
) -> None:
    """Bring an experiment's code, params and outputs back into the workspace.

    Nothing runs: files come from the store, by link for data. Only files that
    differ are touched. Refuses (exit 4) to overwrite or delete uncommitted work,
    naming the files, unless --force.
    """
    from cas.experiments import restore as restore_mod

    from .restorecmd import render

    render(restore_mod.restore(_project(), name, force=force, step=step), json_out)


@app.command(epilog=EXIT_CODES)
def promote(
    names: Optional[List[str]] = typer.Argument(None, help="Experiments (NAME or BASELINE/NAME)."),
    filter: Optional[str] = typer.Option(None, "--filter", metavar="EXPR", help=FILTER_HELP),
    top: Optional[int] = typer.Option(None, "--top", metavar="N",
                                      help="The best N by --sort-by (with --filter: of those)."),
    sort_by: Optional[str] = typer.Option(None, "--sort-by", metavar="KEY:asc|desc",
                                          help="Which end is best, e.g. metrics.acc:desc."),
    branch_prefix: str = typer.Option("exp/", "--branch-prefix", metavar="P",
                                      help="Branch names are P + experiment name."),
    all_baselines: bool = ALL_BASELINES,
    dry_run: bool = typer.Option(False, "--dry-run", help="Report what would be created."),
    json_out: bool = JSON,
) -> None:
    """Create one Git branch per experiment: its baseline plus its changed files.

    The commit holds code, params, tally.lock and pointers (data stays in the
    store); it is written with Git plumbing, so your working tree, index and HEAD
    are untouched. An existing branch is a conflict for that experiment (exit 4);
    the others are still promoted.
    """
    from cas.experiments import promote as promote_mod

    rep = promote_mod.promote(_project(), names=names or (), filter=filter, top=top,
                              sort_by=sort_by, all_baselines=all_baselines,
                              branch_prefix=branch_prefix, dry_run=dry_run)
    if json_out:
        emit_json([r.to_json() for r in rep.results])
    else:
        if not rep.results:
            err("No experiment selected.")
        for r in rep.results:
            files = f"{len(r.changed)} changed, {len(r.deleted)} deleted"
            if r.status == "created":
                out(f"created {r.branch} at {r.commit[:12]} ({files}) from {r.name}")
            elif r.status == "would-create":
                out(f"would create {r.branch} ({files}) from {r.name}")
            else:
                err(f"tally: {'conflict' if r.status == 'exists' else 'error'}: {r.name}: {r.error}")
            if r.skipped:
                err(f"  note: {len(r.skipped)} symlink(s) not committed: {', '.join(r.skipped[:5])}")
    if rep.exit_code:
        raise typer.Exit(rep.exit_code)


@app.command(epilog=EXIT_CODES)
def remove(
    names: Optional[List[str]] = typer.Argument(None, help="Experiments (NAME or BASELINE/NAME)."),
    everything: bool = typer.Option(False, "--all", help="Every experiment in scope."),
    failed: bool = typer.Option(False, "--failed", help="Failed experiments."),
    filter: Optional[str] = typer.Option(None, "--filter", metavar="EXPR", help=FILTER_HELP),
    older_than: Optional[str] = typer.Option(None, "--older-than", metavar="AGE",
                                             help="Created more than AGE ago: 12h, 30d, 2w."),
    keep_best: Optional[int] = typer.Option(None, "--keep-best", metavar="N",
                                            help="Spare the best N by --sort-by."),
    sort_by: Optional[str] = typer.Option(None, "--sort-by", metavar="KEY:asc|desc",
                                          help="Which end is best, e.g. metrics.acc:desc."),
    all_baselines: bool = ALL_BASELINES,
    dry_run: bool = typer.Option(False, "--dry-run", help="Only report what would be removed."),
    json_out: bool = JSON,
) -> None:
    """Remove experiments: their refs go now, their data at the next `tally gc`.

    Selectors combine with AND (--failed --older-than 30d: failed ones older than
    30 days); --keep-best N then spares the best N of those. Scope: the current
    baseline, or every one with -A.
    """
    from cas.experiments import removal

    res = removal.remove(_project(), names=names or (), everything=everything, failed=failed,
                       filter=filter, older_than=older_than, keep_best=keep_best, sort_by=sort_by,
                       all_baselines=all_baselines, dry_run=dry_run)
    if json_out:
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
    if res.failed:
        raise typer.Exit(max(x.exit_code for _, x in res.failed))


def _brief(e: Any) -> dict[str, Any]:
    return {"name": e.name, "baseline": e.baseline, "record": e.oid, "status": e.status}


@app.command(epilog=EXIT_CODES)
def rename(
    old: str = typer.Argument(..., help="The experiment (NAME or BASELINE/NAME)."),
    new: str = typer.Argument(..., help="Its new name (unique under its baseline)."),
    json_out: bool = JSON,
) -> None:
    """Rename an experiment. Exit 4 if the new name is taken under its baseline."""
    from cas.experiments import lookup

    r = lookup.rename(_project(), old, new)
    if json_out:
        emit_json({"baseline": r.baseline, "old": r.old, "new": r.new, "record": r.oid})
    else:
        out(f"renamed {r.old} -> {r.new} ({r.baseline[:7]})")
