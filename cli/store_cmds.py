"""Store commands: fsck, config."""

from __future__ import annotations

from typing import Optional

import typer

from .main import app
from .output import EXIT_CODES, emit_json, err, out, progress


@app.command(epilog=EXIT_CODES)
def fsck(repair: bool = typer.Option(False, "--repair",
                                     help="Delete corrupt objects and name what is now incomplete."),
         json_out: bool = typer.Option(False, "--json", help="Machine-readable report.")) -> None:
    """Re-hash every object, decode every tree, resolve every pointer and ref.

    Exits 5 when anything is wrong, listing each problem by kind.
    """
    from cas.core.errors import Corruption
    from cas.gc.fsck import fsck as run_fsck
    from cas.workspace.project import open_project

    with progress("verifying") as cb:
        report = run_fsck(open_project(), repair=repair, progress=cb)
    if json_out:
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
                         hint=None if repair else "`tally fsck --repair` removes corrupt objects")


@app.command(epilog=EXIT_CODES)
def config(key: Optional[str] = typer.Argument(None, help="Dotted key, e.g. cache.type."),
           value: Optional[str] = typer.Argument(None, help="New value (omit to read)."),
           unset: bool = typer.Option(False, "--unset", help="Remove the key (back to its default)."),
           json_out: bool = typer.Option(False, "--json", help="Machine-readable output.")) -> None:
    """Read or set store settings in .tally/config (comments are kept).

    Keys: cache.type (link order among reflink, hardlink, symlink, copy),
    cache.compression (auto|zstd|none), cache.zstd_level, cache.fsync (batch|each|off),
    gc.* retention defaults, queue.workers.
    """
    from cas.store import config as config_mod
    from cas.workspace.project import open_project

    project = open_project()
    path = project.store_dir / "config"
    if key is None:
        values = {k: project.config.get(k) for k in sorted(config_mod.SCHEMA)}
        values = {k: ",".join(v) if isinstance(v, tuple) else v for k, v in values.items()}
        if json_out:
            emit_json(values)
        else:
            for k, v in values.items():
                out(f"{k} = {v}")
        return
    if unset:
        config_mod.set_value(path, key, None)
        return
    if value is None:
        v = project.config.get(key)
        v = ",".join(v) if isinstance(v, tuple) else v
        emit_json({key: v}) if json_out else out(str(v))
        return
    config_mod.set_value(path, key, value)
