"""`tally status`: tracked data against its pointers. Fast path: run on every
iteration of a user's data loop (no Typer: ~60 ms)."""

from __future__ import annotations

from ..flags import JSON
from ..output import emit_json, out
from ..spec import ANY, Arg, Command
from .push import REMOTE

SHOWN = 50  # changed files listed per kind and path; the rest are counted


def body(a) -> None:
    from cas.workspace import tracking
    from cas.workspace.project import open_project

    if a.remote is not None:
        return _remote(a)
    result = tracking.status(open_project(), a.paths or None)
    if a.json:
        emit_json([s.to_json() for s in result])
        return
    changed = [s for s in result if s.state != "unchanged"]
    if not result:
        out("No tracked data (use `tally add PATH`).")
        return
    if not changed:
        out("Data and pointers are up to date.")
    for s in changed:
        out(f"{s.state}: {s.path}")
        for label, items in (("new", s.added), ("modified", s.modified), ("deleted", s.deleted)):
            for item in items[:SHOWN]:
                out(f"    {label}: {s.path}/{item}")
            if len(items) > SHOWN:
                out(f"    ... and {len(items) - SHOWN} more {label}")
    for s in result:
        if s.leftovers:  # not data (add and status skip them), but they take disk space
            out(f"{s.path}: leftover temp files of a killed checkout: {len(s.leftovers)} "
                "(the next `tally checkout` removes them)")


def _remote(a) -> None:
    """`status --remote NAME`: per tracked path, complete here and on the remote?"""
    from cas.sync import data
    from cas.workspace.project import open_project

    rows = data.status(open_project(), remote=a.remote, paths=a.paths or None)
    if a.json:
        emit_json([r.to_json() for r in rows])
        return
    if not rows:
        out("No tracked data (use `tally add PATH`).")
        return
    for r in rows:
        out(f"{r.path}: here {r.local}; on the remote {r.remote}")


COMMAND = Command(
    "status", "Compare tracked data with its pointers: modified, missing, new files.\n\n"
    "Exits 0 whatever the state (use --json to script on it).",
    body, args=(Arg("paths", "PATH", ANY, "Tracked paths (default: all)."),),
    opts=(REMOTE._replace(help="Compare with the remote NAME instead: what is missing on "
                               "either side."), JSON),
    exits=((3, "a PATH is not tracked, or no such remote"),
           (9, "the remote is unreachable or refused the credentials")), fast=True)
