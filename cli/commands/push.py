"""`tally push`: send data (what pointers and tally.lock name) or experiments to a remote.

Shares its option table with `pull` and `fetch` (cli/commands/pull.py, fetch.py): one
declaration per flag. The work is cas/sync/data.py and cas/sync/exps.py.
"""

from __future__ import annotations

import sys

from ..flags import ALL, ALL_COMMITS, FILTER, JOBS, JSON, SORT_BY
from ..output import emit_json, err, human_bytes, out
from ..spec import ANY, FLAG, MANY, ONE, Arg, Command, Opt, count

REMOTE = Opt(("-r", "--remote"), "remote", ONE,
             "The remote (default: remote.default, or the only one).", metavar="NAME")
TRANSFERS = JOBS._replace(help="How many transfers at a time (default: remote.jobs, 8).",
                          default=None)
REV = Opt(("--rev",), "rev", MANY, "The data a commit's pointers and tally.lock name "
          "(repeatable), instead of the work tree's.", metavar="REV")
ALL_BRANCHES = Opt(("-a", "--all-branches"), "all_branches", FLAG,
                   "What every local branch's pointers and tally.lock name.")
ALL_TAGS = Opt(("-T", "--all-tags"), "all_tags", FLAG, "What every tag names.")
HISTORY_COMMITS = ALL_COMMITS._replace(help="Every commit, not only HEAD: what every commit "
                                            "of Git history names (with --exp: every baseline).")
EXP = Opt(("--exp",), "exp", FLAG, "Experiments instead of data: NAMEs are experiment names "
          "(NAME or BASELINE/NAME), or select with --all, --filter, --top.")
EXP_ALL = ALL._replace(help="With --exp: every experiment.")
TOP = Opt(("--top",), "top", ONE, "With --exp: the best N by --sort-by.", metavar="N", type=count)
EXP_SORT = SORT_BY._replace(help="Which end is best for --top: KEY:desc or KEY:asc.")
QUEUED = Opt(("--queued",), "queued", FLAG,
             "Queued experiments too (pending entries), so another machine can run them.")
DATA_OPTS = (REMOTE, TRANSFERS, REV, ALL_BRANCHES, ALL_TAGS, HISTORY_COMMITS)
EXP_OPTS = (EXP, EXP_ALL, FILTER, TOP, EXP_SORT, QUEUED)
TARGETS = Arg("targets", "TARGET", ANY, "Data paths (default: all tracked data), or with "
              "--exp experiment names.")
EXITS = ((3, "no such remote, path or experiment; an object missing on both sides"),
         (4, "an experiment name is taken on the other side by another record"),
         (5, "damaged bytes (a hash or format check failed); nothing damaged was published"),
         (7, "the remote is locked by a remote gc (or a push, for gc)"),
         (9, "the remote is unreachable, refused the credentials, is read-only, full, or "
             "missing"))


def progress():
    """A stderr progress line when stderr is a terminal."""
    if not sys.stderr.isatty():
        return None
    from cas.remote.progress import stderr_printer
    return stderr_printer()


def exp_selectors(a) -> dict:
    return {"names": a.targets, "everything": a.all, "filter": a.filter, "top": a.top,
            "sort_by": a.sort_by, "queued": a.queued}


def render_exps(rep, verb: str, json: bool) -> int:
    if json:
        emit_json(rep.to_json())
        return rep.exit_code
    for m in rep.results:
        if m.status in ("conflict", "failed"):
            err(f"tally: {m.status}: {m.name} ({m.baseline[:7]}): {m.error}")
        else:
            out(f"{m.status}: {m.name} ({m.baseline[:7]}) {m.record[:12]}")
    if rep.queued:
        out(f"{verb} {len(rep.queued)} queued entr{'y' if len(rep.queued) == 1 else 'ies'}")
    out(f"{rep.transferred} object(s), {human_bytes(rep.transferred_bytes)} {verb} "
        f"{'to' if verb == 'pushed' else 'from'} {rep.remote}")
    return rep.exit_code


def render_data(rep, json: bool) -> int:
    if json:
        emit_json(rep.to_json())
    else:
        verb = {"push": "pushed", "fetch": "fetched", "pull": "pulled"}[rep.action]
        out(f"{verb} {rep.transferred} object(s), {human_bytes(rep.transferred_bytes)} "
            f"{'to' if rep.action == 'push' else 'from'} {rep.remote} "
            f"({rep.already} of {rep.objects} already there)")
        for path in rep.checked_out:
            out(f"checked out {path}")
    rep.raise_for_failures()
    return 0


def body(a) -> int:
    from cas.core.errors import UsageError
    from cas.workspace.project import open_project

    project = open_project()
    if a.exp or a.queued:
        if a.rev or a.all_branches or a.all_tags:
            raise UsageError("--rev, --all-branches and --all-tags select data, not experiments")
        from cas.sync import exps
        rep = exps.push(project, remote=a.remote, jobs=a.jobs, progress=progress(),
                        **exp_selectors(a))
        return render_exps(rep, "pushed", a.json)
    if a.all or a.filter is not None or a.top is not None:
        raise UsageError("--all, --filter and --top select experiments: add --exp")
    from cas.sync import data
    rep = data.push(project, remote=a.remote, paths=a.targets or None, revs=a.rev,
                    all_branches=a.all_branches, all_tags=a.all_tags, all_commits=a.all_commits,
                    jobs=a.jobs, progress=progress())
    return render_data(rep, a.json)


COMMAND = Command(
    "push", "Send data (what pointers and tally.lock name) or, with --exp, experiments to a "
    "remote.\n\nOnly what the remote lacks is sent: small objects in packs, large ones alone in "
    "parallel parts, then an index naming them, then experiment refs (spec/remote.md). A push "
    "that fails or is interrupted publishes nothing half-written; running it again sends what "
    "is still missing.",
    body, args=(TARGETS,), opts=DATA_OPTS + EXP_OPTS + (JSON,), exits=EXITS)
