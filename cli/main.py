"""Entry point: the Typer app and the one funnel that turns errors into exit codes.

Every command module registers itself on `app`; cas is imported inside commands so
`tally --help` does not pay for zstandard, sqlite3 or msgpack.
"""

from __future__ import annotations

import os
import sys

import typer

from .output import EXIT_CODES

VERSION = "0.1.0"

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


def _register() -> None:
    # Each module adds its commands to `app` at import; the order is the help order.
    from . import data, store_cmds  # noqa: F401
    for optional in ("experiments", "books", "queue_cmds", "gc_cmd"):
        try:
            __import__(f"cli.{optional}")
        except ModuleNotFoundError as exc:
            if exc.name != f"cli.{optional}":
                raise


def run(argv: list[str] | None = None) -> int:
    """Run the CLI; map every failure to a message on stderr and a specific exit code."""
    args = sys.argv[1:] if argv is None else argv
    if args == ["--version"]:  # fast path: no Typer import cost for scripts probing us
        sys.stdout.write(f"tally {VERSION}\n")
        return 0
    debug = "--debug" in args or os.environ.get("TALLY_DEBUG") == "1"
    _register()
    try:  # Typer >= 0.26 vendors click as typer._click
        from typer._click.exceptions import ClickException
    except ImportError:  # pragma: no cover - older Typer with click installed
        from click import ClickException

    from cas.errors import TallyError

    try:
        rc = app(args=args, prog_name="tally", standalone_mode=False)
        return rc if isinstance(rc, int) else 0
    except TallyError as exc:
        _report(exc, debug)
        return exc.exit_code
    except typer.Exit as exc:
        return exc.exit_code
    except typer.Abort:
        sys.stderr.write("tally: interrupted\n")
        return 130
    except ClickException as exc:
        exc.show(file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        sys.stderr.write("tally: interrupted\n")
        return 130
    except BrokenPipeError:
        # The reader went away (`tally show | head`): not an error worth a message.
        try:
            sys.stdout = open(os.devnull, "w")
        except OSError:
            pass
        return 0
    except OSError as exc:
        from cas.errors import from_os_error
        te = from_os_error(exc, doing="running")
        _report(te, debug, cause=exc)
        return te.exit_code


def _report(exc: BaseException, debug: bool, cause: BaseException | None = None) -> None:
    from cas.errors import TallyError

    if debug:
        import traceback
        traceback.print_exception(cause or exc, file=sys.stderr)
    if isinstance(exc, TallyError):
        sys.stderr.write(f"tally: error: {exc.message}\n")
        if exc.path and exc.path not in exc.message:
            sys.stderr.write(f"  path: {exc.path}\n")
        if exc.hint:
            sys.stderr.write(f"  hint: {exc.hint}\n")


def entry() -> None:
    """console_scripts entry."""
    sys.exit(run())


if __name__ == "__main__":
    entry()
