"""`tally fsck`: verify the whole store."""

from __future__ import annotations

from ..flags import JSON
from ..output import emit_json, err, out, progress
from ..spec import FLAG, Command, Opt


def body(a) -> None:
    from cas.core.errors import Corruption
    from cas.gc.fsck import fsck
    from cas.workspace.project import open_project

    with progress("verifying") as cb:
        report = fsck(open_project(), repair=a.repair, progress=cb)
    if a.json:
        emit_json(report.to_json())
    else:
        for p in report.problems:
            out(f"{p.kind}: {p.where}: {p.detail}")
        for n in report.notes:
            err(f"note: {n}")
        for oid in report.repaired:
            err(f"removed corrupt object {oid}")
        err(f"checked {report.objects} objects, {report.trees} trees, {report.roots} roots: "
            f"{len(report.problems)} problem(s)")
    if not report.ok:
        raise Corruption(f"fsck found {len(report.problems)} problem(s)",
                         hint=None if a.repair else "`tally fsck --repair` removes corrupt objects")


COMMAND = Command(
    "fsck", "Re-hash every object, decode every tree, resolve every pointer and ref.\n\n"
    "Exits 5 when anything is wrong, listing each problem by kind.",
    body,
    opts=(Opt(("--repair",), "repair", FLAG, "Delete corrupt objects and name what is now incomplete."),
          JSON._replace(help="Machine-readable report on stdout.")),
    exits=((5, "corruption found (each problem listed on stdout)"),
           (7, "another tally process holds the store")))
