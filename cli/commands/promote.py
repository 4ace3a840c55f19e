"""`tally promote`: experiments to Git branches."""

from __future__ import annotations

from ..flags import ALL_COMMITS, DRY_RUN, FILTER, JSON, SORT_BY
from ..output import emit_json, err, out
from ..spec import ANY, ONE, Arg, Command, Opt, count


def body(a) -> int:
    from cas.experiments import promote
    from cas.workspace.project import open_project

    project = open_project()
    names = a.names
    if names:
        from cas.remote import settings
        if settings.remotes(project):  # fetch what is missing here, on demand
            from cas.sync import exps
            names = ["/".join(exps.ensure_local(project, n)[:2]) for n in names]
    rep = promote.promote(project, names=names, filter=a.filter, top=a.top,
                          sort_by=a.sort_by, all_baselines=a.all_commits,
                          branch_prefix=a.branch_prefix, dry_run=a.dry_run)
    if a.json:
        emit_json([r.to_json() for r in rep.results])
        return rep.exit_code
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
    return rep.exit_code


COMMAND = Command(
    "promote",
    "Create one Git branch per experiment: its baseline plus its changed files.\n\n"
    "The commit holds code, params, tally.lock and pointers (data stays in the store); "
    "it is written with Git plumbing, so your working tree, index and HEAD are untouched. "
    "An existing branch is a conflict for that experiment (exit 4); the others are still "
    "promoted.",
    body,
    args=(Arg("names", "NAME", ANY, "Experiments (NAME or BASELINE/NAME)."),),
    opts=(FILTER,
          Opt(("--top",), "top", ONE, "The best N by --sort-by (with --filter: of those).",
              metavar="N", type=count),
          SORT_BY._replace(help="Which end is best for --top: KEY:desc (highest) or KEY:asc "
                                "(lowest); :max and :min are aliases."),
          Opt(("--branch-prefix",), "branch_prefix", ONE, "Branch names are P + experiment name.",
              metavar="P", default="exp/"),
          ALL_COMMITS._replace(names=ALL_COMMITS.names + ("--all-baselines",)),
          DRY_RUN._replace(help="Report what would be created; create nothing."),
          JSON),
    exits=((2, "bad usage: nothing selected, --top without --sort-by, a bad filter or prefix"),
           (3, "no such experiment"),
           (4, "a branch exists already (the other experiments are still promoted)")))
