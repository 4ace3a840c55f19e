"""The Typer app: every command registers itself on `app` (see register()).

The executable's funnel (errors to exit codes, and the Typer-free fast path for
`run` and `show`) is cli/entry.py. cas is imported inside commands so `tally --help`
does not pay for zstandard, sqlite3 or msgpack.
"""

from __future__ import annotations

import os
import sys

import typer

from .output import EXIT_CODES

from .entry import VERSION

app = typer.Typer(
    name="tally",
    help="Keep the books on data-science experiments: data, runs and results in a "
         "content-addressed store linked to Git.\n\n" + EXIT_CODES,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # Plain help: rich-formatted help costs ~110 ms of imports on every `--help`.
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _lean_flags() -> None:
    """Let an absent bool flag (--help, None) skip Typer's value coercion.

    Typer >= 0.2x coerces every parameter value through pydantic, even the None of a
    --help nobody passed; importing pydantic costs ~80 ms on every command, and
    `tally run` must add at most 0.1 s to the command it runs. A flag's None needs
    no coercion, so it goes straight to the flag's callback.
    """
    try:
        from typer.core import _TyperParameter
        original = _TyperParameter.process_value
    except (ImportError, AttributeError):  # another Typer: nothing to patch
        return

    def process_value(self, ctx, value):
        descriptor = getattr(self, "type_descriptor", None)
        if value is None and descriptor is not None and descriptor.annotation is bool \
                and not self.required:
            return self.callback(ctx, self, value) if self.callback is not None else value
        return original(self, ctx, value)

    _TyperParameter.process_value = process_value


_lean_flags()


def _version(value: bool) -> None:
    if value:
        sys.stdout.write(f"tally {VERSION}\n")
        raise typer.Exit()


@app.callback()
def main(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                 help="Print the version and exit."),
    debug: bool = typer.Option(False, "--debug", help="Show a traceback on errors."),
) -> None:
    """Global options."""
    if debug:
        os.environ["TALLY_DEBUG"] = "1"


def register() -> None:
    # Each module adds its commands to `app` at import; the order is the help order.
    from . import data, store_cmds  # noqa: F401
    for optional in ("experiments", "books", "queue_cmds", "gc_cmd"):
        try:
            __import__(f"cli.{optional}")
        except ModuleNotFoundError as exc:
            if exc.name != f"cli.{optional}":
                raise


# The funnel lives in cli/entry.py (Typer-free); these names stay importable from here.
from .entry import entry, run  # noqa: E402,F401


if __name__ == "__main__":
    entry()
