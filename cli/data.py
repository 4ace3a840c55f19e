"""Data commands: init, add, status, checkout, unprotect."""

from __future__ import annotations

from typing import List, Optional

import typer

from .main import app
from .output import EXIT_CODES, emit_json, err, human_bytes, out, progress

JSON = typer.Option(False, "--json", help="Machine-readable output on stdout.")


@app.command(epilog=EXIT_CODES)
def init(json_out: bool = JSON) -> None:
    """Create the .tally/ store at the top of the current Git work tree."""
    from cas.project import init_project

    project, created = init_project()
    if json_out:
        emit_json({"root": str(project.root), "created": created, "format": project.config.format})
    elif created:
        out(f"Initialized tally store in {project.store_dir}")
    else:
        err(f"tally store already exists in {project.store_dir}")


@app.command(epilog=EXIT_CODES)
def add(paths: List[str] = typer.Argument(..., help="Files or directories to store."),
        json_out: bool = JSON) -> None:
    """Store data and write PATH.tally pointer files to commit in its place.

    PATH itself is added to .gitignore. Unchanged files are not read again.
    """
    from cas import tracking
    from cas.project import open_project

    project = open_project()
    with progress("hashing") as cb:
        added = tracking.add(project, paths, progress=cb)
    if json_out:
        emit_json([{"path": a.path, "oid": a.pointer.oid, "kind": "dir" if a.pointer.is_dir else "file",
                    "size": a.pointer.size, "files": a.pointer.files, "hashed": a.hashed,
                    "changed": a.changed} for a in added])
        return
    for a in added:
        what = f"{a.pointer.files} files, " if a.pointer.is_dir else ""
        verb = "added" if a.changed else "unchanged"
        out(f"{verb} {a.path} ({what}{human_bytes(a.pointer.size)}) -> {a.path}.tally")
    if any(a.changed for a in added):
        err("To track the changes with Git, run:\n  git add " +
            " ".join(f"{a.path}.tally" for a in added if a.changed) + " .gitignore")


@app.command(epilog=EXIT_CODES)
def status(paths: Optional[List[str]] = typer.Argument(None, help="Tracked paths (default: all)."),
           json_out: bool = JSON) -> None:
    """Compare tracked data with its pointers: modified, missing, new files.

    Exits 0 whatever the state (use --json to script on it).
    """
    from cas import tracking
    from cas.project import open_project

    project = open_project()
    result = tracking.status(project, paths)
    if json_out:
        emit_json([s.to_json() for s in result])
        return
    changed = [s for s in result if s.state != "unchanged"]
    if not result:
        out("No tracked data (use `tally add PATH`).")
        return
    if not changed:
        out("Data and pointers are up to date.")
        return
    for s in changed:
        out(f"{s.state}: {s.path}")
        for label, items in (("new", s.added), ("modified", s.modified), ("deleted", s.deleted)):
            for item in items[:50]:
                out(f"    {label}: {s.path}/{item}")
            if len(items) > 50:
                out(f"    ... and {len(items) - 50} more {label}")


@app.command(epilog=EXIT_CODES)
def checkout(paths: Optional[List[str]] = typer.Argument(None, help="Tracked paths (default: all)."),
             force: bool = typer.Option(False, "--force", "-f",
                                        help="Overwrite modified files that are not in the store."),
             json_out: bool = JSON) -> None:
    """Materialize tracked data from the store, as after `git checkout`.

    Only files that differ are touched. Refuses (exit 4) to overwrite changes that are
    not in the store, naming them, unless --force.
    """
    from cas import tracking
    from cas.project import open_project

    project = open_project()
    with progress("checking out") as cb:
        reports = tracking.checkout(project, paths, force=force, progress=cb)
    if json_out:
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


@app.command(epilog=EXIT_CODES)
def unprotect(paths: List[str] = typer.Argument(..., help="Linked files or directories.")) -> None:
    """Replace hardlinked/symlinked (read-only) files with writable copies, to edit them."""
    from cas import tracking
    from cas.project import open_project

    changed = tracking.unprotect(open_project(), paths)
    for c in changed:
        out(f"unprotected {c}")
    if not changed:
        err("nothing to unprotect: the files are already independent copies")
