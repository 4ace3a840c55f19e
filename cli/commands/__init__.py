"""Every `tally` command: one module each (a group's commands in one module).

Each module declares its command as `COMMAND` (a cli.spec.Command) or its group as
`GROUP` (a cli.spec.Group), next to the body that runs it. This index names them in
the order `tally --help` lists them, and loads one without importing the others (so
`tally run` imports only cli/commands/run.py).
"""

from __future__ import annotations

from ..spec import Command, Group

# The names users type, each its module's name here, in help order.
NAMES = ("init", "add", "status", "checkout", "unprotect", "push", "pull", "fetch", "remote", "run", "save", "show", "diff",
         "plots", "ui", "logs", "restore", "promote", "remove", "rename", "queue", "gc", "fsck", "config")


def load(name: str) -> Command | Group | None:
    """The declaration of the command or group called `name`, or None."""
    if name not in NAMES:
        return None
    # __import__ rather than importlib.import_module: the importlib package is one
    # more import on the start-up of every fast command.
    m = __import__(f"{__name__}.{name}", fromlist=["COMMAND"])
    return getattr(m, "COMMAND", None) or m.GROUP


def every() -> list[Command | Group]:
    """Every declaration, in help order."""
    return [load(name) for name in NAMES]  # type: ignore[misc]


def commands() -> list[Command]:
    """Every command, a group's included (`queue status`, ...), in help order."""
    out: list[Command] = []
    for d in every():
        out.extend(d.commands if isinstance(d, Group) else (d,))
    return out
