"""`tally pull`: fetch data and check it out, or bring experiments (cas/sync/)."""

from __future__ import annotations

from ..flags import FORCE, JSON
from ..spec import Command
from .push import EXITS, EXP_OPTS, REMOTE, TARGETS, TRANSFERS, exp_selectors, progress, \
    render_data, render_exps


def body(a) -> int:
    from cas.workspace.project import open_project

    project = open_project()
    if a.exp or a.queued:
        from cas.sync import exps
        rep = exps.pull(project, remote=a.remote, jobs=a.jobs, progress=progress(),
                        **exp_selectors(a))
        return render_exps(rep, "pulled", a.json)
    from cas.core.errors import UsageError
    if a.all or a.filter is not None or a.top is not None:
        raise UsageError("--all, --filter and --top select experiments: add --exp")
    from cas.sync import data
    rep = data.pull(project, remote=a.remote, paths=a.targets or None, jobs=a.jobs,
                    force=a.force, progress=progress())
    return render_data(rep, a.json)


COMMAND = Command(
    "pull", "Fetch the work tree's data from a remote and check it out; with --exp, bring "
    "experiments (records, refs and every object they need).\n\nEvery byte is verified "
    "against its id before it is stored. Refuses (exit 4) to overwrite uncommitted changes "
    "unless --force; an experiment whose name is taken here by another record is refused.",
    body, args=(TARGETS,),
    opts=(REMOTE, TRANSFERS, FORCE._replace(help="Overwrite changes that are not in the store.")) +
    EXP_OPTS + (JSON,),
    exits=EXITS)
