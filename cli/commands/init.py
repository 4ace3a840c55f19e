"""`tally init`: create the store."""

from __future__ import annotations

from ..flags import JSON
from ..output import emit_json, err, out
from ..spec import Command


def body(a) -> None:
    from cas.workspace.project import init_project

    project, created = init_project()
    if a.json:
        emit_json({"root": str(project.root), "created": created, "format": project.config.format})
    elif created:
        out(f"Initialized tally store in {project.store_dir}")
    else:
        err(f"tally store already exists in {project.store_dir}")


COMMAND = Command(
    "init", "Create the .tally/ store at the top of the current Git work tree.\n\n"
    "Running it again in a project that has one changes nothing (exit 0).",
    body, opts=(JSON,),
    exits=((6, "not inside a Git work tree, or the store is of a newer format"),))
