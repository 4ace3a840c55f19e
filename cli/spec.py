"""How a command is declared: its arguments, options, help and exit codes, once.

git's parse-options.h in Python. Each module in cli/commands/ declares a `Command`
(or a `Group` of them): a table of `Arg`s and `Opt`s with their help, the exit codes
it can end with, and the body that runs it. Everything else is built from that table:

- the Typer app (cli/main.py): `tally --help`, every command's `--help`, and every
  command run through Typer;
- the fast parser (cli/parse.py), with which cli/entry.py runs the commands whose
  start-up users pay on every call (`Command.fast`) without importing Typer;
- `finish` below, which both front ends call to turn the strings they parsed into
  the values a body receives, so a value means the same whichever parsed it.

tests/cli/test_cli_agreement.py proves the two parsers accept the same argument
vectors with the same meanings, and that every flag means what README.md's flag
table says, in every command.

Typer-free, argparse-free and dataclass-free: `tally run` imports this module, and
its start-up is part of every experiment's overhead.
"""

from __future__ import annotations

from collections import namedtuple
from types import SimpleNamespace
from typing import Any

# Option kinds.
FLAG = "flag"  # no value: True when given (with `off` names: True/False, None when absent)
ONE = "one"    # one value; given again, the last one wins
MANY = "many"  # one value per use, every use kept in order (repeatable)

# Argument arities.
REQUIRED = "required"  # exactly one
OPTIONAL = "optional"  # zero or one
SOME = "some"          # one or more
ANY = "any"            # zero or more


# -- value types: str -> value, or ValueError saying why not ----------------------------

def text(value: str) -> str:
    """Any string, as given."""
    return value


def count(value: str) -> int:
    """A whole number >= 0 (`--num 0` is allowed and means none)."""
    try:
        n = int(value)
    except ValueError:
        raise ValueError(f"{value!r} is not a whole number") from None
    if n < 0:
        raise ValueError(f"{value!r} is negative")
    return n


def positive(value: str) -> int:
    """A whole number >= 1."""
    n = count(value)
    if n < 1:
        raise ValueError(f"{value!r} is not at least 1")
    return n


def integer(value: str) -> int:
    """Any whole number."""
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"{value!r} is not a whole number") from None


def seconds(value: str) -> float:
    """A number of seconds (fractions allowed, as `--wait 0.5`)."""
    try:
        return float(value)
    except ValueError:
        raise ValueError(f"{value!r} is not a number of seconds") from None


def sort_key(value: str) -> str:
    """`KEY[:asc|:desc]` (`:max`/`:min` are aliases): a column and the end that comes
    first. Passed on as written: cas.experiments.table.split_sort is the one reader
    (show, promote, remove and gc's retention all go through it)."""
    return value


# -- the declaration vocabulary ------------------------------------------------------
# Plain namedtuples (immutable, comparable, `_replace`-able): typing.NamedTuple costs
# ~0.7 ms a class to define, which every `tally run` would pay; collections' ~0.05 ms.

class Opt(namedtuple("Opt", "names dest kind help metavar type default off",
                     defaults=(ONE, "", "", text, None, ()))):
    """One option of a command.

    names: tuple[str, ...]    what users type: short ones (`-n`) and long ones
                              (`--name`); the first long one is canonical, others
                              are kept aliases
    dest: str                 the attribute the body reads
    kind: str                 FLAG, ONE or MANY
    help: str                 one or two sentences for `--help`
    metavar: str              the value's name in help (`N`, `PATH`)
    type: str -> value        converts each value (ONE, MANY); raises ValueError
                              saying why not
    default: Any              the value when absent (ONE only: a FLAG is False, or
                              None with `off` names; a MANY an empty list)
    off: tuple[str, ...]      a FLAG's names that set it False (`--keep-failed`)
    """

    __slots__ = ()

    @property
    def label(self) -> str:
        """How errors name the option: `'-n' / '--name'` (as Click does)."""
        return " / ".join(repr(n) for n in self.names + self.off)


class Arg(namedtuple("Arg", "dest metavar nargs help", defaults=(REQUIRED, ""))):
    """One positional argument.

    dest: str, metavar: str, nargs: REQUIRED, OPTIONAL, SOME or ANY (only the last
    argument may take several values), help: str.
    """

    __slots__ = ()


class Command(namedtuple("Command", "name help body args opts exits rest fast",
                         defaults=((), (), (), None, False))):
    """One command: its table, its help, its exit codes and its body.

    name: str                 as typed: `show`, `queue logs`
    help: str                 the text of `tally NAME --help`; its first line is the
                              summary in `tally --help`
    body(args) -> int|None    runs the command: `args` has one attribute per dest;
                              returns an exit code (None: 0) and raises TallyError
                              for every failure
    args: tuple[Arg, ...], opts: tuple[Opt, ...]
    exits: ((code, meaning), ...)   exit codes beyond COMMON_EXITS (or saying more
                              about one), printed in its help
    rest: str | None          the attribute receiving what follows the first `--`
                              (None without one)
    fast: bool                cli/entry.py parses it with cli/parse.py and runs it
                              without Typer
    """

    __slots__ = ()


class Group(namedtuple("Group", "name help commands")):
    """Commands under one name (`tally queue status`): name: str, help: str,
    commands: tuple[Command, ...], each named the group's name, a space, its own."""

    __slots__ = ()


# Every command ends with these; Command.exits adds its own (or says more about one).
COMMON_EXITS = (
    (0, "success"),
    (1, "unexpected failure (rerun with --debug for a traceback)"),
    (2, "bad usage"),
    (6, "store unusable: none here, a newer format, not a Git repo, disk full, read-only"),
    (130, "interrupted"),
)

# Options every command accepts, besides its own (README.md's flag table lists them).
DEBUG = Opt(("--debug",), "debug", FLAG, "Print a traceback with an unexpected error.")
HELP = Opt(("-h", "--help"), "help", FLAG, "Show this help and exit.")


def options(command: Command) -> tuple[Opt, ...]:
    """The options `command` accepts: its own, then --debug (--help is handled by
    whichever front end shows help)."""
    return command.opts + (DEBUG,)


def exit_codes(command: Command) -> list[tuple[int, str]]:
    """COMMON_EXITS with the command's own exits added or overriding, by code."""
    codes = dict(COMMON_EXITS)
    codes.update(command.exits)
    return sorted(codes.items())


def epilog(command: Command, width: int = 78) -> str:
    """The exit-code block at the end of a command's help (restic documents them there),
    wrapped to `width` columns and marked (\\b) so Click does not re-wrap it."""
    from textwrap import wrap

    lines = ["Exit codes:"]
    for code, meaning in exit_codes(command):
        lines += wrap(meaning, width - 2, initial_indent=f"  {code:<3}  ", subsequent_indent=" " * 7)
    return "\b\n" + "\n".join(lines)


def fail(command: Command, message: str) -> Exception:
    """The UsageError (exit 2) for a bad command line, naming the command."""
    from cas.core.errors import UsageError

    return UsageError(f"tally {command.name}: {message}", hint=f"see `tally {command.name} --help`")


def finish(command: Command, raw: dict[str, Any], rest: list[str] | None = None) -> SimpleNamespace:
    """The namespace a body receives, from the strings a front end parsed.

    `raw` maps each dest to what the parser found: a FLAG's True/False/None, a ONE's
    last string or None, a MANY's strings (None or empty: none), an argument's
    string(s) or None. Values are converted by their declared type, in declaration
    order (options, then arguments); absent ones get their defaults.

    Raises:
        UsageError: a value its type refuses (exit 2).
    """
    ns: dict[str, Any] = {}
    for opt in options(command):
        value = raw.get(opt.dest)
        if opt.kind == FLAG:
            ns[opt.dest] = (None if opt.off else False) if value is None else bool(value)
        elif opt.kind == ONE:
            ns[opt.dest] = opt.default if value is None else _convert(command, opt, value)
        else:
            ns[opt.dest] = [_convert(command, opt, v) for v in value or ()]
    for arg in command.args:
        value = raw.get(arg.dest)
        if arg.nargs in (SOME, ANY):
            ns[arg.dest] = list(value or ())
        else:
            ns[arg.dest] = value
    if command.rest is not None:
        ns[command.rest] = None if rest is None else list(rest)
    return SimpleNamespace(**ns)


def _convert(command: Command, opt: Opt, value: str) -> Any:
    if opt.type is text:
        return value
    try:
        return opt.type(value)
    except ValueError as exc:
        raise fail(command, f"Invalid value for {opt.label}: {exc}") from None
