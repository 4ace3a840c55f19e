"""The data commands' bodies, Typer-free: `add`, `status` and `checkout` run on every
iteration of a user's loop, so cli/entry.py dispatches them here, parsed by hand, and
never imports Typer (~60 ms). cli/data.py registers the same bodies with Typer for
`--help` and for in-process callers.
"""

from __future__ import annotations

from .output import emit_json, err, human_bytes, out, progress


def add(paths: list[str], json_out: bool = False) -> None:
    from cas.workspace import tracking
    from cas.workspace.project import open_project

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


def status(paths: list[str] | None, json_out: bool = False) -> None:
    from cas.workspace import tracking
    from cas.workspace.project import open_project

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


def checkout(paths: list[str] | None, force: bool = False, json_out: bool = False) -> None:
    from cas.workspace import tracking
    from cas.workspace.project import open_project

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


def _parse(prog: str, args: list[str], flags: dict[str, str], *,
           need_paths: bool) -> tuple[set[str], list[str]]:
    """(flags given, by their long name; paths) of `args`; `--` ends the options.

    Hand-rolled rather than argparse: building an ArgumentParser imports shutil, bz2,
    lzma and gettext (~8 ms), on the commands a user runs in every loop. Errors read
    like argparse's and go through the one funnel (UsageError, exit 2).
    """
    seen: set[str] = set()
    paths: list[str] = []
    options = True
    for a in args:
        if options and a == "--":
            options = False
        elif options and a.startswith("-") and a != "-":
            if a not in flags:
                raise _usage(prog, f"unrecognized arguments: {a}")
            seen.add(flags[a])
        else:
            paths.append(a)
    if need_paths and not paths:
        raise _usage(prog, "the following arguments are required: paths")
    return seen, paths


def _usage(prog: str, message: str):
    from cas.core.errors import UsageError

    return UsageError(f"tally {prog}: {message}", hint=f"see `tally {prog} --help`")


def main_add(args: list[str]) -> None:
    seen, paths = _parse("add", args, {"--json": "json"}, need_paths=True)
    add(paths, "json" in seen)


def main_status(args: list[str]) -> None:
    seen, paths = _parse("status", args, {"--json": "json"}, need_paths=False)
    status(paths or None, "json" in seen)


def main_checkout(args: list[str]) -> None:
    seen, paths = _parse("checkout", args, {"--json": "json", "-f": "force", "--force": "force"},
                         need_paths=False)
    checkout(paths or None, "force" in seen, "json" in seen)
