"""`tally unprotect`: make linked files editable."""

from __future__ import annotations

from ..output import err, out
from ..spec import SOME, Arg, Command


def body(a) -> None:
    from cas.workspace import tracking
    from cas.workspace.project import open_project

    changed = tracking.unprotect(open_project(), a.paths)
    for c in changed:
        out(f"unprotected {c}")
    if not changed:
        err("nothing to unprotect: the files are already independent copies")


COMMAND = Command(
    "unprotect", "Replace hardlinked/symlinked (read-only) files with writable copies, to edit them.",
    body, args=(Arg("paths", "PATH", SOME, "Linked files or directories."),),
    exits=((3, "a PATH does not exist"),))
