"""Experiment commands (run side): run, save."""

from __future__ import annotations

from typing import Optional

import typer

from .main import app
from . import runcmd
from .output import EXIT_CODES
from .runcmd import RUN_HELP, render

JSON = typer.Option(False, "--json", help="Machine-readable output on stdout.")


# The arguments are parsed with argparse in cli/runcmd.py, not Typer: Typer coerces
# every non-bool parameter through pydantic, whose import alone costs ~100 ms, and
# `tally run` must add at most 0.1 s to the command it runs. cli/entry.py calls
# runcmd directly, without importing Typer at all.
@app.command(epilog=EXIT_CODES, help=RUN_HELP, add_help_option=True,
             context_settings={"ignore_unknown_options": True, "allow_extra_args": True,
                               "allow_interspersed_args": False})
def run(ctx: typer.Context) -> None:
    runcmd.main(_with_dashdash(list(ctx.args)))


def _with_dashdash(args: list[str]) -> list[str]:
    """Put back the `--` click swallows when it comes first (`tally run -- CMD`)."""
    import sys

    raw = sys.argv[1:]
    if "--" in args or "--" not in raw:
        return args
    tail = raw[raw.index("--") + 1:]
    if tail and args[len(args) - len(tail):] == tail:
        return args[:len(args) - len(tail)] + ["--"] + tail
    return args


@app.command(epilog=EXIT_CODES)
def save(
    name: Optional[str] = typer.Option(None, "-n", "--name", help="Experiment name (default: generated)."),
    message: str = typer.Option("", "-m", "--message", help="A note stored with the experiment."),
    json_out: bool = JSON,
) -> None:
    """Record the workspace as an experiment without running anything."""
    from cas.experiments import runs as experiments
    from cas.workspace.project import open_project

    exp = experiments.save(open_project(), name=name, message=message)
    render(exp, json_out, "Saved")
