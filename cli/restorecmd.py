"""`tally restore`, Typer-free: bringing a result back should cost the link, not the CLI.

cli/entry.py dispatches here without importing Typer (~60-150 ms of the ~0.4 s a
1 GiB hardlinked restore took); cli/books.py registers the same options for
`tally restore --help` and renders through `render` below.
"""

from __future__ import annotations

from .output import emit_json, err, out


def render(r, json_out: bool) -> None:
    """What a restore did: data on stdout (or JSON), notes on stderr."""
    if json_out:
        emit_json(r.to_json())
        return
    what = f"{r.name}" + (f" at step {r.step}" if r.step is not None else "")
    if not r.written and not r.deleted:
        out(f"{what}: the workspace already matches ({r.unchanged} files)")
        return
    modes = ", ".join(f"{n} {m}" for m, n in sorted(r.modes.items()))
    if r.head is not None and r.head != r.baseline:
        err(f"note: {r.name} ran on {r.baseline[:7]}, HEAD is {r.head[:7]}: "
            "`git diff` now shows the experiment's files against HEAD")
    out(f"restored {what}: {len(r.written)} written" + (f" ({modes})" if modes else "")
        + f", {len(r.deleted)} deleted, {r.unchanged} unchanged")


def main(args: list[str]) -> None:
    """`tally restore NAME [--force] [--step K] [--json]`."""
    import argparse

    from cas.experiments import restore as restore_mod
    from cas.core.errors import UsageError
    from cas.workspace.project import open_project

    class Parser(argparse.ArgumentParser):
        def error(self, message: str):  # one error funnel: exit 2 via UsageError
            raise UsageError(f"tally restore: {message}", hint="see `tally restore --help`")

    p = Parser(prog="tally restore", add_help=False, allow_abbrev=False)
    p.add_argument("name")
    p.add_argument("-f", "--force", action="store_true")
    p.add_argument("--step", type=int, metavar="K")
    p.add_argument("--json", action="store_true")
    a = p.parse_args(args)
    r = restore_mod.restore(open_project(), a.name, force=a.force, step=a.step)
    render(r, a.json)
