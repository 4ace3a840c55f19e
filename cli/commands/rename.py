"""`tally rename`: give an experiment another name."""

from __future__ import annotations

from ..flags import JSON
from ..output import emit_json, out
from ..spec import REQUIRED, Arg, Command


def body(a) -> None:
    from cas.experiments import lookup
    from cas.workspace.project import open_project

    r = lookup.rename(open_project(), a.old, a.new)
    if a.json:
        emit_json({"baseline": r.baseline, "old": r.old, "new": r.new, "record": r.oid})
    else:
        out(f"renamed {r.old} -> {r.new} ({r.baseline[:7]})")


COMMAND = Command(
    "rename", "Rename an experiment (its name is unique under its baseline).",
    body,
    args=(Arg("old", "OLD", REQUIRED, "The experiment (NAME or BASELINE/NAME)."),
          Arg("new", "NEW", REQUIRED, "Its new name (unique under its baseline).")),
    opts=(JSON,),
    exits=((2, "bad usage: an invalid new name"), (3, "no such experiment"),
           (4, "the new name is taken under its baseline")))
