"""`tally add`: store data, write pointers. Fast path: run on every iteration of a
user's data loop (no Typer: ~60 ms)."""

from __future__ import annotations

from ..flags import JSON
from ..output import emit_json, err, human_bytes, out, progress
from ..spec import SOME, Arg, Command


def body(a) -> None:
    from cas.workspace import tracking
    from cas.workspace.project import open_project

    project = open_project()
    with progress("hashing") as cb:
        added = tracking.add(project, a.paths, progress=cb)
    if a.json:
        emit_json([{"path": x.path, "oid": x.pointer.oid, "kind": "dir" if x.pointer.is_dir else "file",
                    "size": x.pointer.size, "files": x.pointer.files, "hashed": x.hashed,
                    "changed": x.changed} for x in added])
        return
    for x in added:
        what = f"{x.pointer.files} files, " if x.pointer.is_dir else ""
        verb = "added" if x.changed else "unchanged"
        out(f"{verb} {x.path} ({what}{human_bytes(x.pointer.size)}) -> {x.path}.tally")
    if any(x.changed for x in added):
        err("To track the changes with Git, run:\n  git add " +
            " ".join(f"{x.path}.tally" for x in added if x.changed) + " .gitignore")


COMMAND = Command(
    "add", "Store data and write PATH.tally pointer files to commit in its place.\n\n"
    "PATH itself is added to .gitignore. Unchanged files are not read again.",
    body, args=(Arg("paths", "PATH", SOME, "Files or directories to store."),), opts=(JSON,),
    exits=((3, "a PATH does not exist"),), fast=True)
