"""`tally fetch`: bring data into the local store from a remote, verified; no checkout."""

from __future__ import annotations

from ..flags import JSON
from ..spec import Command
from .push import DATA_OPTS, EXITS, TARGETS, progress, render_data


def body(a) -> int:
    from cas.sync import data
    from cas.workspace.project import open_project

    rep = data.fetch(open_project(), remote=a.remote, paths=a.targets or None, revs=a.rev,
                     all_branches=a.all_branches, all_tags=a.all_tags, all_commits=a.all_commits,
                     jobs=a.jobs, progress=progress())
    return render_data(rep, a.json)


COMMAND = Command(
    "fetch", "Bring the data that pointers and tally.lock name (the work tree's, or with "
    "--rev/--all-* history's) into the local store from a remote, without checking it out.",
    body, args=(TARGETS._replace(help="Data paths (default: all tracked data)."),),
    opts=DATA_OPTS + (JSON,), exits=EXITS)
