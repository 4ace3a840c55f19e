"""The `tally` executable: every command line in, every failure out through one funnel.

`run(argv)` picks the front end: a command declared `fast` (cli/commands/, e.g. run,
show, status) is parsed by cli/parse.py and its body called without importing Typer
(~60 ms; run's start-up is part of every experiment's overhead); everything else, and
every `--help`, goes through the Typer app built from the same declarations
(cli/main.py). Whatever happens then leaves through `_failed`:

    TallyError            its message (and path, hint) on stderr, its exit code
    a command-line error  the same, exit 2 (Typer's are reworded to match the fast path)
    KeyboardInterrupt     "tally: interrupted", 130
    closed stdout (EPIPE) silence, 0 (`tally show | head` is not a failure)
    OSError               as the TallyError cas.core.errors.from_os_error makes of it
    anything else         one line naming it, exit 1

A traceback is printed only with `--debug` (or TALLY_DEBUG=1).
"""

from __future__ import annotations

import os
import sys

VERSION = "0.1.0"


def run(argv: list[str] | None = None) -> int:
    """Run the CLI on `argv` (default: sys.argv[1:]); return the exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args == ["--version"]:  # scripts probing us pay for nothing
        sys.stdout.write(f"tally {VERSION}\n")
        return 0
    before_rest = args[: args.index("--")] if "--" in args else args
    debug = os.environ.get("TALLY_DEBUG") == "1" or "--debug" in before_rest
    if args[:1] == ["--debug"]:
        args = args[1:]
    try:
        return _dispatch(args)
    except Exception as exc:  # noqa: BLE001 - the funnel: every failure gets a message and a code
        return _failed(exc, debug)
    except KeyboardInterrupt:
        sys.stderr.write("tally: interrupted\n")
        return 130


def _dispatch(args: list[str]) -> int:
    from .commands import load
    from .spec import Command

    decl = load(args[0]) if args else None
    if isinstance(decl, Command) and decl.fast:
        from .parse import HelpRequested, parse

        try:
            parsed = parse(decl, args[1:])
        except HelpRequested:
            return _typer(args)
        return decl.body(parsed) or 0
    return _typer(args)


def _typer(args: list[str]) -> int:
    """The Typer app on `args`; Click's own outcomes become exit codes here."""
    import typer

    from .main import build, command_name, command_path, invoke

    try:
        name = command_name(args)
        rc = invoke(build(only=name) if name else build(listing=True), args)
        return rc if isinstance(rc, int) else 0
    except SystemExit:
        # Click turns EPIPE into sys.exit(1) even outside standalone mode, after
        # wrapping stdout in its PacifyFlushWrapper: that is a closed pipe, not a failure.
        if type(sys.stdout).__name__ == "PacifyFlushWrapper":
            return _pipe_closed()
        raise
    except typer.Exit as exc:
        return exc.exit_code
    except typer.Abort:  # Click's word for Ctrl-C
        raise KeyboardInterrupt from None
    except typer.TyperException as exc:  # a Click usage error: the fast path's message
        from cas.core.errors import UsageError

        if exc.exit_code != 2:
            raise
        if type(exc).__name__ == "NoArgsIsHelpError":  # `tally`, `tally queue`: the help, exit 2
            sys.stderr.write(exc.format_message() + "\n")
            return 2
        ctx = getattr(exc, "ctx", None)
        where = ctx.command_path if ctx is not None else command_path(args)
        raise UsageError(f"{where}: {exc.format_message()}", hint=f"see `{where} --help`") from None


def _failed(exc: Exception, debug: bool) -> int:
    """Report `exc` on stderr; return its exit code (see the module docstring)."""
    from cas.core.errors import TallyError, from_os_error

    if isinstance(exc, BrokenPipeError):
        return _pipe_closed()
    if isinstance(exc, TallyError):
        error = exc
    elif isinstance(exc, OSError):
        error = from_os_error(exc, doing="running")
    else:
        detail = str(exc).strip().splitlines()
        error = TallyError(f"unexpected {type(exc).__name__}" + (f": {detail[0]}" if detail else ""),
                           hint=None if debug else "this is a bug in tally; rerun with --debug "
                                                   "for a traceback to report")
    if debug:
        import traceback
        traceback.print_exception(exc, file=sys.stderr)
    sys.stderr.write(f"tally: error: {error.message}\n")
    if error.path and error.path not in error.message:
        sys.stderr.write(f"  path: {error.path}\n")
    if error.hint:
        sys.stderr.write(f"  hint: {error.hint}\n")
    return error.exit_code


def _pipe_closed() -> int:
    """The reader went away (`tally show | head`): success, and silence from here on.

    fd 1 is pointed at /dev/null so the interpreter's final flush cannot raise again.
    """
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno() if hasattr(sys.stdout, "fileno") else 1)
        os.close(devnull)
    except (OSError, ValueError):
        pass
    return 0


def entry() -> None:
    """console_scripts entry."""
    code = run()
    if sys.argv[1:2] == ["run"]:
        _exit_now(code)
    sys.exit(code)


def _exit_now(code: int) -> None:
    """End `tally run` without the interpreter's teardown.

    By now everything a run writes is written (and what must be durable is fsynced),
    every file it opened is closed, its locks are released and its temp files removed;
    only the stat cache's SQLite connection is still open. Closing it runs a WAL
    checkpoint (two fdatasyncs) and deletes the WAL: with the module teardown, 10-30 ms
    measured at the end of every run. Skipped, the WAL stays and the next connection
    uses it (or checkpoints it), exactly as after a crash, which SQLite's WAL is made
    for; committed rows are never lost this way, only an uncommitted transaction,
    which close would roll back anyway.
    """
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except (OSError, ValueError):  # a closed pipe (`| head`): nothing more to say
        pass
    os._exit(code)
