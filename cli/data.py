"""Data commands: init, add, status, checkout, unprotect."""

from __future__ import annotations

from typing import List, Optional

import typer

from . import datacmd
from .main import app
from .output import EXIT_CODES, emit_json, err, out

JSON = typer.Option(False, "--json", help="Machine-readable output on stdout.")


@app.command(epilog=EXIT_CODES)
def init(json_out: bool = JSON) -> None:
    """Create the .tally/ store at the top of the current Git work tree."""
    from cas.workspace.project import init_project

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
    datacmd.add(paths, json_out)


@app.command(epilog=EXIT_CODES)
def status(paths: Optional[List[str]] = typer.Argument(None, help="Tracked paths (default: all)."),
           json_out: bool = JSON) -> None:
    """Compare tracked data with its pointers: modified, missing, new files.

    Exits 0 whatever the state (use --json to script on it).
    """
    datacmd.status(paths, json_out)


@app.command(epilog=EXIT_CODES)
def checkout(paths: Optional[List[str]] = typer.Argument(None, help="Tracked paths (default: all)."),
             force: bool = typer.Option(False, "--force", "-f",
                                        help="Overwrite modified files that are not in the store."),
             json_out: bool = JSON) -> None:
    """Materialize tracked data from the store, as after `git checkout`.

    Only files that differ are touched. Refuses (exit 4) to overwrite changes that are
    not in the store, naming them, unless --force.
    """
    datacmd.checkout(paths, force, json_out)


@app.command(epilog=EXIT_CODES)
def unprotect(paths: List[str] = typer.Argument(..., help="Linked files or directories.")) -> None:
    """Replace hardlinked/symlinked (read-only) files with writable copies, to edit them."""
    from cas.workspace import tracking
    from cas.workspace.project import open_project

    changed = tracking.unprotect(open_project(), paths)
    for c in changed:
        out(f"unprotected {c}")
    if not changed:
        err("nothing to unprotect: the files are already independent copies")
