"""The `tally` executable: one funnel from every failure to a message and an exit code.

Typer-free on purpose. The commands whose start-up users pay on every call parse
their own arguments (`run`: each experiment's overhead; `show`: the listing loop;
`restore`: a result back from the cache; `gc`: cron's every night; `add`, `status`, `checkout`: the data loop)
and are dispatched here without importing Typer, which costs ~60 ms. Everything
else, and every `--help`, goes through the Typer app in cli/main.py.
"""

from __future__ import annotations

import os
import sys
from typing import Callable

VERSION = "0.1.0"


def _fast(command: str) -> Callable[[list[str]], None] | None:
    if command in ("add", "status", "checkout"):
        from . import datacmd
        return getattr(datacmd, f"main_{command}")
    if command == "run":
        from .runcmd import main
        return main
    if command == "show":
        from .showcmd import main
        return main
    if command == "restore":
        from .restorecmd import main
        return main
    if command == "gc":
        from .gcrun import main
        return main
    return None


def run(argv: list[str] | None = None) -> int:
    """Run the CLI; map every failure to a message on stderr and a specific exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args == ["--version"]:  # scripts probing us pay for nothing
        sys.stdout.write(f"tally {VERSION}\n")
        return 0
    debug = os.environ.get("TALLY_DEBUG") == "1"
    if args[:1] == ["--debug"]:
        debug = True
        args = args[1:]
        os.environ["TALLY_DEBUG"] = "1"
    debug = debug or "--debug" in args
    fast = None
    if args and not ({"-h", "--help"} & set(args[: args.index("--") if "--" in args else None])):
        fast = _fast(args[0])

    from cas.core.errors import TallyError

    try:
        if fast is not None:
            fast(args[1:])
            return 0
        return _typer_app(args)
    except TallyError as exc:
        _report(exc, debug)
        return exc.exit_code
    except KeyboardInterrupt:
        sys.stderr.write("tally: interrupted\n")
        return 130
    except BrokenPipeError:
        return _pipe_closed()
    except OSError as exc:
        from cas.core.errors import from_os_error
        te = from_os_error(exc, doing="running")
        _report(te, debug, cause=exc)
        return te.exit_code


def _typer_app(args: list[str]) -> int:
    """Every other command, through Typer; its own exceptions become exit codes here."""
    import typer

    try:  # Typer >= 0.26 vendors click as typer._click
        from typer._click.exceptions import ClickException
    except ImportError:  # pragma: no cover - older Typer with click installed
        from click import ClickException

    from .main import app, register
    register()
    try:
        rc = app(args=args, prog_name="tally", standalone_mode=False)
        return rc if isinstance(rc, int) else 0
    except SystemExit:
        # Click turns EPIPE into sys.exit(1) even outside standalone mode, after
        # wrapping stdout in its PacifyFlushWrapper: that is a closed pipe, not a failure.
        if type(sys.stdout).__name__ == "PacifyFlushWrapper":
            return _pipe_closed()
        raise
    except typer.Exit as exc:
        return exc.exit_code
    except typer.Abort:
        sys.stderr.write("tally: interrupted\n")
        return 130
    except ClickException as exc:
        exc.show(file=sys.stderr)
        return 2


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


def _report(exc: BaseException, debug: bool, cause: BaseException | None = None) -> None:
    from cas.core.errors import TallyError

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
