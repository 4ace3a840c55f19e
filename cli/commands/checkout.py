"""`tally checkout`: materialize tracked data. Fast path: run after every `git
checkout` (no Typer: ~60 ms)."""

from __future__ import annotations

from ..flags import FORCE, JSON, VERIFY
from ..output import emit_json, out, progress
from ..spec import ANY, Arg, Command


def body(a) -> None:
    from cas.workspace import tracking
    from cas.workspace.project import open_project

    project = open_project()
    with progress("checking out") as cb:
        reports = tracking.checkout(project, a.paths or None, force=a.force, progress=cb,
                                    verify=a.verify)
    if a.json:
        emit_json({p: {"written": len(r.written), "deleted": len(r.deleted),
                       "unchanged": r.unchanged, "modes": r.modes} for p, r in reports.items()})
        return
    for p, r in reports.items():
        if r.written or r.deleted:
            modes = ", ".join(f"{n} {m}" for m, n in sorted(r.modes.items()))
            out(f"{p}: {len(r.written)} written ({modes}), {len(r.deleted)} removed, "
                f"{r.unchanged} unchanged")
        else:
            out(f"{p}: up to date")


COMMAND = Command(
    "checkout", "Materialize tracked data from the store, as after `git checkout`.\n\n"
    "Only files that differ are touched. Refuses (exit 4) to overwrite changes that are "
    "not in the store, naming them, unless --force.",
    body, args=(Arg("paths", "PATH", ANY, "Tracked paths (default: all)."),),
    opts=(FORCE._replace(help="Overwrite modified files that are not in the store."), VERIFY, JSON),
    exits=((3, "a PATH is not tracked, or an object is missing from the store"),
           (4, "would overwrite changes that are not in the store (see --force)"),
           (5, "an object in the store is corrupt (nothing damaged takes a file's name)")),
    fast=True)
