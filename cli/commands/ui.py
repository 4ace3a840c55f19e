"""`tally ui`: the local web page over the experiments (cas/ui/app.py `serve`)."""

from __future__ import annotations

from ..spec import FLAG, ONE, Command, Opt

DEFAULT_HOST = "127.0.0.1"  # cas.ui.app.DEFAULT_HOST, without importing Starlette for --help


def port(value: str) -> int:
    """A TCP port: 0 to 65535 (0: a free one)."""
    try:
        n = int(value)
    except ValueError:
        raise ValueError(f"{value!r} is not a port number") from None
    if not 0 <= n <= 65535:
        raise ValueError(f"{value!r} is not between 0 and 65535")
    return n


def body(a) -> None:
    from cas.core.errors import UsageError

    try:
        from cas.ui import app
    except ImportError as exc:  # the optional `ui` extra: starlette and uvicorn
        if exc.name not in ("starlette", "uvicorn") and not (exc.name or "").startswith(
                ("starlette.", "uvicorn.")):
            raise
        raise UsageError(f"tally ui needs {exc.name.split('.')[0]}, which is not installed",
                         hint="pip install 'tally[ui]'") from None
    from cas.workspace.project import open_project

    # The URL (with its token) and any warning go to stderr, as Jupyter prints them: the
    # server holds the terminal, and stdout stays free for nothing.
    app.serve(open_project(), host=a.host, port=a.port, open_browser=not a.no_browser)


COMMAND = Command(
    "ui",
    "Serve a local web page to compare experiments: the table, diffs, plots, live runs.\n\n"
    "Listens on 127.0.0.1 and a free port unless told otherwise, and prints its address "
    "on stderr with a random token that every request needs; opens it in the web browser "
    "unless --no-browser. Runs until Ctrl-C.",
    body,
    opts=(Opt(("--port",), "port", ONE, "The port to listen on (default: a free one).",
              metavar="N", type=port, default=0),
          Opt(("--host",), "host", ONE,
              "The address to listen on. Anything but a loopback address lets other "
              "machines reach the page (with the token): a warning says so.",
              metavar="HOST", default=DEFAULT_HOST),
          Opt(("--no-browser",), "no_browser", FLAG, "Print the address; do not open a browser.")),
    exits=((2, "bad usage: the port is in use or the address is not this machine's; "
               "starlette or uvicorn is not installed"),
           (130, "stopped with Ctrl-C")))
